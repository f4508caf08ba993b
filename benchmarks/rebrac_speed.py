"""ReBRAC updates per second, eager against compiled (CUDA graphs on a GPU).

    python benchmarks/rebrac_speed.py --env-id hopper-medium-replay --batch-size 1024 --updates 2000

Runs `rebrac.train` twice on the same data with evaluation and checkpoints pushed past the end, and
prints updates per second of each and their ratio. The target on one H100: 1M updates in ≤ 10 minutes
(≥ 1667 updates/s) at batch 1024.
"""

import os
import sys
import tempfile
import time
from dataclasses import dataclass

import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import rebrac  # noqa: E402


@dataclass
class Args:
    env_id: str = "hopper-medium-replay"
    """D4RL short name"""
    batch_size: int = 1024
    """batch size (the paper's MuJoCo setting)"""
    updates: int = 2000
    """timed updates per variant (compilation is included: use enough updates to amortise it)"""
    device: str = rebrac.Args.device
    """torch device"""
    compile_too: bool = True
    """also time the compiled update"""


def main(args: Args) -> dict:
    results = {}
    for compiled in (False, True) if args.compile_too else (False,):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            rebrac.train(
                rebrac.Args(
                    env_id=args.env_id,
                    total_updates=args.updates,
                    batch_size=args.batch_size,
                    eval_every=10**9,
                    checkpoint_every=10**9,
                    eval_episodes=1,
                    device=args.device,
                    compile=compiled,
                    checkpoint=os.path.join(tmp, "rebrac.pt"),
                )
            )
            # the final evaluation (1 episode) and checkpoint are inside the timing: small next to the updates
            results["compiled" if compiled else "eager"] = args.updates / (time.perf_counter() - t0)
    for name, ups in results.items():
        print(
            f"ReBRAC {name:8s} batch {args.batch_size} on {args.device}: {ups:8.1f} updates/s "
            f"(1M updates in {1e6 / ups / 60:.1f} min)"
        )
    if len(results) == 2:
        print(f"compiled / eager: {results['compiled'] / results['eager']:.2f}x")
    return results


if __name__ == "__main__":
    main(tyro.cli(Args))
