"""Seconds per ITPO inner step and per real step with the DDPM and the MeanFlow world model.

    python benchmarks/world_model_speed.py --env-id hopper-medium-replay --particles 256

Both world models run inside the same ITPOAgent at the same H, M, E, N on the same states; the ratio
DDPM / MeanFlow is the figure to read (absolute times depend on the machine and its load).
"""

import os
import sys
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import itpo_eval  # noqa: E402
from collect_dataset import make_env  # noqa: E402


@dataclass
class Args(itpo_eval.Args):
    repeats: int = 20
    """timed real steps per world model (after 2 warm-up steps)"""
    meanflow_checkpoint: str | None = None
    """default checkpoints/<env-id>/meanflow_seed<S>.pt"""


def time_agent(args: itpo_eval.Args, obs: np.ndarray) -> tuple[float, float]:
    actor, critic, world, reward, rebrac_args = itpo_eval.load_models(args)
    agent = itpo_eval.ITPOAgent(actor, critic, world, reward, args, rebrac_args["gamma"])
    alive = np.ones(len(obs), bool)
    policy = agent.policy
    s0 = torch.as_tensor(obs, device=args.device)
    eps = torch.randn(len(obs), args.particles, args.horizon, *world.noise_shape, device=args.device)
    for _ in range(2):
        agent(obs, alive)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        itpo_eval.inner_step(policy, agent.params, critic, world, reward, s0, eps, rebrac_args["gamma"], agent.rollout)
    sync()
    inner = (time.perf_counter() - t0) / args.repeats
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        agent(obs, alive)
    sync()
    return inner, (time.perf_counter() - t0) / args.repeats


def main(args: Args) -> None:
    envs = [make_env(args.env_id) for _ in range(args.episodes)]
    obs = np.stack([env.reset(seed=args.eval_seed + i)[0] for i, env in enumerate(envs)]).astype(np.float32)
    results = {}
    for name in ("ddpm", "meanflow"):
        run_args = replace(args, world_model=name,
                           dynamics_checkpoint=args.dynamics_checkpoint if name == "ddpm" else args.meanflow_checkpoint)
        results[name] = time_agent(run_args, obs)
        print(f"{name:9s} H={args.horizon} M={args.particles} E={args.inner_steps} N={args.episodes}: "
              f"{results[name][0] * 1e3:8.1f} ms per inner step, {results[name][1] * 1e3:8.1f} ms per real step "
              f"(N episodes adapted together) on {args.device}, {torch.get_num_threads()} threads")
    print(f"DDPM / MeanFlow: {results['ddpm'][0] / results['meanflow'][0]:.1f}x per inner step, "
          f"{results['ddpm'][1] / results['meanflow'][1]:.1f}x per real step")


if __name__ == "__main__":
    main(tyro.cli(Args))
