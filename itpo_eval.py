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
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import tyro
from torch.func import functional_call, vmap
from torch.utils.tensorboard import SummaryWriter

from collect_dataset import make_env, normalized_score, parse_env_id, seed_everything
from rebrac import load_rebrac, run_episodes
from train_dynamics import load_dynamics
from train_reward import load_reward


@dataclass
class Args:
    env_id: str = "hopper-medium-replay"
    """D4RL short name"""
    seed: int = 0
    """seed of the checkpoints to load and of the imagination noise"""
    horizon: int = 5
    """H, imagined steps per rollout"""
    particles: int = 4096
    """M, imagined rollouts per real state (lower it on a CPU: 64–256)"""
    inner_steps: int = 1
    """E, gradient steps on ψ per real state"""
    step_size: float = 5e-5
    """α, the step size of the ascent on ψ (the paper's grid: 5e-7, 5e-6, 5e-5, 5e-4)"""
    optimizer: str = "sgd"
    """'sgd' (plain gradient ascent, the paper's) or 'adam'"""
    gamma: float | None = None
    """discount of the imagined return (default: the ReBRAC checkpoint's γ)"""
    reset_every_step: bool = False
    """restart ψ from the pretrained weights at every real step"""
    world_model: str = "ddpm"
    """'ddpm' (train_dynamics.py) or 'meanflow' (meanflow_onestep.py, one network evaluation)"""
    episodes: int = 10
    """evaluation episodes, run in parallel"""
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
    """torch.compile the inner step (worth it on CUDA)"""
    run_name: str | None = None
    """name of the run folder under runs/ (default: itpo_<env-id>_seed<S>_<time>)"""


# ---------------------------------------------------------------------------------------------
# Loading the frozen models
# ---------------------------------------------------------------------------------------------
def load_models(args: Args):
    """(actor, critic, world model, reward model, rebrac args) for args.env_id, on args.device."""
    ckpt_dir = f"checkpoints/{args.env_id}"
    path = args.rebrac_checkpoint or f"{ckpt_dir}/rebrac_seed{args.seed}.pt"
    actor, critic, rebrac = load_rebrac(path, args.env_id, args.seed)
    if args.world_model == "ddpm":
        world = load_dynamics(args.dynamics_checkpoint or f"{ckpt_dir}/dynamics_seed{args.seed}.pt", args.env_id)
    elif args.world_model == "meanflow":
        from meanflow_onestep import load_meanflow

        world = load_meanflow(args.dynamics_checkpoint or f"{ckpt_dir}/meanflow_seed{args.seed}.pt", args.env_id)
    else:
        raise SystemExit(f"error: --world-model must be 'ddpm' or 'meanflow', not {args.world_model!r}")
    reward = load_reward(args.reward_checkpoint or f"{ckpt_dir}/reward_seed{args.seed}.pt", args.env_id)
    for name, model in (("world model", world), ("reward model", reward)):
        if model.config["obs_dim"] != rebrac["obs_dim"] or model.config["act_dim"] != rebrac["act_dim"]:
            raise SystemExit(f"error: the {name} has (obs_dim, act_dim) = ({model.config['obs_dim']}, "
                             f"{model.config['act_dim']}) but ReBRAC has ({rebrac['obs_dim']}, {rebrac['act_dim']})")
    frozen = [m.to(args.device).eval().requires_grad_(False) for m in (actor, critic, world, reward)]
    return (*frozen, rebrac["args"])


# ---------------------------------------------------------------------------------------------
# The imagined return Ĵ_t(ψ) and its gradient, for N episodes × M particles at once
# ---------------------------------------------------------------------------------------------
def batched_policy(actor: torch.nn.Module):
    """π_ψ with one ψ per episode: params {name: [N, ...]}, obs [N, ..., d] -> actions [N, ..., m]."""
    return vmap(lambda params, obs: functional_call(actor, params, (obs,)))


def imagine_rollout(policy, params, critic, world, reward, s0: torch.Tensor, eps: torch.Tensor, gamma: float):
    """Ĵ_t(ψ) per episode: s0 [N, d], eps [N, M, H, *noise_shape] -> [N] (mean over the M particles).

    The imagined episode may end (hopper and walker2d fall): w_j = Π_{i<j} (1 − p_done(s̃_i, ã_i))
    weights the reward of step j and the terminal value, so a fall earns nothing after it."""
    n, m, horizon = eps.shape[:3]
    s = s0[:, None, :].expand(n, m, s0.shape[-1])
    alive = torch.ones(n, m, device=s0.device, dtype=s0.dtype)
    ret = torch.zeros(n, m, device=s0.device, dtype=s0.dtype)
    for j in range(horizon):
        a = policy(params, s)                                     # ã_j = π_ψ(s̃_j)
        r, done_logit = reward(s, a)                              # r_ξ(s̃_j, ã_j)
        ret = ret + gamma**j * alive * r
        if done_logit is not None:
            alive = alive * (1 - torch.sigmoid(done_logit))
        s = world.f(s, a, eps[:, :, j])                           # s̃_{j+1} = f_θ(s̃_j, ã_j, ε_j)
    q = critic(s, policy(params, s)).min(0).values                # min_i Q_φ,i(s̃_H, π_ψ(s̃_H))
    return (ret + gamma**horizon * alive * q).mean(-1)


def inner_step(policy, params, critic, world, reward, s0, eps, gamma, rollout=imagine_rollout):
    """Ĵ [N] and ∇_ψ Ĵ (one gradient per episode: the episodes' objectives are independent).
    `rollout` may be a torch.compile'd imagine_rollout; autograd then runs its compiled backward."""
    params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    objective = rollout(policy, params, critic, world, reward, s0, eps, gamma)
    grads = torch.autograd.grad(objective.sum(), list(params.values()))
    return objective.detach(), dict(zip(params, grads))


def per_episode(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape [N] to broadcast against a stacked parameter `like` [N, ...]."""
    return x.view(-1, *([1] * (like.dim() - 1)))


class ITPOAgent:
    """Holds one ψ per evaluation episode and adapts the alive ones before each action."""

    def __init__(self, actor, critic, world, reward, args: Args, gamma: float, adapt: bool = True):
        self.critic, self.world, self.reward, self.args, self.gamma, self.adapt = critic, world, reward, args, gamma, adapt
        self.policy = batched_policy(actor)
        self.pretrained = {k: v.detach() for k, v in actor.named_parameters()}
        n = args.episodes
        self.params = {k: v.unsqueeze(0).repeat(n, *[1] * v.dim()) for k, v in self.pretrained.items()}
        self.adam = {k: (torch.zeros_like(v), torch.zeros_like(v)) for k, v in self.params.items()}
        self.adam_t = torch.zeros(n, device=args.device)
        self.generator = torch.Generator(device=args.device).manual_seed(args.seed)
        self.skipped = 0      # inner steps whose imagined return or gradient was NaN/inf: ψ kept
        self.rollout = torch.compile(imagine_rollout) if args.compile else imagine_rollout
        self.stats: dict[str, float] = {}

    def reset_params(self, idx: torch.Tensor) -> None:
        for k, v in self.params.items():
            v[idx] = self.pretrained[k]
            self.adam[k][0][idx] = 0
            self.adam[k][1][idx] = 0
        self.adam_t[idx] = 0

    def ascend(self, params, grads, idx, ok):
        """ψ ← ψ + α·∇ψĴ (or an Adam step) for the episodes whose step is finite (`ok`)."""
        a = self.args
        if a.optimizer == "sgd":
            return {k: torch.where(per_episode(ok, p), p + a.step_size * grads[k], p) for k, p in params.items()}
        t = self.adam_t[idx] + ok.float()
        self.adam_t[idx] = t
        out = {}
        for k, p in params.items():
            keep = per_episode(ok, p)  # a skipped step leaves ψ and its moments as they were
            g = torch.where(keep, grads[k], torch.zeros_like(grads[k]))
            m1_old, m2_old = self.adam[k][0][idx], self.adam[k][1][idx]
            m1 = torch.where(keep, 0.9 * m1_old + 0.1 * g, m1_old)
            m2 = torch.where(keep, 0.999 * m2_old + 0.001 * g * g, m2_old)
            self.adam[k][0][idx], self.adam[k][1][idx] = m1, m2
            tt = per_episode(t.clamp(min=1), p)
            update = a.step_size * (m1 / (1 - 0.9**tt)) / ((m2 / (1 - 0.999**tt)).sqrt() + 1e-8)
            out[k] = torch.where(keep, p + update, p)
        return out

    def __call__(self, obs: np.ndarray, alive: np.ndarray) -> np.ndarray:
        """The `act` of `run_episodes`: adapt ψ of each alive episode at its state, then act."""
        a, dev = self.args, self.args.device
        idx = torch.as_tensor(np.flatnonzero(alive), device=dev)
        s0 = torch.as_tensor(obs[alive], device=dev)
        if a.reset_every_step:
            self.reset_params(idx)
        params = {k: v[idx] for k, v in self.params.items()}
        if self.adapt and a.inner_steps > 0:
            noise_shape = (len(idx), a.particles, a.horizon, *self.world.noise_shape)
            eps = torch.randn(noise_shape, generator=self.generator, device=dev)   # fixed over the E steps
            for e in range(a.inner_steps):
                objective, grads = inner_step(self.policy, params, self.critic, self.world, self.reward,
                                              s0, eps, self.gamma, self.rollout)
                grad_sq = sum(g.flatten(1).pow(2).sum(1) for g in grads.values())
                ok = torch.isfinite(objective) & torch.isfinite(grad_sq)
                self.skipped += int((~ok).sum())
                params = self.ascend(params, grads, idx, ok)
                if e == 0:
                    self.stats["imagined_return"] = float(objective[ok].mean()) if ok.any() else math.nan
                    self.stats["grad_norm"] = float(grad_sq[ok].sqrt().mean()) if ok.any() else math.nan
            for k in self.params:
                self.params[k][idx] = params[k].detach()
            drift = sum((params[k] - self.pretrained[k]).flatten(1).pow(2).sum(1) for k in params)
            self.stats["psi_drift"] = float(drift.sqrt().mean())
        with torch.no_grad():
            actions = self.policy(params, s0[:, None, :])[:, 0]    # a_t = π_ψ(s_t)
        out = np.zeros((len(obs), actions.shape[-1]), np.float32)
        out[alive] = actions.cpu().numpy()
        return out


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------
def evaluate(agent: ITPOAgent, args: Args, writer: SummaryWriter | None, tag: str) -> dict:
    """Run the episodes with `agent`; per-episode returns and scores, and wall seconds per step."""
    seeds = list(range(args.eval_seed, args.eval_seed + args.episodes))
    agent.reset_params(torch.arange(args.episodes, device=args.device))
    counter = {"t": 0, "last": time.time()}

    def on_step():
        now = time.time()
        if writer is not None:
            writer.add_scalar(f"{tag}/step_latency_s", now - counter["last"], counter["t"])
            for k, v in agent.stats.items():
                writer.add_scalar(f"{tag}/{k}", v, counter["t"])
        counter["t"], counter["last"] = counter["t"] + 1, now

    t0 = time.time()
    result = run_episodes(lambda: make_env(args.env_id), args.env_id, seeds, agent, args.max_episode_steps, on_step)
    wall = time.time() - t0
    scores = normalized_score(args.env_id, result["outcomes"])
    summary = {
        "returns": result["returns"], "lengths": result["lengths"], "successes": result["successes"],
        "normalized_scores": scores.tolist(), "mean": float(scores.mean()), "std": float(scores.std()),
        "wall_seconds": wall,
        # one lockstep step advances every alive episode; per env step divides by all transitions
        "seconds_per_step": wall / max(counter["t"], 1),
        "seconds_per_env_step": wall / max(sum(result["lengths"]), 1),
        "skipped_updates": agent.skipped,
    }
    print(f"[{tag}] normalised score {summary['mean']:.1f} ± {summary['std']:.1f} over {args.episodes} episodes; "
          f"{summary['seconds_per_env_step'] * 1e3:.1f} ms per env step; {agent.skipped} skipped (non-finite) updates")
    return summary


def main(args: Args) -> dict:
    parse_env_id(args.env_id)
    if args.optimizer not in ("sgd", "adam"):
        raise SystemExit(f"error: --optimizer must be 'sgd' or 'adam', not {args.optimizer!r}")
    seed_everything(args.seed)
    actor, critic, world, reward, rebrac_args = load_models(args)
    gamma = args.gamma if args.gamma is not None else rebrac_args["gamma"]
    run_name = args.run_name or f"itpo_{args.env_id}_seed{args.seed}_{int(time.time())}"
    writer = SummaryWriter(f"runs/{run_name}")
    settings = {**asdict(args), "gamma": gamma, "noise_shape": list(world.noise_shape)}
    writer.add_text("settings", json.dumps(settings))
    print(f"[itpo] {args.env_id}: H={args.horizon} M={args.particles} E={args.inner_steps} α={args.step_size} "
          f"({args.optimizer}) γ={gamma} world model {args.world_model} (noise per step {tuple(world.noise_shape)}), "
          f"{args.episodes} episodes on {args.device}")
    summary = {"settings": settings, "itpo": evaluate(ITPOAgent(actor, critic, world, reward, args, gamma), args, writer, "itpo")}
    if args.baseline:  # the same code path with no adaptation: ψ stays the pretrained actor
        summary["rebrac"] = evaluate(ITPOAgent(actor, critic, world, reward, args, gamma, adapt=False), args, writer, "rebrac")
        diff = np.array(summary["itpo"]["normalized_scores"]) - np.array(summary["rebrac"]["normalized_scores"])
        summary["paired_difference"] = {"mean": float(diff.mean()), "std": float(diff.std())}
        print(f"[itpo] ITPO − ReBRAC on the same seeds: {diff.mean():+.1f} ± {diff.std():.1f}")
    os.makedirs(f"runs/{run_name}", exist_ok=True)
    with open(f"runs/{run_name}/summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    print(f"[itpo] summary: runs/{run_name}/summary.json")
    writer.close()
    return summary


if __name__ == "__main__":
    main(tyro.cli(Args))
