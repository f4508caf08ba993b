"""Does bf16 change the results? ITPO's gradient and the world models' accuracy, fp32 against bf16.

    python benchmarks/precision_check.py --env-id hopper-medium-replay --checkpoints checkpoints
    python benchmarks/precision_check.py --states 10 --particles 64 256 --train-steps 2000
    python benchmarks/precision_check.py --episodes 10 --score-particles 32 --step-size 5e-5   # paired scores

ITPO: at N dataset states, with the trained ReBRAC actor as ψ, ∇ψĴ is computed in fp32 and under each bf16
scheme at the same noise ε, and in fp32 at another noise; per state, the cosine of the bf16 gradient with
the fp32 one is printed against the cosine between the two fp32 gradients (the sampling noise of ∇ψĴ at
this M, the yardstick a bf16 error must stay well inside), minimum and mean, against the two bounds
below (COS_BOUND, NOISE_BOUND), and |ΔĴ| / |Ĵ|. Schemes:
  world  f_θ alone under autocast, its network's output back in fp32 (what `itpo_eval.py --precision bf16` does)
  whole  the whole inner step under autocast (π_ψ, r_ξ, Q_φ and f_θ)
World models: the held-out one-step RMSE of the same trained model with inference in fp32 and in bf16
(against fp32 at another noise), and with --train-steps S, of a DDPM trained S steps in fp32 and in bf16.
Scores (--episodes N): ITPO on N real episodes with `itpo_eval.py --precision fp32` and `--precision bf16`,
same checkpoints, noise seed and env seeds, and in fp32 at another noise seed (the score's own sampling noise,
as the second fp32 gradient is the gradient's): the scores per episode, the paired differences bf16 − fp32 and
fp32 noise B − fp32 with their bootstrap intervals, and ms per env step both ways (wall time).
"""

import os
import sys
import tempfile
import time
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np
import torch
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import itpo_eval  # noqa: E402
from common import (  # noqa: E402
    autocast,
    check_precision,
    checkpoint_path,
    device_name,
    load_dataset,
    one_step_rmse,
    parse_env_id,
    require,
    require_positive,
    seed_everything,
    split_holdout,
    to_tensors,
)

STAGES = {"ddpm": "dynamics", "meanflow": "meanflow"}  # the checkpoint of each world model
# Two yardsticks for the bf16 gradient, per state:
# - COS_BOUND, fixed: cos(bf16, fp32) ≥ 0.999, i.e. a step along the bf16 gradient gains, to first order, at least
#   99.9 % of what the step along the fp32 one gains (tests/test_precision.py asserts it of the kept scheme);
# - NOISE_BOUND, the gradient's own sampling noise: (1 − cos(bf16, fp32)) / (1 − cos(fp32 noise A, fp32 noise B))
#   ≤ 1/8. Since 1 − cos θ ≈ θ²/2 and two independent draws are √2 times one draw's angle θ_e from the exact
#   gradient apart, this says the bf16 gradient is at most θ_e / 2 from the fp32 one: well inside the noise.
COS_BOUND = 0.999
NOISE_BOUND = 1 / 8


@dataclass
class Args:
    env_id: str = "hopper-medium-replay"
    """D4RL short name"""
    checkpoints: str = "checkpoints"
    """folder holding <env-id>/{rebrac,dynamics,reward,meanflow}_seed<S>.pt (read only)"""
    seed: int = 0
    """seed of the checkpoints, of the states drawn and of the noise"""
    world_models: tuple[Literal["ddpm", "meanflow"], ...] = ("ddpm",)
    """the trained world models to check"""
    states: int = 8
    """N, dataset states at which ∇ψĴ is compared (each with its own copy of ψ, as ITPO's episodes)"""
    particles: tuple[int, ...] = (64, 256)
    """M values to check"""
    horizon: int = 5
    """H"""
    schemes: tuple[Literal["world", "whole"], ...] = ("world", "whole")
    """bf16 schemes for ITPO (see the module docstring)"""
    train_steps: int = 0
    """also train a DDPM this many steps in fp32 and in bf16 (batch 256) and compare their RMSE; 0: skip"""
    episodes: int = 0
    """also run ITPO on this many real episodes in fp32 and in bf16 and pair their scores; 0: skip"""
    score_particles: int = 32
    """M of those episodes (the cpu preset's)"""
    step_size: float = 5e-5
    """α of those episodes (the sweep's chosen α: its summaries/ record it)"""
    eval_seed: int = 1000
    """episode i of those runs uses env seed eval_seed + i"""
    max_episode_steps: int | None = None
    """cut those episodes at this many steps (default: the env's limit)"""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    """torch device"""

    def __post_init__(self):
        parse_env_id(self.env_id)
        require_positive(self, "states", "horizon")
        require(all(m > 0 for m in self.particles), f"--particles must be positive, not {self.particles}")
        require(self.train_steps >= 0, f"--train-steps must be 0 or positive, not {self.train_steps}")
        require(self.episodes >= 0, f"--episodes must be 0 or positive, not {self.episodes}")
        require_positive(self, "score_particles")
        defaults = {f.name: f.default for f in fields(self)}
        score_flags = ("score_particles", "step_size", "eval_seed", "max_episode_steps")
        require(
            self.episodes > 0 or all(getattr(self, k) == defaults[k] for k in score_flags),
            "--score-particles, --step-size, --eval-seed and --max-episode-steps set the score runs: add --episodes N",
        )
        if self.episodes:  # itpo_eval.Args checks the score runs' flags now, not after the gradient check
            for world_model in self.world_models:
                score_run(self, world_model, "fp32", self.seed)


def flat_per_state(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    """The stacked gradient {name: [N, ...]} as one vector per state, [N, P] in float64."""
    return torch.cat([g.flatten(1) for g in grads.values()], dim=1).double()


def cosines(a: dict, b: dict) -> np.ndarray:
    return torch.nn.functional.cosine_similarity(flat_per_state(a), flat_per_state(b), dim=1).numpy()


def noise_ratios(bf16: dict, fp32_a: dict, fp32_b: dict) -> np.ndarray:
    """Per state, (1 − cos(bf16, fp32 A)) / (1 − cos(fp32 A, fp32 B)): bf16 and A at the same noise, B at
    another; at most NOISE_BOUND where bf16 stays well inside the gradient's sampling noise."""
    return (1 - cosines(bf16, fp32_a)) / np.maximum(1 - cosines(fp32_a, fp32_b), 1e-12)


def checkpoints(args: Args, world_model: str) -> dict[str, str]:
    """itpo_eval.Args' checkpoint fields: the trained models of --seed under --checkpoints."""
    root = args.checkpoints
    return {
        "rebrac_checkpoint": checkpoint_path(args.env_id, "rebrac", args.seed, root),
        "dynamics_checkpoint": checkpoint_path(args.env_id, STAGES[world_model], args.seed, root),
        "reward_checkpoint": checkpoint_path(args.env_id, "reward", args.seed, root),
    }


def score_run(args: Args, world_model: str, precision: str, noise_seed: int) -> itpo_eval.Args:
    """itpo_eval.Args of one score run (--episodes): --seed's checkpoints, the given precision and noise seed."""
    return itpo_eval.Args(
        env_id=args.env_id,
        seed=noise_seed,
        world_model=world_model,
        horizon=args.horizon,
        particles=args.score_particles,
        step_size=args.step_size,
        episodes=args.episodes,
        eval_seed=args.eval_seed,
        max_episode_steps=args.max_episode_steps,
        baseline=precision == "fp32" and noise_seed == args.seed,  # ReBRAC's score on these episodes, once
        **checkpoints(args, world_model),
        device=args.device,
        precision=precision,
        run_name=f"precision_check_{args.env_id}_seed{args.seed}_{world_model}_{precision}"
        + ("" if noise_seed == args.seed else "_noise_B"),
    )


def gradient_check(args: Args, world_model: str, states: torch.Tensor) -> None:
    """Per state: cos(∇ψĴ bf16, ∇ψĴ fp32) at the same noise against cos(fp32 noise A, fp32 noise B)."""
    model_args = itpo_eval.Args(
        env_id=args.env_id,
        seed=args.seed,
        world_model=world_model,
        device=args.device,
        **checkpoints(args, world_model),
    )
    actor, critic, world, reward, rebrac_args = itpo_eval.load_models(model_args)
    gamma, reward_scale = rebrac_args["gamma"], rebrac_args["reward_scale"]
    policy = itpo_eval.batched_policy(actor)
    n = states.shape[0]
    params = {k: v.detach().unsqueeze(0).repeat(n, *[1] * v.dim()) for k, v in actor.named_parameters()}
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    # on a CPU, this process's CPU time: wall time on a shared machine counts the other jobs too
    clock = time.perf_counter if args.device.startswith("cuda") else time.process_time

    def step(eps, scheme: str | None):
        """(Ĵ, ∇ψĴ, seconds) in fp32 (scheme None) or under a bf16 scheme."""
        t0 = clock()
        whole = autocast("bf16" if scheme == "whole" else "fp32", args.device)
        world_precision = "bf16" if scheme == "world" else "fp32"
        with whole:
            objective, grads = itpo_eval.inner_step(
                policy, params, critic, world, reward, states, eps, gamma, reward_scale, world_precision
            )
        objective = objective.double().cpu().numpy()  # (waits for a GPU to finish)
        return objective, {k: g.cpu() for k, g in grads.items()}, clock() - t0

    for m in args.particles:
        shape = (n, m, args.horizon, *world.noise_shape)
        eps_a = torch.randn(shape, generator=generator, device=args.device)
        eps_b = torch.randn(shape, generator=generator, device=args.device)
        for scheme in (None, *args.schemes):  # warm-up, so that no timing below pays first-call costs
            step(eps_a[:, :1], scheme)
        j_a, g_a, sec_a = step(eps_a, None)
        _, g_b, _ = step(eps_b, None)
        noise = cosines(g_a, g_b)
        print(
            f"{world_model} M={m} N={n} H={args.horizon}: fp32 noise A vs fp32 noise B: "
            f"cos min {noise.min():.5f} mean {noise.mean():.5f}  ({sec_a * 1e3:.0f} ms per inner step in fp32)"
        )
        print(f"    per state 1 − cos(fp32 A, fp32 B):  {' '.join(f'{1 - c:.1e}' for c in noise)}")
        for scheme in args.schemes:
            j_bf, g_bf, sec_bf = step(eps_a, scheme)
            cos, ratio = cosines(g_bf, g_a), noise_ratios(g_bf, g_a, g_b)
            rel = np.abs(j_bf - j_a) / np.maximum(np.abs(j_a), 1e-12)
            print(
                f"{world_model} M={m} N={n} H={args.horizon}: bf16 {scheme:5s} vs fp32, same noise: "
                f"cos min {cos.min():.5f} mean {cos.mean():.5f} ({'≥' if cos.min() >= COS_BOUND else 'NOT ≥'} "
                f"{COS_BOUND} at every state); (1 − cos) / (1 − cos of the noise) max {ratio.max():.3f} mean "
                f"{ratio.mean():.3f} ({'inside' if ratio.max() <= NOISE_BOUND else 'OUTSIDE'} {NOISE_BOUND:.3f}); "
                f"|ΔĴ|/|Ĵ| max {rel.max():.3%} mean {rel.mean():.3%}  ({sec_bf * 1e3:.0f} ms per inner step, "
                f"{sec_bf / sec_a:.1f}x fp32)"
            )
            print(f"    per state 1 − cos(bf16 {scheme}, fp32): {' '.join(f'{1 - c:.1e}' for c in cos)}")


def rmse_check(args: Args, world_model: str, data: dict) -> None:
    """Held-out one-step RMSE of the trained model, inference in fp32 (two noises) and in bf16."""
    from meanflow_onestep import load_meanflow
    from train_dynamics import load_dynamics

    path = checkpoint_path(args.env_id, STAGES[world_model], args.seed, args.checkpoints)
    model = (load_dynamics if world_model == "ddpm" else load_meanflow)(path, args.env_id, args.seed, args.device)
    trained = torch.load(path, map_location="cpu", weights_only=True)["args"]
    # the training run's own held-out split (same size and seed as `common.prepare`)
    _, held_out = split_holdout(data, min(trained["holdout"], len(data["rewards"]) // 5), trained["seed"])
    held_out = to_tensors(held_out, args.device)
    fp32_a, fp32_b = one_step_rmse(model, held_out, 0), one_step_rmse(model, held_out, 1)
    with autocast("bf16", args.device):
        bf16 = one_step_rmse(model, held_out, 0)
    print(
        f"{world_model} ({path}): held-out one-step RMSE on {len(held_out['rewards'])} transitions: fp32 {fp32_a:.4f} "
        f"(another noise {fp32_b:.4f}), bf16 inference {bf16:.4f} (same noise as the first)"
    )


def training_check(args: Args) -> None:
    """A DDPM trained --train-steps in fp32 and in bf16, same seed and batches: held-out RMSE and time."""
    import train_dynamics

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)  # the runs/ folders of these throwaway trainings
        try:
            for precision in ("fp32", "bf16"):
                metrics = train_dynamics.main(
                    train_dynamics.Args(
                        env_id=args.env_id,
                        seed=args.seed,
                        total_steps=args.train_steps,
                        eval_every=args.train_steps,
                        checkpoint=os.path.join(tmp, f"dynamics_{precision}.pt"),
                        device=args.device,
                        precision=precision,
                    )
                )
                results[precision] = metrics
        finally:
            os.chdir(cwd)
    fp32, bf16 = results["fp32"], results["bf16"]
    print(
        f"ddpm trained {args.train_steps} steps (batch 256, same seed): held-out one-step RMSE fp32 "
        f"{fp32['one_step_rmse']:.4f}, bf16 {bf16['one_step_rmse']:.4f}; training {fp32['seconds']:.0f} s vs "
        f"{bf16['seconds']:.0f} s (bf16 / fp32 time {bf16['seconds'] / fp32['seconds']:.1f}x)"
    )


def score_check(args: Args, world_model: str) -> None:
    """ITPO's score on the same episodes with --precision fp32 and bf16 at the same noise, and in fp32 at another
    noise (the score's own sampling noise, the yardstick of the bf16 − fp32 difference): per episode, the paired
    differences, ms per env step."""
    from report import paired_difference

    runs = {  # label: (precision, noise seed); the checkpoints are --seed's in every run
        "fp32": ("fp32", args.seed),
        "bf16": ("bf16", args.seed),
        "fp32 noise B": ("fp32", args.seed + 1),
    }
    summaries = {label: itpo_eval.main(score_run(args, world_model, *run)) for label, run in runs.items()}
    itpo = {label: summaries[label]["itpo"] for label in runs}
    fp32 = itpo["fp32"]["normalized_scores"]
    delta = paired_difference(itpo["bf16"]["normalized_scores"], fp32)
    noise = paired_difference(itpo["fp32 noise B"]["normalized_scores"], fp32)
    ms = {label: itpo[label]["seconds_per_env_step"] * 1e3 for label in ("fp32", "bf16")}
    tag = f"{world_model} M={args.score_particles} H={args.horizon} α={args.step_size:g}"
    print(f"{tag}: ITPO per episode (env seeds {args.eval_seed}..{args.eval_seed + args.episodes - 1})")
    for label in runs:
        print(f"    {label}: {' '.join(f'{x:.1f}' for x in itpo[label]['normalized_scores'])}")
    print(
        f"{tag}: ITPO fp32 {itpo['fp32']['mean']:.1f}, bf16 {itpo['bf16']['mean']:.1f}, fp32 at another noise "
        f"{itpo['fp32 noise B']['mean']:.1f} (ReBRAC {summaries['fp32']['rebrac']['mean']:.1f}); paired, 95 % "
        f"bootstrap over episodes: bf16 − fp32 {delta[0]:+.1f} [{delta[1]:+.1f}, {delta[2]:+.1f}], fp32 noise B − "
        f"fp32 {noise[0]:+.1f} [{noise[1]:+.1f}, {noise[2]:+.1f}] (the score's own noise); "
        f"{ms['fp32']:.1f} vs {ms['bf16']:.1f} ms per env step (wall; bf16 / fp32 time {ms['bf16'] / ms['fp32']:.2f}x)"
    )


def main(args: Args) -> None:
    seed_everything(args.seed)
    clock = "wall" if args.device.startswith("cuda") else "this process's CPU"
    print(f"[precision_check] on {device_name(args.device)}, {torch.get_num_threads()} threads; {clock} times")
    check_precision("bf16", args.device, "precision_check")
    data, _, _ = load_dataset(args.env_id, verbose=False)
    rows = np.random.default_rng(args.seed).choice(len(data["rewards"]), args.states, replace=False)
    states = torch.as_tensor(data["observations"][rows], device=args.device)
    for world_model in args.world_models:
        rmse_check(args, world_model, data)
        gradient_check(args, world_model, states)
        if args.episodes:
            score_check(args, world_model)
    if args.train_steps:
        training_check(args)


if __name__ == "__main__":
    main(tyro.cli(Args))
