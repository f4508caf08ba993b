"""Inference-time policy optimisation (ITPO, Algorithm 1 of the paper), paired against ReBRAC.

    python itpo_eval.py --env-id hopper-medium-replay

At every real state s_t, for each of N evaluation episodes at once:
  1. draw fresh noise ε for M particles × H imagined steps (K reverse steps each), held fixed for the
     E inner steps;
  2. E times: roll out s̃_0 = s_t, ã_j = π_ψ(s̃_j), s̃_{j+1} = f_θ(s̃_j, ã_j, ε_j), and ascend
        Ĵ_t(ψ) = 1/M Σ_m [ Σ_{j<H} γ^j w_j r_ξ(s̃_j, ã_j) + γ^H w_H min_i Q_φ,i(s̃_H, π_ψ(s̃_H)) ]
     with ψ ← ψ + α ∇_ψ Ĵ_t(ψ)   (w_j: probability the imagined episode is still alive, from the
     reward model's termination head; 1 where there is none). f_θ, r_ξ, Q_φ are frozen.
  3. act a_t = π_ψ(s_t).
ψ starts every episode at the pretrained ReBRAC actor and is carried from step to step
(`--reset-every-step` restarts it each step). The N episodes each have their own ψ: the weights are
stacked along a leading axis and the actor is evaluated with `torch.func.functional_call` + `vmap`,
so one batched computation serves all episodes and all particles.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
import tyro
from torch.func import grad
from torch.utils.tensorboard import SummaryWriter

from common import (
    MUJOCO_ENVS,
    Precision,
    batched_policy,
    check_precision,
    checkpoint_path,
    imagine_rollout,
    make_eval_env_fn,
    models_info,
    normalized_score,
    parse_env_id,
    require,
    require_device,
    require_positive,
    run_episodes,
    seed_everything,
)


@dataclass
class Args:
    env_id: str = "hopper-medium-replay"
    """D4RL short name"""
    dataset_id: str | None = None
    """explicit Minari dataset id (default: resolved from --env-id); AntMaze is evaluated in the env it declares"""
    seed: int = 0
    """seed of the checkpoints to load and of the imagination noise"""
    horizon: int = 5
    """H, imagined steps per rollout"""
    particles: int = 4096
    """M, imagined rollouts per real state (the paper's, for a GPU; on a CPU 32–256: the cpu preset uses 32)"""
    inner_steps: int = 1
    """E, gradient steps on ψ per real state"""
    step_size: float = 5e-5
    """α, the step size of the ascent on ψ (the paper's grid: 5e-7, 5e-6, 5e-5, 5e-4); 0 = no adaptation"""
    optimizer: Literal["sgd", "adam"] = "sgd"
    """plain gradient ascent (the paper's) or Adam"""
    gamma: float | None = None
    """discount of the imagined return (default: the ReBRAC checkpoint's γ)"""
    reset_every_step: bool = False
    """restart ψ from the pretrained weights at every real step"""
    world_model: Literal["ddpm", "meanflow"] = "ddpm"
    """the DDPM of train_dynamics.py, or the one-step MeanFlow of meanflow_onestep.py"""
    episodes: int = 10
    """N, evaluation episodes, run in parallel"""
    eval_seed: int = 1000
    """episode i uses env seed eval_seed + i (tune with other seeds than you report)"""
    max_episode_steps: int | None = None
    """cut episodes at this many steps (default: the env's limit)"""
    baseline: bool = True
    """also evaluate the unadapted ReBRAC actor on the same seeds (a paired comparison)"""
    rebrac_checkpoint: str | None = None
    """default checkpoints/<env-id>/rebrac_seed<S>.pt"""
    dynamics_checkpoint: str | None = None
    """default checkpoints/<env-id>/dynamics_seed<S>.pt (or meanflow_seed<S>.pt with --world-model meanflow)"""
    reward_checkpoint: str | None = None
    """default checkpoints/<env-id>/reward_seed<S>.pt"""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    """torch device"""
    compile: bool = False
    """torch.compile the whole adaptation step, forward and backward (CUDA graphs on a GPU)"""
    precision: Precision = "fp32"
    """fp32, or bf16: the world model's network under bf16 autocast, its output back in fp32 (π_ψ, r_ξ,
    Q_φ, the sampler's arithmetic and ψ stay fp32: bf16 there turns ∇ψĴ much further). Even so, on trained
    hopper models bf16 turns ∇ψĴ as far as its sampling noise at M = 64 (results/README.md, Precision): report fp32"""
    run_name: str | None = None
    """name of the run folder under runs/ (default: itpo_<env-id>_seed<S>_<time>)"""
    ground_truth: bool = False
    """at every k-th real state, score the adaptation in a copy of the simulator (ground_truth.py; MuJoCo only)"""
    ground_truth_every: int = 1
    """k, probe every k-th real state"""
    ground_truth_horizon: int = 100
    """T, real steps of the critic's check: adapted ψ against the pretrained actor from the same state"""

    def __post_init__(self):
        parse_env_id(self.env_id)
        require_positive(self, "horizon", "particles", "inner_steps", "episodes", "max_episode_steps")
        require_positive(self, "ground_truth_every", "ground_truth_horizon")
        require(
            not self.ground_truth or parse_env_id(self.env_id)[0] in MUJOCO_ENVS,
            f"--ground-truth restores the simulator's state, which only the MuJoCo locomotion envs "
            f"(hopper, walker2d, halfcheetah) allow here, not {self.env_id}; drop --ground-truth",
        )
        require(
            math.isfinite(self.step_size) and self.step_size >= 0,
            f"--step-size must be a finite number ≥ 0, not {self.step_size}",
        )
        require(self.gamma is None or 0 < self.gamma <= 1, f"--gamma must be in (0, 1], not {self.gamma}")
        require(self.eval_seed >= 0, f"--eval-seed must be ≥ 0 (gymnasium's seeds are), not {self.eval_seed}")
        require_device(self)


# ---------------------------------------------------------------------------------------------
# Loading the frozen models
# ---------------------------------------------------------------------------------------------
def model_paths(args: Args) -> dict:
    """{stage: checkpoint} of the models args names (default: the path rule of common.checkpoint_path)."""
    world = "dynamics" if args.world_model == "ddpm" else "meanflow"
    given = {"rebrac": args.rebrac_checkpoint, world: args.dynamics_checkpoint, "reward": args.reward_checkpoint}
    return {stage: path or checkpoint_path(args.env_id, stage, args.seed) for stage, path in given.items()}


def load_models(args: Args):
    """(actor, critic, world model, reward model, rebrac args) for args.env_id, on args.device."""
    # imported here, not at the top: ITPOAgent with your own models needs only this file and common.py
    from meanflow_onestep import load_meanflow
    from rebrac import load_rebrac
    from train_dynamics import load_dynamics
    from train_reward import load_reward

    env_id, seed, (rebrac_path, world_path, reward_path) = args.env_id, args.seed, model_paths(args).values()
    actor, critic, rebrac = load_rebrac(rebrac_path, env_id, seed)
    world = (load_dynamics if args.world_model == "ddpm" else load_meanflow)(world_path, env_id, seed)
    reward = load_reward(reward_path, env_id, seed)
    for name, model in (("world model", world), ("reward model", reward)):
        if model.config["obs_dim"] != rebrac["obs_dim"] or model.config["act_dim"] != rebrac["act_dim"]:
            sys.exit(
                f"error: the {name} has (obs_dim, act_dim) = ({model.config['obs_dim']}, "
                f"{model.config['act_dim']}) but ReBRAC has ({rebrac['obs_dim']}, {rebrac['act_dim']})"
            )
    frozen = [m.to(args.device).eval().requires_grad_(False) for m in (actor, critic, world, reward)]
    return (*frozen, rebrac["args"])


# ---------------------------------------------------------------------------------------------
# The gradient of the imagined return Ĵ_t(ψ) (common.py), for N episodes × M particles at once
# ---------------------------------------------------------------------------------------------
def inner_step(policy, params, critic, world, reward, s0, eps, gamma, reward_scale=1.0, precision="fp32"):
    """Ĵ [N] and ∇_ψ Ĵ (one gradient per episode: the episodes' objectives are independent, so the
    gradient of their sum is each episode's own)."""

    def total(p):
        objective = imagine_rollout(policy, p, critic, world, reward, s0, eps, gamma, reward_scale, precision)
        return objective.sum(), objective

    grads, objective = grad(total, has_aux=True)(params)
    return objective, grads


def per_episode(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape [N] to broadcast against a stacked parameter `like` [N, ...]."""
    return x.view(-1, *([1] * (like.dim() - 1)))


def ascend(params, grads, moments, steps, ok, optimizer: str, step_size: float):
    """ψ ← ψ + α·∇ψĴ (or an Adam step) for the episodes where `ok` and the new ψ is finite; the others
    keep ψ and their Adam moments. Returns (params, moments, steps, kept [N] bool)."""
    if optimizer == "sgd":
        new, new_moments, new_steps = {k: p + step_size * grads[k] for k, p in params.items()}, moments, steps
    else:
        new, new_moments, new_steps = {}, {}, steps + 1
        for k, p in params.items():
            m1 = 0.9 * moments[k][0] + 0.1 * grads[k]
            m2 = 0.999 * moments[k][1] + 0.001 * grads[k] ** 2
            t = per_episode(new_steps, p)
            new[k] = p + step_size * (m1 / (1 - 0.9**t)) / ((m2 / (1 - 0.999**t)).sqrt() + 1e-8)
            new_moments[k] = (m1, m2)
    finite = torch.stack([torch.isfinite(v).flatten(1).all(1) for v in new.values()]).all(0)
    kept = ok & finite
    params = {k: torch.where(per_episode(kept, p), new[k], p) for k, p in params.items()}
    if optimizer == "adam":
        moments = {
            k: tuple(torch.where(per_episode(kept, n), n, o) for n, o in zip(new_moments[k], moments[k]))
            for k in moments
        }
        steps = torch.where(kept, new_steps, steps)
    return params, moments, steps, kept


class ITPOAgent:
    """Holds one ψ per evaluation episode and adapts those of the alive episodes before each action.

    Every tensor keeps the shape [N, ...] for the whole evaluation (a finished episode keeps its slot,
    masked out), so a compiled step never recompiles, and nothing is read back to the host inside the
    adaptation: its statistics stay tensors until they are logged."""

    def __init__(
        self, actor, critic, world, reward, args: Args, gamma: float, adapt: bool = True, reward_scale: float = 1.0
    ):
        self.critic, self.world, self.reward, self.args, self.gamma = critic, world, reward, args, gamma
        self.reward_scale = reward_scale  # the critic's reward units (ReBRAC's --reward-scale)
        self.adapt = adapt
        self.policy = batched_policy(actor)
        self.pretrained = {k: v.detach() for k, v in actor.named_parameters()}
        n, dev = args.episodes, args.device
        self.params = {k: v.unsqueeze(0).repeat(n, *[1] * v.dim()) for k, v in self.pretrained.items()}
        self.moments = {k: (torch.zeros_like(v), torch.zeros_like(v)) for k, v in self.params.items()}
        self.steps = torch.zeros(n, device=dev)
        self.generator = torch.Generator(device=dev).manual_seed(args.seed)
        self.skipped = torch.zeros((), dtype=torch.long, device=dev)  # non-finite inner steps: ψ kept
        self.stats: dict[str, torch.Tensor] = {}
        self.last_adaptation: dict | None = None  # set by each adapting call (see __call__)
        self.adapt_step = self._adapt_step
        if args.compile:  # the whole step: E rollouts, their backward passes and the ascent
            mode = "reduce-overhead" if str(dev).startswith("cuda") else None
            self.adapt_step = torch.compile(self._adapt_step, mode=mode)

    def reset(self, mask: torch.Tensor) -> None:
        """Episodes where `mask` [N] is true restart from the pretrained ψ with fresh Adam moments."""
        for k, v in self.params.items():
            m = per_episode(mask, v)
            self.params[k] = torch.where(m, self.pretrained[k], v)
            self.moments[k] = tuple(torch.where(m, 0.0, x) for x in self.moments[k])
        self.steps = torch.where(mask, 0.0, self.steps)

    def _adapt_step(self, params, moments, steps, s0, eps, active):
        """E inner steps of Algorithm 1 at the states s0 [N, d] with the noise eps, for the active episodes."""
        stats = {"skipped": torch.zeros((), dtype=torch.long, device=s0.device)}
        for e in range(self.args.inner_steps):
            objective, grads = inner_step(
                self.policy,
                params,
                self.critic,
                self.world,
                self.reward,
                s0,
                eps,
                self.gamma,
                self.reward_scale,
                self.args.precision,
            )
            grad_sq = sum(g.flatten(1).pow(2).sum(1) for g in grads.values())
            ok = active & torch.isfinite(objective) & torch.isfinite(grad_sq)
            params, moments, steps, kept = ascend(
                params, grads, moments, steps, ok, self.args.optimizer, self.args.step_size
            )
            stats["skipped"] = stats["skipped"] + (active & ~kept).sum()
            if e == 0:
                count = kept.sum().clamp(min=1)
                stats["imagined_return"] = torch.where(kept, objective, 0.0).sum() / count
                stats["grad_norm"] = torch.where(kept, grad_sq, 0.0).sqrt().sum() / count
        drift = sum((params[k] - self.pretrained[k]).flatten(1).pow(2).sum(1) for k in params).sqrt()
        stats["psi_drift"] = torch.where(active, drift, 0.0).sum() / active.sum().clamp(min=1)
        return params, moments, steps, stats

    def __call__(self, obs: np.ndarray, alive: np.ndarray) -> np.ndarray:
        """The `act` of `run_episodes`: adapt ψ of each alive episode at its state, then act."""
        dev = self.args.device
        s0 = torch.as_tensor(obs, device=dev)
        active = torch.as_tensor(alive, device=dev)
        if self.args.reset_every_step:
            self.reset(active)
        if self.adapt:
            noise_shape = (len(obs), self.args.particles, self.args.horizon, *self.world.noise_shape)
            # fresh noise at each real state, the same for its E inner steps
            eps = torch.randn(noise_shape, generator=self.generator, device=dev, dtype=s0.dtype)
            if self.args.compile and str(dev).startswith("cuda"):
                torch.compiler.cudagraph_mark_step_begin()
            before = self.params
            params, moments, steps, stats = self.adapt_step(self.params, self.moments, self.steps, s0, eps, active)
            # CUDA graphs reuse their output buffers at the next replay: keep copies
            self.params = {k: v.clone() for k, v in params.items()}
            self.moments = {k: tuple(x.clone() for x in m) for k, m in moments.items()}
            self.steps = steps.clone()
            self.stats = {k: v.clone() for k, v in stats.items()}
            self.skipped = self.skipped + self.stats["skipped"]
            # ψ before this step's E inner steps and its noise ε (references, no copies), for --ground-truth
            self.last_adaptation = {"params_before": before, "eps": eps}
        with torch.no_grad():
            actions = self.policy(self.params, s0[:, None, :])[:, 0]  # a_t = π_ψ(s_t)
        return actions.cpu().numpy()


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------
def evaluate(agent: ITPOAgent, args: Args, writer: SummaryWriter | None, tag: str, probe=None) -> dict:
    """Run the episodes with `agent` in the dataset's evaluation env (`make_eval_env_fn`); per-episode returns
    and scores, wall seconds per step, the episode limit that applied ("episode_limit") and the env they
    ran in ("env", whose max_episode_steps is the env's own limit). `probe`: the hook of `run_episodes`."""
    seeds = list(range(args.eval_seed, args.eval_seed + args.episodes))
    make_env = make_eval_env_fn(args.env_id, args.dataset_id, verbose=tag == "itpo")
    agent.reset(torch.ones(args.episodes, dtype=torch.bool, device=args.device))  # a new episode: pretrained ψ
    counter = {"t": 0, "last": time.time()}

    def on_step():
        now = time.time()
        if writer is not None:
            writer.add_scalar(f"{tag}/step_latency_s", now - counter["last"], counter["t"])
            for k, v in agent.stats.items():
                writer.add_scalar(f"{tag}/{k}", float(v), counter["t"])
        counter["t"], counter["last"] = counter["t"] + 1, now

    t0 = time.time()
    result = run_episodes(
        make_env, args.env_id, seeds, agent, args.max_episode_steps, on_step, progress=tag, probe=probe
    )
    wall = time.time() - t0
    acting = wall - (probe.seconds if probe is not None else 0.0)  # the per-step costs leave out ground-truth probes
    scores = normalized_score(args.env_id, result["outcomes"])
    env_limit = result["env"]["max_episode_steps"]  # the env's own limit (its TimeLimit)
    cuts = [n for n in (args.max_episode_steps, env_limit) if n]
    summary = {
        "returns": result["returns"],
        "lengths": result["lengths"],
        "successes": result["successes"],
        "normalized_scores": scores.tolist(),
        "mean": float(scores.mean()),
        "std": float(scores.std()),
        "wall_seconds": wall,
        # a lockstep step plans every episode, ended ones too: per episode, an env step's cost whatever the scores
        "seconds_per_step": acting / max(counter["t"], 1),
        "seconds_per_env_step": acting / max(counter["t"] * args.episodes, 1),
        "skipped_updates": int(agent.skipped),
        # the limit the episodes ran under: --max-episode-steps where it is below the env's own
        "episode_limit": min(cuts) if cuts else None,
        # the env as built: id, its own max_episode_steps and, for AntMaze, the maze with its start and goal cells
        "env": result["env"],
    }
    if args.env_id.startswith("antmaze"):
        print(
            f"[{tag}] success rate {np.mean(result['successes']):.2f} ({int(np.sum(result['successes']))}"
            f"/{args.episodes}) in {result['env']['id']}"
        )
    print(
        f"[{tag}] normalised score {summary['mean']:.1f} ± {summary['std']:.1f} over {args.episodes} episodes; "
        f"{summary['seconds_per_env_step'] * 1e3:.1f} ms per env step; {summary['skipped_updates']} skipped "
        f"(non-finite) updates; episodes of at most {summary['episode_limit']} steps"
        + (
            f" (cut by --max-episode-steps; the env's own limit is {env_limit})"
            if summary["episode_limit"] != env_limit
            else ""
        )
    )
    return summary


def main(args: Args) -> dict:
    require(
        args.dataset_id is None or args.env_id.startswith("antmaze"),
        f"--dataset-id chooses the evaluation env of AntMaze datasets only; {args.env_id} is evaluated in its "
        f"MuJoCo env whatever the dataset: drop --dataset-id",
    )
    seed_everything(args.seed)
    check_precision(args.precision, args.device, "itpo")
    actor, critic, world, reward, rebrac_args = load_models(args)
    gamma = args.gamma if args.gamma is not None else rebrac_args["gamma"]
    reward_scale = rebrac_args["reward_scale"]  # Q_φ was trained on rewards × this (AntMaze: 100)
    run_name = args.run_name or f"itpo_{args.env_id}_seed{args.seed}_{int(time.time())}"
    writer = SummaryWriter(f"runs/{run_name}")
    settings = {**asdict(args), "gamma": gamma, "reward_scale": reward_scale, "noise_shape": list(world.noise_shape)}
    settings["models"] = models_info(model_paths(args))  # the budgets behind the result: steps, held-out errors
    writer.add_text("settings", json.dumps(settings))
    print(
        f"[itpo] {args.env_id}: H={args.horizon} M={args.particles} E={args.inner_steps} α={args.step_size} "
        f"({args.optimizer}) γ={gamma} world model {args.world_model} (noise per step {tuple(world.noise_shape)}), "
        f"{args.episodes} episodes on {args.device}, {args.precision}"
    )
    if not str(args.device).startswith("cuda") and args.particles > 256:  # M = 4096 is a GPU's setting
        print(
            f"[itpo] note: M={args.particles} on a CPU: about {1.15 * args.particles * args.episodes / 10:.0f} ms "
            f"per env step (1.15 ms per particle at 10 episodes on this project's CPUs); try --particles 32 to 256"
        )
    if args.compile and not str(args.device).startswith("cuda"):
        print("[itpo] note: --compile on a CPU compiles for minutes (over 9 seen) before the first real step")
    itpo = ITPOAgent(actor, critic, world, reward, args, gamma, reward_scale=reward_scale)
    probe = None
    if args.ground_truth:  # score every k-th adaptation in a copy of the simulator (its time counts in wall_seconds)
        from ground_truth import GroundTruth

        make_env = make_eval_env_fn(args.env_id, args.dataset_id, verbose=False)
        probe = GroundTruth(itpo, make_env, args.ground_truth_every, args.ground_truth_horizon, writer)
    summary = {"settings": settings, "itpo": evaluate(itpo, args, writer, "itpo", probe)}
    if probe is not None:
        summary["itpo"]["ground_truth"] = probe.finish(f"runs/{run_name}")
    if args.baseline:  # same code path with no adaptation: ψ stays the pretrained actor
        rebrac = ITPOAgent(actor, critic, world, reward, args, gamma, adapt=False)
        summary["rebrac"] = evaluate(rebrac, args, writer, "rebrac")
        diff = np.array(summary["itpo"]["normalized_scores"]) - np.array(summary["rebrac"]["normalized_scores"])
        summary["paired_difference"] = {"mean": float(diff.mean()), "std": float(diff.std())}
        print(f"[itpo] ITPO − ReBRAC on the same seeds: {diff.mean():+.1f} ± {diff.std():.1f}")
    with open(f"runs/{run_name}/summary.json.tmp", "w") as f:  # then renamed: never a half-written summary
        json.dump(summary, f, indent=2)
    os.replace(f"runs/{run_name}/summary.json.tmp", f"runs/{run_name}/summary.json")
    print(f"[itpo] summary: runs/{run_name}/summary.json")
    writer.close()
    bad = [m for m in ("itpo", "rebrac") if m in summary and not np.isfinite(summary[m]["normalized_scores"]).all()]
    if bad:
        sys.exit(f"error: non-finite normalised scores for {', '.join(bad)}; see runs/{run_name}/summary.json")
    return summary


if __name__ == "__main__":
    main(tyro.cli(Args))
