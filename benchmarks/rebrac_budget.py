"""ReBRAC's evaluation score against the compute spent, by batch size and precision: which setting
reaches a given score soonest on this machine.

    python benchmarks/rebrac_budget.py --env-id hopper-medium-replay --batch-sizes 256 1024 --samples 25600000

Every variant trains ReBRAC (same seed, same data) on the same number of samples (updates × batch), with
an evaluation every `--eval-samples`, into `<root>/<env-id>_batch<B>_<precision>_seed<S>.pt`. Training
resumes from that checkpoint, so the benchmark can be stopped and run again; a finished variant is only
read. It prints each variant's curve (updates, samples, hours, score) and, per target score, the first
hour at which each variant's own evaluation reached it. Hours are spent on updates, evaluations left out,
summed over resumes: on a CPU the process's CPU time (one thread: core-hours), which other jobs on a
shared machine do not inflate; on a GPU wall-clock time.
"""

import math
import os
import sys
from dataclasses import dataclass

import torch
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import rebrac  # noqa: E402
from common import Precision, device_name, parse_env_id, require, require_positive  # noqa: E402


@dataclass
class Args:
    env_id: str = "hopper-medium-replay"
    """D4RL short name"""
    batch_sizes: tuple[int, ...] = (256, 1024)
    """batch sizes to compare (256: the cpu preset's, 1024: the paper's)"""
    precisions: tuple[Precision, ...] = ("fp32",)
    """precisions to compare (rebrac.py --precision)"""
    samples: int = 25_600_000
    """samples per variant (100k updates at batch 256, 25k at 1024); a multiple of --eval-samples"""
    eval_samples: int = 3_200_000
    """evaluate every this many samples (a multiple of every batch size)"""
    eval_episodes: int = 10
    """episodes of each evaluation"""
    targets: tuple[float, ...] = (20.0, 30.0, 50.0)
    """normalised scores whose first hour each variant is asked for"""
    seed: int = 0
    """ReBRAC's seed (the same for every variant)"""
    root: str = "sweeps/rebrac_budget"
    """where the variants' checkpoints go"""
    device: str = rebrac.Args.device
    """torch device"""

    def __post_init__(self):
        parse_env_id(self.env_id)
        require_positive(self, "samples")
        require_positive(self, "eval_samples")
        require(all(b > 0 for b in self.batch_sizes), f"--batch-sizes must be positive, not {self.batch_sizes}")
        require(
            self.samples % self.eval_samples == 0 and all(self.eval_samples % b == 0 for b in self.batch_sizes),
            f"--samples ({self.samples}) must be a multiple of --eval-samples ({self.eval_samples}), and that "
            f"a multiple of every batch size {self.batch_sizes}",
        )


def first_hour(history: list[dict], target: float, clock: str) -> float | None:
    """The hours (`clock`: "seconds" or "cpu_seconds") at the first evaluation that reached `target`: None
    if none did, nan if that evaluation has no such clock (checkpoints of older versions lack it)."""
    first = next((h for h in history if h["score"] >= target), None)
    return None if first is None else first.get(clock, float("nan")) / 3600


def main(args: Args) -> dict:
    clock = "seconds" if args.device.startswith("cuda") else "cpu_seconds"
    print(
        f"ReBRAC on {args.env_id}, {device_name(args.device)}: {args.samples / 1e6:g}M samples per variant; "
        f"hours of {'wall-clock' if clock == 'seconds' else 'this process’s CPU'} time spent on updates"
    )
    curves = {}
    for batch_size in args.batch_sizes:
        for precision in args.precisions:
            path = os.path.join(args.root, f"{args.env_id}_batch{batch_size}_{precision}_seed{args.seed}.pt")
            rebrac.train(
                rebrac.Args(
                    env_id=args.env_id,
                    seed=args.seed,
                    total_updates=args.samples // batch_size,
                    batch_size=batch_size,
                    eval_every=args.eval_samples // batch_size,
                    checkpoint_every=args.eval_samples // batch_size,
                    eval_episodes=args.eval_episodes,
                    precision=precision,
                    device=args.device,
                    checkpoint=path,
                    resume=True,
                )
            )
            curves[(batch_size, precision)] = torch.load(path, map_location="cpu", weights_only=True)["history"]
    for (batch_size, precision), history in curves.items():
        print(f"\nbatch {batch_size} {precision}:  updates   samples   hours   score")
        for h in history:
            hours = f"{h[clock] / 3600:7.2f}" if clock in h else f"{'?':>7}"  # older checkpoints lack the clock
            print(f"{'':20s}{h['step']:8d} {h['step'] * batch_size / 1e6:8.1f}M {hours} {h['score']:7.1f}")
    print("\nfirst hour at which ReBRAC's own evaluation reached a score (–: not within the budget, ?: not timed):")
    print("variant".ljust(24) + "".join(f"≥{t:g}".rjust(9) for t in args.targets))
    for (batch_size, precision), history in curves.items():
        hours = [first_hour(history, t, clock) for t in args.targets]
        print(
            f"batch {batch_size} {precision}".ljust(24)
            + "".join(f"{'–' if h is None else '?' if math.isnan(h) else f'{h:.2f}':>9}" for h in hours)
        )
    return curves


if __name__ == "__main__":
    main(tyro.cli(Args))
