"""Milliseconds per ITPO inner step and per real step: DDPM against MeanFlow, by precision, by M, eager
against compiled.

    python benchmarks/world_model_speed.py --env-id hopper-medium-replay --particles 64 256
    python benchmarks/world_model_speed.py --particles 4096 --episodes 10 --compile-too   # on a GPU

Every variant runs inside the same ITPOAgent at the same H, E, N on the same real states; the ratios
printed at the end are the figures to read (absolute times depend on the machine; on a CPU they are the
process's CPU time, which other jobs on a shared machine do not inflate).
"""

import os
import sys
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import itpo_eval  # noqa: E402
from common import (  # noqa: E402
    Precision,
    checkpoint_path,
    device_name,
    make_env,
    native_bf16,
    parse_env_id,
    require,
    require_positive,
)


@dataclass
class Args:
    env_id: str = "hopper-medium-replay"
    """D4RL short name (its env gives the real states)"""
    seed: int = 0
    """seed of the checkpoints to load"""
    checkpoints: str = "checkpoints"
    """folder holding <env-id>/{rebrac,dynamics,reward,meanflow}_seed<S>.pt"""
    world_models: tuple[Literal["ddpm", "meanflow"], ...] = ("ddpm", "meanflow")
    """the world models to time"""
    precisions: tuple[Precision, ...] = ("fp32", "bf16")
    """the precisions to time (itpo_eval.py --precision)"""
    particles: tuple[int, ...] = (256,)
    """M values to time"""
    horizon: int = 5
    """H"""
    inner_steps: int = 1
    """E"""
    episodes: int = 10
    """N, episodes adapted at once (one real step advances all of them)"""
    eval_seed: int = 1000
    """the real states: env resets at seeds eval_seed .. eval_seed + N − 1"""
    repeats: int = 20
    """timed real steps per variant (after 3 warm-up steps, which also compile); a fifth of them for bf16
    on a device without bf16 units, where it is emulated and slow"""
    compile_too: bool = False
    """also time each variant with --compile (the whole adaptation step compiled)"""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    """torch device"""

    def __post_init__(self):
        parse_env_id(self.env_id)
        require_positive(self, "horizon", "inner_steps", "episodes", "repeats")
        require(all(m > 0 for m in self.particles), f"--particles must be positive, not {self.particles}")


def time_agent(args: itpo_eval.Args, obs: np.ndarray, repeats: int) -> tuple[float, float]:
    """(seconds per inner step, seconds per real step) of one configuration."""
    actor, critic, world, reward, rebrac_args = itpo_eval.load_models(args)
    gamma, reward_scale = rebrac_args["gamma"], rebrac_args["reward_scale"]
    agent = itpo_eval.ITPOAgent(actor, critic, world, reward, args, gamma, reward_scale=reward_scale)
    alive = np.ones(len(obs), bool)
    s0 = torch.as_tensor(obs, device=args.device)
    eps = torch.randn(len(obs), args.particles, args.horizon, *world.noise_shape, device=args.device)
    for _ in range(3):
        agent(obs, alive)
    on_gpu = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    # on a CPU, this process's CPU time: wall time on a shared machine counts the other jobs too
    clock = time.perf_counter if on_gpu else time.process_time
    sync()
    t0 = clock()
    for _ in range(repeats):  # the inner step alone, always eager
        itpo_eval.inner_step(
            agent.policy, agent.params, critic, world, reward, s0, eps, gamma, reward_scale, args.precision
        )
    sync()
    inner = (clock() - t0) / repeats
    t0 = clock()
    for _ in range(repeats):
        agent(obs, alive)
    sync()
    return inner, (clock() - t0) / repeats


def main(args: Args) -> dict:
    envs = [make_env(args.env_id) for _ in range(args.episodes)]
    obs = np.stack([env.reset(seed=args.eval_seed + i)[0] for i, env in enumerate(envs)]).astype(np.float32)
    slow_bf16 = not native_bf16(args.device)
    print(
        f"on {device_name(args.device)}, {torch.get_num_threads()} threads; H={args.horizon} E={args.inner_steps} "
        f"N={args.episodes}; {args.repeats} timed real steps per variant"
        + (f", {max(1, args.repeats // 5)} for bf16 (emulated on this device)" if slow_bf16 else "")
        + ("" if args.device.startswith("cuda") else "; times are this process's CPU time")
    )
    results = {}
    for name in args.world_models:
        stage = "dynamics" if name == "ddpm" else "meanflow"
        for m in args.particles:
            for precision in args.precisions:
                for compiled in (False, True) if args.compile_too else (False,):
                    run_args = itpo_eval.Args(
                        env_id=args.env_id,
                        seed=args.seed,
                        horizon=args.horizon,
                        particles=m,
                        inner_steps=args.inner_steps,
                        world_model=name,
                        episodes=args.episodes,
                        rebrac_checkpoint=checkpoint_path(args.env_id, "rebrac", args.seed, args.checkpoints),
                        dynamics_checkpoint=checkpoint_path(args.env_id, stage, args.seed, args.checkpoints),
                        reward_checkpoint=checkpoint_path(args.env_id, "reward", args.seed, args.checkpoints),
                        device=args.device,
                        compile=compiled,
                        precision=precision,
                    )
                    repeats = max(1, args.repeats // 5) if precision == "bf16" and slow_bf16 else args.repeats
                    key = (name, m, precision, compiled)
                    inner, real = results[key] = time_agent(run_args, obs, repeats)
                    print(
                        f"{name:8s} M={m:<5d} {precision} {'compiled' if compiled else 'eager   '}: "
                        f"{inner * 1e3:8.1f} ms per inner step (eager), {real * 1e3:8.1f} ms per real step, "
                        f"{real / args.episodes * 1e3:7.1f} ms per env step"
                    )
    print("ratios of the real step (same run):")
    for (name, m, precision, compiled), (_, real) in results.items():
        if precision != "fp32" and (name, m, "fp32", compiled) in results:
            base = results[(name, m, "fp32", compiled)][1]
            print(f"  {name} M={m} {'compiled' if compiled else 'eager'}: {precision} / fp32 time {real / base:.2f}x")
        if compiled:
            eager = results[(name, m, precision, False)][1]
            print(f"  {name} M={m} {precision}: eager / compiled time {eager / real:.2f}x")
        if name == "ddpm" and ("meanflow", m, precision, compiled) in results:
            ratio = real / results[("meanflow", m, precision, compiled)][1]
            print(f"  M={m} {precision} {'compiled' if compiled else 'eager'}: DDPM / MeanFlow time {ratio:.2f}x")
    return results


if __name__ == "__main__":
    main(tyro.cli(Args))
