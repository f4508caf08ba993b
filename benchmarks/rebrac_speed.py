"""ReBRAC updates (and samples) per second by batch size and precision, eager against compiled.

    python benchmarks/rebrac_speed.py --env-id hopper-medium-replay --batch-sizes 256 1024 --updates 2000

Runs `rebrac.train` once per variant on the same data, with evaluation and checkpoints pushed past the
end, and prints updates/s, samples/s (updates × batch) and their ratios, all measured in this one run (on a
CPU per second of the process's CPU time, which other jobs on the machine do not inflate).
The target on one H100: 1M updates in ≤ 10 minutes (≥ 1667 updates/s) at batch 1024.
"""

import os
import sys
import tempfile
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
    device: str = rebrac.Args.device
    """torch device"""

    def __post_init__(self):
        parse_env_id(self.env_id)
        require_positive(self, "updates")
        require(all(b > 0 for b in self.batch_sizes), f"--batch-sizes must be positive, not {self.batch_sizes}")


def main(args: Args) -> dict:
    slow_bf16, on_gpu = not native_bf16(args.device), args.device.startswith("cuda")
    print(
        f"on {device_name(args.device)}, {torch.get_num_threads()} threads; {args.updates} updates per variant"
        + (f", {max(1, args.updates // 10)} for bf16 (emulated on this device)" if slow_bf16 else "")
        + ("" if on_gpu else "; per second of this process's CPU time")
    )
    results = {}
    for batch_size in args.batch_sizes:
        for precision in args.precisions:
            for compiled in (False, True) if args.compile_too else (False,):
                updates = max(1, args.updates // 10) if precision == "bf16" and slow_bf16 else args.updates
                with tempfile.TemporaryDirectory() as tmp:
                    out = rebrac.train(
                        rebrac.Args(
                            env_id=args.env_id,
                            total_updates=updates,
                            batch_size=batch_size,
                            eval_every=10**9,
                            checkpoint_every=10**9,
                            eval_episodes=1,
                            device=args.device,
                            compile=compiled,
                            precision=precision,
                            checkpoint=os.path.join(tmp, "rebrac.pt"),
                        )
                    )
                # the training loop's time: updates, plus the final 1-episode evaluation and checkpoint (an
                # untrained hopper falls within ~100 steps); dataset loading is outside it. On a CPU the
                # process's CPU time is the figure to read: wall time on a shared machine counts the others' jobs.
                wall, cpu = updates / out["seconds"], updates / out["cpu_seconds"]
                ups = results[(batch_size, precision, compiled)] = wall if on_gpu else cpu
                print(
                    f"ReBRAC batch {batch_size:5d} {precision} {'compiled' if compiled else 'eager   '}: "
                    f"{ups:8.1f} updates/s, {ups * batch_size:9.0f} samples/s (100k updates in "
                    f"{1e5 / ups / 60:.1f} min, 1M in {1e6 / ups / 60:.0f} min)"
                    + ("" if on_gpu else f"; wall clock {wall:.1f} updates/s")
                )
    first = next(iter(results))
    print(f"ratios (same run), samples/s against batch {first[0]} {first[1]} {'compiled' if first[2] else 'eager'}:")
    for (batch_size, precision, compiled), ups in results.items():
        name = f"batch {batch_size} {precision} {'compiled' if compiled else 'eager'}"
        line = f"  {name:28s} samples/s {ups * batch_size / (results[first] * first[0]):.2f}x"
        if precision != "fp32" and (batch_size, "fp32", compiled) in results:
            line += f", updates/s {ups / results[(batch_size, 'fp32', compiled)]:.2f}x fp32"
        if compiled:
            line += f", compiled / eager {ups / results[(batch_size, precision, False)]:.2f}x"
        print(line)
    return results


if __name__ == "__main__":
    main(tyro.cli(Args))
