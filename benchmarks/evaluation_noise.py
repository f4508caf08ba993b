"""How much of a paired Δ the evaluation itself makes: ReBRAC's frozen actor on the same episodes, acted
three ways that should not matter — as `rebrac.py` evaluates it (one forward pass), through the batched
per-episode parameters that `itpo_eval.py` and `plan_eval.py` act with (the same weights: its actions
differ by float rounding, about 1e-6), and with Gaussian noise of σ added to each action — each paired
against the first.

    python benchmarks/evaluation_noise.py --env-id hopper-medium-replay \
        --rebrac-checkpoint sweeps/cpu/checkpoints/hopper-medium-replay/rebrac_seed0.pt

Locomotion with contacts is chaotic: an action changed by 1e-6 can change when a hopper falls. The
printout is the noise floor of an episode-paired Δ on this dataset: per-episode differences and the mean
with its bootstrap interval, next to the paired Δ a method must beat.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
import tyro

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path[:0] = [p for p in (REPO, BENCH) if p not in sys.path]
from report import paired_difference  # noqa: E402


@dataclass
class Args:
    env_id: str = "hopper-medium-replay"
    """D4RL short name"""
    rebrac_checkpoint: str = "checkpoints/hopper-medium-replay/rebrac_seed0.pt"
    """the actor to evaluate"""
    seed: int = 0
    """seed of the checkpoint (and of the action noise)"""
    episodes: int = 10
    """evaluation episodes (env seeds eval_seed ..)"""
    eval_seed: int = 1000
    """first env seed (the sweep's evaluation seeds start at 1000)"""
    max_episode_steps: int | None = None
    """cut episodes at this many steps (default: the env's limit)"""
    noise: list[float] = field(default_factory=lambda: [1e-6, 1e-3])
    """σ of the Gaussian noise added to each action, one run per value"""


def main(args: Args) -> dict:
    from common import batched_policy, make_eval_env_fn, normalized_score, run_episodes
    from rebrac import actor_policy, load_rebrac

    torch.set_num_threads(1)
    actor, _, _ = load_rebrac(args.rebrac_checkpoint, args.env_id, args.seed)
    actor.eval().requires_grad_(False)
    direct = actor_policy(actor, "cpu")
    policy = batched_policy(actor)
    params = {k: v.detach().unsqueeze(0).repeat(args.episodes, *[1] * v.dim()) for k, v in actor.named_parameters()}

    @torch.no_grad()
    def batched(obs, alive):
        return policy(params, torch.as_tensor(obs)[:, None, :])[:, 0].numpy()

    def noisy(sigma):
        rng = np.random.default_rng(args.seed)

        def act(obs, alive):
            a = direct(obs, alive)
            return np.clip(a + sigma * rng.standard_normal(a.shape), -1, 1).astype(a.dtype)

        return act

    ways = {"direct (rebrac.py's evaluation)": direct, "batched (itpo_eval's ReBRAC)": batched}
    ways.update({f"direct + N(0, {s:g}²) per action": noisy(s) for s in args.noise})
    seeds = list(range(args.eval_seed, args.eval_seed + args.episodes))
    make_env = make_eval_env_fn(args.env_id, None, verbose=False)
    scores = {}
    for name, act in ways.items():
        result = run_episodes(make_env, args.env_id, seeds, act, args.max_episode_steps)
        scores[name] = normalized_score(args.env_id, result["outcomes"])
    first = next(iter(scores))
    print(f"{args.env_id}, {args.rebrac_checkpoint}, env seeds {seeds[0]}..{seeds[-1]}")
    out = {}
    for name, s in scores.items():
        line = f"  {name:<36} mean {s.mean():6.1f}  per episode {np.round(s, 1).tolist()}"
        if name != first:
            d = paired_difference(s, scores[first])
            diff = s - scores[first]
            changed = int((np.abs(diff) > 0.1).sum())  # by more than 0.1 normalised points
            line += (
                f"\n  {'':<36} paired Δ {d[0]:+.1f} [{d[1]:+.1f}, {d[2]:+.1f}]; {changed} of {len(s)} episodes "
                f"changed by more than 0.1, the largest by {np.abs(diff).max():.1f}"
            )
            out[name] = {"scores": s.tolist(), "paired_difference": d}
        print(line)
    return out


if __name__ == "__main__":
    main(tyro.cli(Args))
