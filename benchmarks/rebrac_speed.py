"""ReBRAC updates (and samples) per second by batch size and precision, eager against compiled.

    python benchmarks/rebrac_speed.py --env-id hopper-medium-replay --batch-sizes 256 1024 --updates 2000
    git show <commit>:rebrac.py > /tmp/rebrac_before.py   # then, before against after in one run:
    python benchmarks/rebrac_speed.py --batch-sizes 256 1024 --no-compile-too --baseline /tmp/rebrac_before.py

Runs `rebrac.train` once per variant on the same data, with evaluation and checkpoints pushed past the
end, and prints updates/s, samples/s (updates × batch) and their ratios, all measured in this one run (on a
CPU per second of the process's CPU time, which other jobs on the machine do not inflate). With
`--baseline`, that other version of `rebrac.py` trains the same seed interleaved with this one, `--repeats`
times each, and the final weights of the two are compared bit for bit. Each variant also reports its steady
state (from its first quarter's time stamp on, after compilation), and a compiled one after how many
updates its compilation is paid back. It also prints the update's matrix
FLOPs and this device's fp32 matrix-multiply rate: the fastest any implementation of the update could run.
The target on one H100: 1M updates in ≤ 10 minutes (≥ 1667 updates/s) at batch 1024.
"""

import importlib.util
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass

import torch
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import rebrac  # noqa: E402
from common import Precision, device_name, native_bf16, parse_env_id, require, require_positive  # noqa: E402


@dataclass
class Args:
    env_id: str = "hopper-medium-replay"
    """D4RL short name"""
    batch_sizes: tuple[int, ...] = (1024,)
    """batch sizes to time (1024: the paper's MuJoCo setting)"""
    precisions: tuple[Precision, ...] = ("fp32",)
    """precisions to time (rebrac.py --precision)"""
    updates: int = 2000
    """timed updates per variant (compilation is included: use enough updates to amortise it); a tenth
    of them for bf16 on a device without bf16 units, where it is emulated and slow"""
    compile_too: bool = True
    """also time the compiled update"""
    baseline: str | None = None
    """another version's rebrac.py (e.g. `git show <commit>:rebrac.py > f.py`), timed beside this one"""
    repeats: int = 1
    """runs of each variant, interleaved; the fastest counts (on a shared machine the others slow some)"""
    device: str = rebrac.Args.device
    """torch device"""
    profile: int = 0
    """also profile this many eager updates per batch size (torch.profiler) and print the top ops' self time"""

    def __post_init__(self):
        parse_env_id(self.env_id)
        require_positive(self, "updates", "repeats")
        require(self.profile >= 0, f"--profile must be ≥ 0 (0: no profile), not {self.profile}")
        require(all(b > 0 for b in self.batch_sizes), f"--batch-sizes must be positive, not {self.batch_sizes}")
        require(self.baseline is None or os.path.isfile(self.baseline), f"--baseline: no file {self.baseline}")


def load_baseline(path: str):
    """The other version of rebrac.py as a module of its own (it imports this checkout's `common`)."""
    spec = importlib.util.spec_from_file_location("rebrac_baseline", path)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look it up there
    spec.loader.exec_module(module)
    return module


def update_gflop(batch_size: int, device: str) -> float:
    """Matrix GFLOP of one update (the critic-only and actor steps averaged), from torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    obs_dim, act_dim, hidden = 11, 3, rebrac.Args.hidden_dim
    actor, critic = (
        rebrac.Actor(obs_dim, act_dim, hidden).to(device),
        rebrac.Critic(obs_dim, act_dim, hidden).to(device),
    )
    batch = {
        k: torch.rand(batch_size, d, device=device)
        for k, d in dict(obs=obs_dim, actions=act_dim, next_obs=obs_dim, next_actions=act_dim).items()
    }
    batch.update(rewards=torch.rand(batch_size, device=device), dones=torch.zeros(batch_size, device=device))
    with FlopCounterMode(display=False) as counter:
        target = rebrac.critic_target(batch, actor, critic, 0.99, 0.1, 0.2, 0.5)
        ((critic(batch["obs"], batch["actions"]) - target) ** 2).mean(1).sum(0).backward()
    critic_flops = counter.get_total_flops()
    critic.requires_grad_(False)  # as the update does: the actor's loss differentiates w.r.t. ψ only
    with FlopCounterMode(display=False) as counter:
        rebrac.actor_loss_fn(actor, critic, batch, 0.1, True)[0].backward()
    return (critic_flops + counter.get_total_flops() / rebrac.Args.policy_freq) / 1e9


def matmul_gflops(device: str, n: int = 500) -> float:
    """This device's fp32 GFLOP/s on a 256×256 by 256×256 product (CPU time on a CPU, wall time on a GPU)."""
    clock = time.process_time if device == "cpu" else time.time
    a, b = torch.randn(256, 256, device=device), torch.randn(256, 256, device=device)
    for _ in range(20):
        a @ b
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = clock()
    for _ in range(n):
        a @ b
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return n * 2 * 256**3 / (clock() - t0) / 1e9


def variant_name(compiled: bool, version: str) -> str:
    return ("compiled" if compiled else "eager") + ("" if version == "this" else " baseline")


def time_variant(
    module, version: str, args: Args, batch_size: int, precision: str, compiled: bool, slow_bf16: bool, on_gpu: bool
):
    """(updates/s over the run, updates/s in the steady state, seconds beyond the steady rate, the final
    actor's weights) of one `module.train` run."""
    updates = max(1, args.updates // 10) if precision == "bf16" and slow_bf16 else args.updates
    quarter = max(1, updates // 4)  # 1-episode evaluations at each quarter: the history's time stamps
    with tempfile.TemporaryDirectory() as tmp:
        out = module.train(
            module.Args(
                env_id=args.env_id,
                total_updates=updates,
                batch_size=batch_size,
                eval_every=quarter,
                checkpoint_every=10**9,
                eval_episodes=1,
                device=args.device,
                compile=compiled,
                precision=precision,
                checkpoint=os.path.join(tmp, "rebrac.pt"),
            )
        )
        ckpt = torch.load(os.path.join(tmp, "rebrac.pt"), map_location="cpu", weights_only=True)
    # the training loop's time: updates and the final checkpoint, with compilation (the evaluations are
    # not counted: rebrac.py keeps them out of its clocks); dataset loading is outside it. On a CPU the
    # process's CPU time is the figure to read: wall time on a shared machine counts the others' jobs.
    wall, cpu = updates / out["seconds"], updates / out["cpu_seconds"]
    ups = wall if on_gpu else cpu
    # steady state: from the first quarter's time stamp to the end, after compilation and warm-up
    first, last = ckpt["history"][0], ckpt["history"][-1]
    clock = "seconds" if on_gpu else "cpu_seconds"
    steady = (last["step"] - first["step"]) / max(last[clock] - first[clock], 1e-9) if last is not first else ups
    print(
        f"ReBRAC batch {batch_size:5d} {precision} {variant_name(compiled, version):17s}: "
        f"{ups:8.1f} updates/s, {ups * batch_size:9.0f} samples/s (100k updates in "
        f"{1e5 / ups / 60:.1f} min, 1M in {1e6 / ups / 60:.0f} min); steady state {steady:.1f} updates/s"
        + ("" if on_gpu else f"; wall clock {wall:.1f} updates/s")
    )
    return ups, steady, updates / ups - updates / steady, ckpt["actor"]  # ... and the time beyond the steady rate


def profile_update(args: Args, batch_size: int, precision: str, top: int = 20) -> None:
    """Self CPU time per update of each op over `args.profile` eager updates, after a warm-up (on a GPU:
    the host's side of each op, its launch)."""
    from torch.profiler import ProfilerActivity, profile

    with tempfile.TemporaryDirectory() as tmp:
        run = dict(env_id=args.env_id, batch_size=batch_size, eval_every=10**9, checkpoint_every=10**9)
        run.update(eval_episodes=1, device=args.device, precision=precision, checkpoint=os.path.join(tmp, "r.pt"))
        rebrac.train(rebrac.Args(total_updates=100, **run))  # warm-up: the allocator and the kernels' caches
        run["checkpoint"] = os.path.join(tmp, "p.pt")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            rebrac.train(rebrac.Args(total_updates=args.profile, **run))
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) / args.profile / 1e3
    print(f"profile, batch {batch_size} {precision} eager: total self CPU {total:.2f} ms per update")
    for e in events[:top]:
        ms = e.self_cpu_time_total / args.profile / 1e3
        calls = e.count / args.profile
        print(f"  {e.key[:40]:40s} {ms:6.2f} ms/update {100 * ms / total:5.1f}% {calls:6.1f} calls/update")


def main(args: Args) -> dict:
    slow_bf16, on_gpu = not native_bf16(args.device), args.device.startswith("cuda")
    print(
        f"on {device_name(args.device)}, {torch.get_num_threads()} threads; {args.updates} updates per variant"
        + (f", {max(1, args.updates // 10)} for bf16 (emulated on this device)" if slow_bf16 else "")
        + ("" if on_gpu else "; per second of this process's CPU time")
    )
    versions = {"this": rebrac, **({"baseline": load_baseline(args.baseline)} if args.baseline else {})}
    # updates/s over the whole run and in the steady state; seconds beyond the steady rate (compiling)
    results, steady, extra, weights = {}, {}, {}, {}
    for batch_size in args.batch_sizes:
        for precision in args.precisions:
            for compiled in (False, True) if args.compile_too else (False,):
                for _ in range(args.repeats):
                    for version, module in versions.items():
                        key = (batch_size, precision, compiled, version)
                        ups, steady_ups, extra_s, actor = time_variant(
                            module, version, args, batch_size, precision, compiled, slow_bf16, on_gpu
                        )
                        results[key], weights[key] = max(ups, results.get(key, 0.0)), actor
                        steady[key] = max(steady_ups, steady.get(key, 0.0))
                        extra[key] = min(extra_s, extra.get(key, math.inf))  # the best repeat, as above
                if args.baseline:
                    same = all(
                        torch.equal(a, b) for a, b in zip(weights[key].values(), weights[(*key[:3], "this")].values())
                    )
                    print(f"  final actor weights of the baseline and this version: {'equal' if same else 'differ'}")
    for batch_size in args.batch_sizes if args.profile else ():
        for precision in args.precisions:
            profile_update(args, batch_size, precision)
    peak = matmul_gflops(args.device)
    for batch_size in args.batch_sizes:
        gflop = update_gflop(batch_size, args.device)
        best = max((v for k, v in results.items() if k[0] == batch_size and k[1] == "fp32"), default=None)
        print(
            f"batch {batch_size}: {gflop:.2f} GFLOP of matrix products per update (FLOP counter); this device's fp32 "
            f"256×256 product runs at {peak:.0f} GFLOP/s, so no fp32 update can beat {peak / gflop:.0f} updates/s "
            + (
                "here"
                if best is None
                else f"here; the fastest fp32 variant above reaches {best / (peak / gflop):.0%} of that"
            )
        )
    first = next(iter(results))
    print(f"ratios (same run), samples/s against batch {first[0]} {first[1]} {variant_name(*first[2:])}:")
    for key, ups in results.items():
        batch_size, precision, compiled, version = key
        ratio = ups * batch_size / (results[first] * first[0])
        line = f"  {f'batch {batch_size} {precision} {variant_name(compiled, version)}':36s} samples/s {ratio:.2f}x"
        if precision != "fp32" and (batch_size, "fp32", compiled, version) in results:
            line += f", updates/s {ups / results[(batch_size, 'fp32', compiled, version)]:.2f}x fp32"
        if compiled:
            eager = (batch_size, precision, False, version)
            line += f", compiled / eager {ups / results[eager]:.2f}x (steady state {steady[key] / steady[eager]:.2f}x"
            gain = 1 / steady[eager] - 1 / steady[key]  # seconds saved per update once compiled
            line += (
                f"; compiling pays back after {extra[key] / gain:.0f} updates)" if gain > 0 else "; never pays back)"
            )
        if version == "this" and (batch_size, precision, compiled, "baseline") in results:
            line += f", this / baseline {ups / results[(batch_size, precision, compiled, 'baseline')]:.2f}x"
        print(line)
    return results


if __name__ == "__main__":
    main(tyro.cli(Args))
