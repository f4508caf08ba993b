"""Milliseconds per ITPO inner step and per real step, DDPM against MeanFlow, eager against compiled.

    python benchmarks/world_model_speed.py --env-id hopper-medium-replay --particles 256
    python benchmarks/world_model_speed.py --particles 4096 --episodes 10 --compile-too   # on a GPU

Every variant runs inside the same ITPOAgent at the same H, M, E, N on the same real states; the
ratios printed at the end are the figures to read (absolute times depend on the machine and its load).
"""

import os
import sys
import time
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import itpo_eval  # noqa: E402
from common import make_env  # noqa: E402


@dataclass
class Args(itpo_eval.Args):
    repeats: int = 20
    """timed real steps per variant (after 3 warm-up steps, which also compile)"""
    world_models: tuple[Literal["ddpm", "meanflow"], ...] = ("ddpm", "meanflow")
    """the world models to time"""
    meanflow_checkpoint: str | None = None
    """default checkpoints/<env-id>/meanflow_seed<S>.pt"""
    compile_too: bool = False
    """also time each world model with --compile (the whole adaptation step compiled)"""


def time_agent(args: itpo_eval.Args, obs: np.ndarray, repeats: int) -> tuple[float, float]:
    """(seconds per inner step, seconds per real step) of one configuration."""
    actor, critic, world, reward, rebrac_args = itpo_eval.load_models(args)
    agent = itpo_eval.ITPOAgent(
        actor, critic, world, reward, args, rebrac_args["gamma"], reward_scale=rebrac_args["reward_scale"]
    )
    alive = np.ones(len(obs), bool)
    s0 = torch.as_tensor(obs, device=args.device)
    eps = torch.randn(len(obs), args.particles, args.horizon, *world.noise_shape, device=args.device)
    for _ in range(3):
        agent(obs, alive)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        itpo_eval.inner_step(agent.policy, agent.params, critic, world, reward, s0, eps, rebrac_args["gamma"])
    sync()
    inner = (time.perf_counter() - t0) / repeats
    t0 = time.perf_counter()
    for _ in range(repeats):
        agent(obs, alive)
    sync()
    return inner, (time.perf_counter() - t0) / repeats


def main(args: Args) -> dict:
    envs = [make_env(args.env_id) for _ in range(args.episodes)]
    obs = np.stack([env.reset(seed=args.eval_seed + i)[0] for i, env in enumerate(envs)]).astype(np.float32)
    results = {}
    for name in args.world_models:
        for compiled in (False, True) if args.compile_too else (args.compile,):
            run_args = replace(
                args,
                world_model=name,
                compile=compiled,
                dynamics_checkpoint=args.dynamics_checkpoint if name == "ddpm" else args.meanflow_checkpoint,
            )
            key = f"{name}{' compiled' if compiled else ''}"
            results[key] = time_agent(run_args, obs, args.repeats)
            print(
                f"{key:18s} H={args.horizon} M={args.particles} E={args.inner_steps} N={args.episodes}: "
                f"{results[key][0] * 1e3:8.1f} ms per inner step (eager), {results[key][1] * 1e3:8.1f} ms per real "
                f"step on {args.device}, {torch.get_num_threads()} threads"
            )
    if "ddpm" in results and "meanflow" in results:
        print(
            f"DDPM / MeanFlow: {results['ddpm'][0] / results['meanflow'][0]:.1f}x per inner step, "
            f"{results['ddpm'][1] / results['meanflow'][1]:.1f}x per real step"
        )
    for name in args.world_models:
        if f"{name} compiled" in results:
            print(f"{name}: eager / compiled real step {results[name][1] / results[f'{name} compiled'][1]:.2f}x")
    return results


if __name__ == "__main__":
    main(tyro.cli(Args))
