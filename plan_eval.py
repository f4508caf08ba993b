"""Planning in action space on ITPO's models: MPPI (as TD-MPC2 plans) and gradient shooting, paired
against ReBRAC on the same episodes.

    python plan_eval.py --env-id hopper-medium-replay --planner mppi
    python plan_eval.py --env-id hopper-medium-replay --planner shooting --step-size 0.01

The same checkpoints as `itpo_eval.py` (the same loader), and the same imagined return Ĵ
(`common.py`): an action sequence is scored by H steps of f_θ and r_ξ and the terminal value
min_i Q_φ,i(s̃_H, π(s̃_H)) of the frozen ReBRAC actor π. ITPO adapts π's parameters; these adapt the
actions themselves, so the comparison says what parameter-space adaptation adds on equal models.

MPPI, per real state (TD-MPC2's `plan()`, written anew): I iterations; N action sequences drawn from
N(μ, σ²) and clipped to the action box, plus N_π imagined rollouts of π; the top k by Ĵ; μ and σ refit
with weights exp(τ·(Ĵ − max Ĵ)), σ clamped to [σ_min, σ_max]; μ warm-started from the previous step's
μ shifted by one; act the first action of an elite drawn by its weight. Gradient shooting: the plan
starts at the actions π takes in one imagined rollout and takes E ascent steps a ← clip(a + α∇_a Ĵ),
Ĵ averaged over M noise draws; act its first action. The N evaluation episodes run in lockstep, every
tensor [N, ...], and nothing is read back to the host inside a step.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Literal

import numpy as np
import torch
import tyro
from torch.func import grad
from torch.utils.tensorboard import SummaryWriter

import itpo_eval
from common import (
    batched_policy,
    imagined_returns,
    make_eval_env_fn,
    models_info,
    require,
    require_device,
    require_positive,
    seed_everything,
)
from itpo_eval import ITPOAgent, evaluate, load_models, model_paths


@dataclass
class Args:
    env_id: str = "hopper-medium-replay"
    """D4RL short name"""
    dataset_id: str | None = None
    """explicit Minari dataset id (AntMaze: the evaluation env is the dataset's)"""
    seed: int = 0
    """seed of the checkpoints to load and of the planner's noise"""
    planner: Literal["mppi", "shooting"] = "mppi"
    """MPPI (sampling, TD-MPC2's planner) or gradient shooting (ascent on the actions)"""
    horizon: int = 5
    """H, imagined steps of a plan (ITPO's)"""
    world_model: Literal["ddpm", "meanflow"] = "ddpm"
    """the DDPM of train_dynamics.py, or the one-step MeanFlow of meanflow_onestep.py"""
    gamma: float | None = None
    """discount of the imagined return (default: the ReBRAC checkpoint's γ)"""
    iterations: int = 6
    """MPPI: I, refits per real state (TD-MPC2: 6)"""
    samples: int = 512
    """MPPI: N, sampled action sequences per iteration (TD-MPC2: 512)"""
    policy_samples: int = 24
    """MPPI: N_π, imagined rollouts of π among the candidates (TD-MPC2: 24)"""
    elites: int = 64
    """MPPI: k, the best candidates the refit uses (TD-MPC2: 64)"""
    temperature: float = 0.5
    """MPPI: τ of the elites' weights exp(τ·(Ĵ − max Ĵ)) (TD-MPC2: 0.5)"""
    min_std: float = 0.05
    """MPPI: lower clamp of σ (TD-MPC2: 0.05)"""
    max_std: float = 2.0
    """MPPI: upper clamp of σ and its value at each real state's first iteration (TD-MPC2: 2)"""
    particles: int = 32
    """shooting: M, noise draws Ĵ averages over"""
    shooting_steps: int = 1
    """shooting: E, ascent steps on the actions per real state"""
    step_size: float = 0.01
    """shooting: α of a ← clip(a + α∇_a Ĵ, ±1); 0 acts as π does"""
    episodes: int = 10
    """evaluation episodes, run in lockstep"""
    eval_seed: int = 1000
    """episode i uses env seed eval_seed + i (tune with other seeds than you report)"""
    max_episode_steps: int | None = None
    """cut episodes at this many steps (default: the env's limit)"""
    baseline: bool = True
    """also evaluate the ReBRAC actor on the same seeds (a paired comparison)"""
    rebrac_checkpoint: str | None = None
    """default checkpoints/<env-id>/rebrac_seed<S>.pt"""
    dynamics_checkpoint: str | None = None
    """default checkpoints/<env-id>/dynamics_seed<S>.pt (or meanflow_seed<S>.pt with --world-model meanflow)"""
    reward_checkpoint: str | None = None
    """default checkpoints/<env-id>/reward_seed<S>.pt"""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    """torch device"""
    match_itpo: tuple[int, int] | None = None
    """(M, E) of the ITPO step to match in cost: the planner's rollouts (MPPI's --samples, shooting's
    --particles) are then chosen by timing both here, on the episodes' first states (the sweep's matched budget)"""
    match_only: bool = False
    """with --match-itpo: print and save the matched budget, evaluate nothing"""
    compile: bool = False
    """torch.compile the planning step (CUDA graphs on a GPU)"""
    run_name: str | None = None
    """name of the run folder under runs/ (default: <planner>_<env-id>_seed<S>_<time>)"""

    def __post_init__(self):
        require_positive(self, "horizon", "iterations", "samples", "elites", "particles", "episodes")
        require_positive(self, "max_episode_steps", "temperature")
        require(self.policy_samples >= 0, f"--policy-samples must be ≥ 0, not {self.policy_samples}")
        require(self.shooting_steps >= 0, f"--shooting-steps must be ≥ 0, not {self.shooting_steps}")
        require(
            self.elites <= self.samples + self.policy_samples,
            f"--elites ({self.elites}) must be at most --samples + --policy-samples "
            f"({self.samples + self.policy_samples}): the candidates the elites are drawn from",
        )
        require(
            0 < self.min_std <= self.max_std,
            f"--min-std and --max-std need 0 < min ≤ max, not {self.min_std}, {self.max_std}",
        )
        require(np.isfinite(self.step_size) and self.step_size >= 0, f"--step-size must be ≥ 0, not {self.step_size}")
        require(self.gamma is None or 0 < self.gamma <= 1, f"--gamma must be in (0, 1], not {self.gamma}")
        require(self.eval_seed >= 0, f"--eval-seed must be ≥ 0 (gymnasium's seeds are), not {self.eval_seed}")
        require_device(self)
        if self.match_itpo is not None:
            knob = MATCHED[self.planner]
            require(min(self.match_itpo) > 0, f"--match-itpo takes ITPO's M and E, both > 0, not {self.match_itpo}")
            require(
                getattr(self, knob) == PLANNER_DEFAULTS[knob],
                f"--match-itpo chooses --{knob}: drop one of them",
            )
        require(not self.match_only or self.match_itpo is not None, "--match-only needs --match-itpo M E")
        # the other planner's flags would be ignored: refuse them (the run would not be what was asked)
        ignored = SHOOTING_FLAGS if self.planner == "mppi" else MPPI_FLAGS
        given = [f"--{f.replace('_', '-')}" for f in ignored if getattr(self, f) != PLANNER_DEFAULTS[f]]
        other = "shooting" if self.planner == "mppi" else "mppi"
        require(not given, f"{', '.join(given)}: only --planner {other} uses it; drop it or pass --planner {other}")


MPPI_FLAGS = ("iterations", "samples", "policy_samples", "elites", "temperature", "min_std", "max_std")
SHOOTING_FLAGS = ("particles", "shooting_steps", "step_size")
PLANNER_DEFAULTS = {f.name: f.default for f in fields(Args) if f.name in MPPI_FLAGS + SHOOTING_FLAGS}
MATCHED = {"mppi": "samples", "shooting": "particles"}  # what --match-itpo chooses: the rollouts per iteration


def refit(candidates, values, elites: int, temperature: float, min_std: float, max_std: float):
    """MPPI's refit: candidates [N, C, H, m], values Ĵ [N, C] -> (μ [N, H, m], σ [N, H, m], the elites
    [N, k, H, m] and their weights [N, k]): the top k by Ĵ, weighted exp(τ·(Ĵ − max Ĵ)), normalised."""
    values = torch.where(values.isfinite(), values, -torch.inf)  # a non-finite rollout is never an elite
    top, index = values.topk(elites, dim=1)
    elite = candidates.gather(1, index[:, :, None, None].expand(-1, -1, *candidates.shape[2:]))
    weight = torch.exp(temperature * (top - top[:, :1]))  # topk sorts: top[:, 0] is the max
    weight = torch.nan_to_num(weight / weight.sum(1, keepdim=True))
    mean = (weight[:, :, None, None] * elite).sum(1)
    std = (weight[:, :, None, None] * (elite - mean[:, None]) ** 2).sum(1).sqrt().clamp(min_std, max_std)
    return mean, std, elite, weight


class Planner:
    """MPPI or gradient shooting for N episodes at once; the `act` of `itpo_eval.evaluate`."""

    def __init__(self, actor, critic, world, reward, args: Args, gamma: float, reward_scale: float = 1.0):
        self.critic, self.world, self.reward, self.args = critic, world, reward, args
        self.gamma, self.reward_scale = gamma, reward_scale
        n, dev = args.episodes, args.device
        self.policy = batched_policy(actor)  # π, frozen: the candidates' terminal value, the shooting's start
        self.params = {k: v.detach().unsqueeze(0).repeat(n, *[1] * v.dim()) for k, v in actor.named_parameters()}
        self.act_dim = actor.net[-2].out_features
        self.mean = torch.zeros(n, args.horizon, self.act_dim, device=dev)  # MPPI's μ, carried to the next step
        self.generator = torch.Generator(device=dev).manual_seed(args.seed)
        self.skipped = torch.zeros((), dtype=torch.long, device=dev)  # non-finite steps: plan kept, or π acts
        self.stats: dict[str, torch.Tensor] = {}
        step = self._mppi if args.planner == "mppi" else self._shooting
        mode = "reduce-overhead" if str(dev).startswith("cuda") else None
        self.step = torch.compile(step, mode=mode) if args.compile else step

    def reset(self, mask: torch.Tensor) -> None:
        """Episodes where `mask` [N] is true start without a plan to warm-start from."""
        self.mean = torch.where(mask[:, None, None], 0.0, self.mean)

    def returns(self, s0, eps, actions=None):
        """Ĵ [N, C] of C rollouts from each s0 (of π where `actions` is None) and the actions they took."""
        return imagined_returns(
            self.policy, self.params, self.critic, self.world, self.reward, s0, eps, self.gamma, self.reward_scale,
            actions=actions,
        )  # fmt: skip

    def noise(self, *shape):
        return torch.randn(shape, generator=self.generator, device=self.args.device)

    def _mppi(self, s0, mean, eps_pi, eps, gauss, gumbel, active):
        a, warm = self.args, mean
        pi_actions = self.returns(s0, eps_pi)[1] if a.policy_samples else None  # N_π rollouts of π
        std = torch.full_like(mean, a.max_std)
        for i in range(a.iterations):
            candidates = (mean[:, None] + std[:, None] * gauss[:, i]).clamp(-1, 1)
            if pi_actions is not None:
                candidates = torch.cat([pi_actions, candidates], 1)
            values = self.returns(s0, eps[:, i], candidates)[0]
            mean, std, elite, weight = refit(candidates, values, a.elites, a.temperature, a.min_std, a.max_std)
        # TD-MPC2's evaluation rule: the first action of an elite drawn by its weight (Gumbel-max)
        pick = (torch.log(weight) + gumbel).argmax(1)
        action = elite[torch.arange(len(s0), device=s0.device), pick, 0]
        # where no rollout of the last iteration was finite there is no plan: π acts, the warm start is kept
        planned = weight.sum(1) > 0
        action = torch.where(planned[:, None], action, self.policy(self.params, s0[:, None])[:, 0])
        mean = torch.where(planned[:, None, None], mean, warm)
        ok, count = active & planned, (active & planned).sum().clamp(min=1)
        stats = {
            "imagined_return": torch.where(ok, values.where(values.isfinite(), -torch.inf).amax(1), 0.0).sum() / count,
            "std": torch.where(ok, std.mean((1, 2)), 0.0).sum() / count,
            "skipped": (active & ~planned).sum(),
        }
        return action, mean, stats

    def _shooting(self, s0, eps, active):
        m = self.args.particles
        plan = self.returns(s0, eps[:, :1])[1][:, 0]  # start: the actions π takes in one imagined rollout [N, H, m]

        def total(actions):
            j = self.returns(s0, eps, actions[:, None].expand(-1, m, -1, -1))[0].mean(1)
            return j.sum(), j

        skipped = torch.zeros((), dtype=torch.long, device=s0.device)
        grad_norm, ok, stats = torch.zeros(len(s0), device=s0.device), torch.zeros_like(active), {}
        for e in range(self.args.shooting_steps):
            g, objective = grad(total, has_aux=True)(plan)
            new = (plan + self.args.step_size * g).clamp(-1, 1)
            ok = active & torch.isfinite(objective) & torch.isfinite(new).flatten(1).all(1)
            plan = torch.where(ok[:, None, None], new, plan)
            skipped = skipped + (active & ~ok).sum()
            grad_norm = torch.where(ok, g.flatten(1).norm(dim=1), 0.0)
            if e == 0:  # Ĵ of π's own plan, as ITPO logs Ĵ before its first step
                stats["imagined_return"] = torch.where(ok, objective, 0.0).sum() / ok.sum().clamp(min=1)
        # ‖∇_a Ĵ‖ of the last step, mean over the episodes it moved: what a step size means on these models
        stats |= {"skipped": skipped, "grad_norm": grad_norm.sum() / ok.sum().clamp(min=1)}
        return plan[:, 0], plan, stats

    def __call__(self, obs: np.ndarray, alive: np.ndarray) -> np.ndarray:
        a, dev = self.args, self.args.device
        s0, active = torch.as_tensor(obs, device=dev), torch.as_tensor(alive, device=dev)
        n, h, noise_shape = len(obs), a.horizon, self.world.noise_shape
        if a.compile and str(dev).startswith("cuda"):
            torch.compiler.cudagraph_mark_step_begin()
        if a.planner == "mppi":
            warm = torch.cat([self.mean[:, 1:], torch.zeros_like(self.mean[:, :1])], 1)  # μ shifted by one
            candidates = a.samples + a.policy_samples
            action, mean, stats = self.step(
                s0,
                warm,
                self.noise(n, a.policy_samples, h, *noise_shape),
                self.noise(n, a.iterations, candidates, h, *noise_shape),
                self.noise(n, a.iterations, a.samples, h, self.act_dim),
                -torch.log(-torch.log(torch.rand(n, a.elites, generator=self.generator, device=dev))),
                active,
            )
            self.mean = mean.clone()
        else:
            action, _, stats = self.step(s0, self.noise(n, a.particles, h, *noise_shape), active)
        self.skipped = self.skipped + stats["skipped"]
        self.stats = {k: v.clone() for k, v in stats.items() if k != "skipped"}
        return action.detach().cpu().numpy()


class ActorAgent:
    """The ReBRAC actor acting as it is, through the same batched call: the paired baseline."""

    def __init__(self, planner: Planner):
        self.planner, self.skipped, self.stats = planner, torch.zeros((), dtype=torch.long), {}

    def reset(self, mask):
        pass

    @torch.no_grad()
    def __call__(self, obs: np.ndarray, alive: np.ndarray) -> np.ndarray:
        s0 = torch.as_tensor(obs, device=self.planner.args.device)
        return self.planner.policy(self.planner.params, s0[:, None, :])[:, 0].cpu().numpy()


def step_ms(agents: dict, obs: np.ndarray, rounds: int = 3, steps: int = 5) -> dict:
    """ms per lockstep step (all N episodes planned at once) of each agent on the states `obs`: after one
    warm-up call, `rounds` interleaved rounds of `steps` calls; the fastest round counts (a shared machine
    slows the others)."""
    alive, best = np.ones(len(obs), bool), {}
    for agent in agents.values():
        agent(obs, alive)  # warm-up (and compilation)
    for _ in range(rounds):
        for name, agent in agents.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                agent(obs, alive)  # returns a host array: the step has finished
            best[name] = min(best.get(name, np.inf), (time.perf_counter() - t0) / steps * 1e3)
    return best


def match_itpo(args: Args, models: tuple, gamma: float, reward_scale: float) -> tuple[Args, dict]:
    """--match-itpo M E: the planner's rollouts n (MPPI's N, shooting's M) at which its step costs what an ITPO
    step at (M, E) costs. Each n of a doubling ladder is timed beside ITPO, on the episodes' first states, until
    one costs at least ITPO's; n is interpolated between the last two and timed once more (the reported ratio)."""
    actor, critic, world, reward = models
    knob = MATCHED[args.planner]
    envs = [make_eval_env_fn(args.env_id, args.dataset_id, verbose=False)() for _ in range(args.episodes)]
    obs = np.stack([env.reset(seed=args.eval_seed + i)[0] for i, env in enumerate(envs)]).astype(np.float32)
    for env in envs:
        env.close()
    m, e = args.match_itpo
    itpo_args = itpo_eval.Args(
        env_id=args.env_id, dataset_id=args.dataset_id, seed=args.seed, horizon=args.horizon, particles=m,
        inner_steps=e, world_model=args.world_model, episodes=args.episodes, device=args.device, compile=args.compile,
    )  # fmt: skip
    itpo = ITPOAgent(actor, critic, world, reward, itpo_args, gamma, reward_scale=reward_scale)

    def ratio(n: int) -> tuple[float, dict]:
        """The planner's cost at n over ITPO's, timed side by side."""
        planner = Planner(
            actor, critic, world, reward, replace(args, **{knob: n}, match_itpo=None, match_only=False), gamma,
            reward_scale,
        )  # fmt: skip
        ms = step_ms({"itpo": itpo, "planner": planner}, obs)
        return ms["planner"] / ms["itpo"], ms

    n = max(1, args.elites - args.policy_samples) if args.planner == "mppi" else 1  # MPPI needs k candidates
    ladder = {n: ratio(n)[0]}
    while ladder[n] < 1 and n < 64 * m:  # 64 M: where a flat cost (a GPU below saturation) stops the search
        n *= 2
        ladder[n] = ratio(n)[0]
    if ladder[n] >= 1 and len(ladder) > 1:  # between the last cheaper n and the first dearer one
        lo, hi = n // 2, n
        n = round(lo + (1 - ladder[lo]) / (ladder[hi] - ladder[lo]) * (hi - lo))
    r, ms = ratio(n)
    match = {
        "itpo": {"particles": m, "inner_steps": e},
        knob: n,
        "ms_per_step": ms,
        "ratio": r,
        "ladder": {str(k): v for k, v in ladder.items()},
        "episodes": args.episodes,
        "device": str(args.device),
    }
    print(
        f"[{args.planner}] --match-itpo {m} {e}: --{knob} {n} costs {ms['planner']:.1f} ms per lockstep step of "
        f"{args.episodes} episodes, ITPO {ms['itpo']:.1f} ({r:.2f}×)"
        + ("" if 0.8 <= r <= 1.25 else "; outside ±20 %: a busy machine, or a cost that n does not move; rerun")
    )
    return replace(args, **{knob: n}, match_itpo=None, match_only=False), match  # as if run with --{knob} n


def main(args: Args) -> dict:
    seed_everything(args.seed)
    actor, critic, world, reward, rebrac_args = load_models(args)
    gamma = args.gamma if args.gamma is not None else rebrac_args["gamma"]
    reward_scale = rebrac_args["reward_scale"]  # Q_φ was trained on rewards × this (AntMaze: 100)
    match, match_only = None, args.match_only
    if args.match_itpo is not None:
        args, match = match_itpo(args, (actor, critic, world, reward), gamma, reward_scale)
        seed_everything(args.seed)  # the evaluation as a run with --samples / --particles n given
    run_name = args.run_name or f"{args.planner}_{args.env_id}_seed{args.seed}_{int(time.time())}"
    writer = SummaryWriter(f"runs/{run_name}")
    settings = {**asdict(args), "gamma": gamma, "reward_scale": reward_scale}
    settings["models"] = models_info(model_paths(args))  # the budgets behind the result: steps, held-out errors
    writer.add_text("settings", json.dumps(settings))
    budget = (
        f"I={args.iterations} N={args.samples} N_π={args.policy_samples} k={args.elites} τ={args.temperature}"
        if args.planner == "mppi"
        else f"M={args.particles} E={args.shooting_steps} α={args.step_size}"
    )
    print(f"[{args.planner}] {args.env_id}: H={args.horizon} {budget} γ={gamma} world model {args.world_model}")
    summary = {"settings": settings, **({"match": match} if match else {})}
    if match_only:
        return save_summary(summary, run_name, writer)
    planner = Planner(actor, critic, world, reward, args, gamma, reward_scale)
    summary[args.planner] = evaluate(planner, args, writer, args.planner)
    if args.baseline:
        summary["rebrac"] = evaluate(ActorAgent(planner), args, writer, "rebrac")
        diff = np.array(summary[args.planner]["normalized_scores"]) - np.array(summary["rebrac"]["normalized_scores"])
        summary["paired_difference"] = {"mean": float(diff.mean()), "std": float(diff.std())}
        print(f"[{args.planner}] {args.planner} − ReBRAC on the same seeds: {diff.mean():+.1f} ± {diff.std():.1f}")
    save_summary(summary, run_name, writer)
    if not np.isfinite(summary[args.planner]["normalized_scores"]).all():
        sys.exit(f"error: non-finite normalised scores; see runs/{run_name}/summary.json")
    return summary


def save_summary(summary: dict, run_name: str, writer: SummaryWriter) -> dict:
    with open(f"runs/{run_name}/summary.json.tmp", "w") as f:  # then renamed: never a half-written summary
        json.dump(summary, f, indent=2)
    os.replace(f"runs/{run_name}/summary.json.tmp", f"runs/{run_name}/summary.json")
    print(f"[{summary['settings']['planner']}] summary: runs/{run_name}/summary.json")
    writer.close()
    return summary


if __name__ == "__main__":
    main(tyro.cli(Args))
