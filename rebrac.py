"""ReBRAC offline pretraining (π_ψ, Q_φ), a PyTorch port of CORL's `algorithms/offline/rebrac.py`.

    python rebrac.py --env-id hopper-medium-replay

Writes `checkpoints/<env-id>/rebrac_seed<S>.pt` (actor, critic, targets, optimisers, step, args,
evaluation history), which `itpo_eval.py` adapts at inference time. `Actor` and `Critic` are defined
here and imported by the later stages. Hyper-parameters follow CORL's ReBRAC configs.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from common import (
    Precision,
    StopOnSignal,
    atomic_torch_save,
    autocast,
    check_precision,
    check_resume,
    checkpoint_path,
    load_checkpoint,
    load_dataset,
    load_rng_state,
    parse_env_id,
    require,
    require_device,
    require_positive,
    require_snapshot_every,
    resume_checkpoint,
    run_episodes,
    save_rng_state,
    seed_everything,
    snapshot_path,
)

# (β_a, β_c) per dataset, from CORL's ReBRAC configs (`configs/offline/rebrac/<env>/<dataset>_v2.yaml`).
REBRAC_BETAS = {
    "halfcheetah-random": (0.001, 0.1),
    "halfcheetah-medium": (0.001, 0.01),
    "halfcheetah-expert": (0.01, 0.01),
    "halfcheetah-medium-expert": (0.01, 0.1),
    "halfcheetah-medium-replay": (0.01, 0.001),
    "halfcheetah-full-replay": (0.001, 0.1),
    "hopper-random": (0.001, 0.01),
    "hopper-medium": (0.01, 0.01),
    "hopper-expert": (0.1, 0.1),
    "hopper-medium-expert": (0.1, 0.01),
    "hopper-medium-replay": (0.05, 0.5),
    "hopper-full-replay": (0.01, 0.01),
    "walker2d-random": (0.01, 0.0),
    "walker2d-medium": (0.05, 0.1),
    "walker2d-expert": (0.01, 0.5),
    "walker2d-medium-expert": (0.01, 0.01),
    "walker2d-medium-replay": (0.05, 0.01),
    "walker2d-full-replay": (0.01, 0.01),
    "antmaze-umaze": (0.003, 0.002),
    "antmaze-umaze-diverse": (0.003, 0.001),
    "antmaze-medium-play": (0.001, 0.0005),
    "antmaze-medium-diverse": (0.001, 0.0),
    "antmaze-large-play": (0.002, 0.001),
    "antmaze-large-diverse": (0.002, 0.002),
}
# Settings that differ between the MuJoCo and AntMaze families.
FAMILY_DEFAULTS = {
    "mujoco": dict(actor_lr=1e-3, critic_lr=1e-3, batch_size=1024, gamma=0.99, reward_scale=1.0),
    "antmaze": dict(actor_lr=3e-4, critic_lr=5e-5, batch_size=256, gamma=0.999, reward_scale=100.0),
}


@dataclass
class Args:
    env_id: str = "hopper-medium-replay"
    """D4RL short name (e.g. hopper-medium-replay, antmaze-large-diverse)"""
    dataset_id: str | None = None
    """explicit Minari dataset id (overrides the resolution from --env-id)"""
    seed: int = 0
    """seed of the run (networks, batches, evaluation)"""
    total_updates: int = 1_000_000
    """gradient updates of the critic (the actor is updated every `policy_freq`)"""
    actor_bc_coef: float | None = None
    """β_a, behaviour-cloning weight of the actor (default: the dataset's row of the table)"""
    critic_bc_coef: float | None = None
    """β_c, behaviour penalty in the critic target (default: the dataset's row of the table)"""
    actor_lr: float | None = None
    """actor learning rate (default 1e-3 MuJoCo, 3e-4 AntMaze)"""
    critic_lr: float | None = None
    """critic learning rate (default 1e-3 MuJoCo, 5e-5 AntMaze)"""
    batch_size: int | None = None
    """batch size (default 1024 MuJoCo, 256 AntMaze)"""
    gamma: float | None = None
    """discount (default 0.99 MuJoCo, 0.999 AntMaze)"""
    reward_scale: float | None = None
    """rewards are multiplied by this (default 1 MuJoCo, 100 AntMaze)"""
    hidden_dim: int = 256
    """width of the 3 hidden layers of actor and critic"""
    tau: float = 0.005
    """Polyak rate of the target networks"""
    policy_noise: float = 0.2
    """std of the target policy smoothing noise"""
    noise_clip: float = 0.5
    """clip of the target policy smoothing noise"""
    policy_freq: int = 2
    """actor and targets are updated every this many critic updates"""
    normalize_q: bool = True
    """λ = 1 / mean|Q| in the actor loss"""
    eval_every: int = 50_000
    """evaluate on the real env every this many updates"""
    eval_episodes: int = 10
    """evaluation episodes (seeds eval_seed .. eval_seed + n - 1)"""
    eval_seed: int = 1000
    """first evaluation seed"""
    checkpoint_every: int = 50_000
    """write the checkpoint every this many updates"""
    snapshot_every: int = 0
    """also keep the checkpoint of every this many updates beside the last one (<checkpoint>_step<N>.pt,
    loadable by itpo_eval.py like any other; a multiple of --eval-every); 0: none"""
    checkpoint: str | None = None
    """checkpoint path (default checkpoints/<env-id>/rebrac_seed<S>.pt)"""
    resume: bool = False
    """continue from the checkpoint at its saved step"""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    """torch device"""
    precision: Precision = "fp32"
    """fp32, or bf16: the forward passes under bf16 autocast (weights, optimiser state, losses and the
    checkpoint stay fp32); faster only on a GPU or a CPU with bf16 units (AMX, AVX512-BF16)"""
    compile: bool = False
    """torch.compile the update step, with CUDA graphs on a GPU (compiling costs about a minute)"""

    def __post_init__(self):
        parse_env_id(self.env_id)
        require_positive(
            self,
            "total_updates",
            "batch_size",
            "actor_lr",
            "critic_lr",
            "hidden_dim",
            "eval_every",
            "eval_episodes",
            "checkpoint_every",
            "policy_freq",
            "reward_scale",
        )
        require_snapshot_every(self)
        require_device(self)
        for name in ("gamma", "tau"):
            value = getattr(self, name)
            require(value is None or 0 < value <= 1, f"--{name} must be in (0, 1], not {value}")
        require(self.eval_seed >= 0, f"--eval-seed must be ≥ 0 (gymnasium's seeds are), not {self.eval_seed}")


def resolve_args(args: Args) -> Args:
    """Fill the per-dataset defaults that the user did not set."""
    env, _ = parse_env_id(args.env_id)
    family = FAMILY_DEFAULTS["antmaze" if env == "antmaze" else "mujoco"]
    beta_a, beta_c = REBRAC_BETAS[args.env_id]
    out = copy.copy(args)
    out.actor_bc_coef = beta_a if args.actor_bc_coef is None else args.actor_bc_coef
    out.critic_bc_coef = beta_c if args.critic_bc_coef is None else args.critic_bc_coef
    for k, v in family.items():
        if getattr(out, k) is None:
            setattr(out, k, v)
    if out.checkpoint is None:
        out.checkpoint = checkpoint_path(args.env_id, "rebrac", args.seed)
    return out


# ---------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------
def _init_linear(layer: nn.Linear | "EnsembleLinear", last_scale: float | None = None) -> None:
    """CORL's init: hidden weights U(±1/√fan_in), bias 0.1; last layer weights and bias U(±scale)."""
    fan_in = layer.weight.shape[-2 if isinstance(layer, EnsembleLinear) else -1]
    with torch.no_grad():
        if last_scale is None:
            layer.weight.uniform_(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
            layer.bias.fill_(0.1)
        else:
            layer.weight.uniform_(-last_scale, last_scale)
            layer.bias.uniform_(-last_scale, last_scale)


class Actor(nn.Module):
    """π_ψ(s): 3×256 ReLU MLP with tanh output, deterministic."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_dim: int = 256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, act_dim),
            nn.Tanh(),
        )
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        for layer in linears[:-1]:
            _init_linear(layer)
        _init_linear(linears[-1], last_scale=1e-3)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


class EnsembleLinear(nn.Module):
    """A linear layer for an ensemble: weight [E, in, out], input [E, ..., in] -> [E, ..., out]."""

    def __init__(self, in_dim: int, out_dim: int, ensemble_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(ensemble_size, 1, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(shape[0], -1, shape[-1])
        return torch.baddbmm(self.bias, x, self.weight).reshape(*shape[:-1], -1)


class Critic(nn.Module):
    """Q_φ,i(s, a), i = 1..2, each 3×256 Linear→ReLU→LayerNorm on concat(s, a); run as one ensemble."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_dim: int = 256, num_critics: int = 2):
        super().__init__()
        self.num_critics = num_critics
        dims = [obs_dim + act_dim, hidden_dim, hidden_dim, hidden_dim]
        self.hidden = nn.ModuleList(EnsembleLinear(i, o, num_critics) for i, o in zip(dims[:-1], dims[1:]))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_dim) for _ in range(3))
        self.out = EnsembleLinear(hidden_dim, 1, num_critics)
        for layer in self.hidden:
            _init_linear(layer)
        _init_linear(self.out, last_scale=3e-3)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """[..., obs_dim], [..., act_dim] -> Q values [num_critics, ...]."""
        x = torch.cat([obs, act], dim=-1)
        x = x.unsqueeze(0).expand(self.num_critics, *x.shape)
        for layer, norm in zip(self.hidden, self.norms):
            x = norm(F.relu(layer(x)))
        return self.out(x).squeeze(-1)


def load_rebrac(path: str, env_id: str, seed: int = 0) -> tuple[Actor, Critic, dict]:
    """The pretrained (π_ψ, Q_φ) and the checkpoint dict (refuses one made for another dataset)."""
    ckpt = load_checkpoint(path, env_id, "rebrac", seed)
    hidden = ckpt["args"]["hidden_dim"]
    actor, critic = Actor(ckpt["obs_dim"], ckpt["act_dim"], hidden), Critic(ckpt["obs_dim"], ckpt["act_dim"], hidden)
    actor.load_state_dict(ckpt["actor"])
    critic.load_state_dict(ckpt["critic"])
    return actor, critic, ckpt


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
def make_replay(data: dict[str, np.ndarray], reward_scale: float, device: str) -> dict[str, torch.Tensor]:
    """Dataset tensors on the device, with a′_data: the dataset's next action within the episode
    (at an episode's last transition there is none, and the transition's own action stands in)."""
    episode_end = (data["terminals"] > 0) | (data["timeouts"] > 0)
    episode_end[-1] = True
    next_actions = np.where(episode_end[:, None], data["actions"], np.roll(data["actions"], -1, axis=0))
    replay = {
        "obs": data["observations"],
        "actions": data["actions"],
        "rewards": data["rewards"] * reward_scale,
        "next_obs": data["next_observations"],
        "next_actions": next_actions,
        # Only true terminals stop bootstrapping; a timeout is a cut, not the end of the MDP.
        "dones": data["terminals"],
    }
    return {k: torch.as_tensor(np.asarray(v, dtype=np.float32), device=device) for k, v in replay.items()}


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------
def critic_target(
    batch,
    actor_target,
    critic_target_net,
    gamma,
    critic_bc_coef,
    policy_noise,
    noise_clip,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """r + γ(1 − done)·(min_i Q̄_i(s′, ã) − β_c‖ã − a′_data‖²), ã = clip(π̄(s′) + clip(σ·N(0,1), ±c), ±1)."""
    with torch.no_grad():
        next_action = actor_target(batch["next_obs"])
        if noise is None:
            noise = torch.randn_like(next_action)
        next_action = (next_action + (policy_noise * noise).clamp(-noise_clip, noise_clip)).clamp(-1, 1)
        bc_penalty = ((next_action - batch["next_actions"]) ** 2).sum(-1)
        next_q = critic_target_net(batch["next_obs"], next_action).min(0).values - critic_bc_coef * bc_penalty
        return batch["rewards"] + gamma * (1 - batch["dones"]) * next_q


def actor_loss_fn(actor, critic, batch, actor_bc_coef, normalize_q):
    """mean(β_a‖π(s) − a‖² − λ·min_i Q_i(s, π(s))), λ = stop_grad(1 / mean|Q|)."""
    pi = actor(batch["obs"])
    q = critic(batch["obs"], pi).min(0).values.float()  # fp32 under bf16 autocast: λ and the loss in fp32
    lmbda = 1.0 / q.abs().mean().detach() if normalize_q else torch.ones((), device=q.device)
    bc = ((pi - batch["actions"]) ** 2).sum(-1)
    return (actor_bc_coef * bc - lmbda * q).mean(), q.mean().detach(), lmbda, bc.mean().detach()


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """θ̄ ← (1 − τ)·θ̄ + τ·θ, all tensors in one foreach call."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


# ---------------------------------------------------------------------------------------------
# Evaluation on the real env
# ---------------------------------------------------------------------------------------------
def actor_policy(actor: nn.Module, device: str):
    """The deterministic actor as an `act` function for `run_episodes`."""

    @torch.no_grad()
    def act(obs: np.ndarray, alive: np.ndarray) -> np.ndarray:
        return actor(torch.as_tensor(obs, device=device)).cpu().numpy()

    return act


# ---------------------------------------------------------------------------------------------
# Training loop
# ---------------------------------------------------------------------------------------------
def train(args: Args) -> dict:
    args = resolve_args(args)
    seed_everything(args.seed)
    data, make_env, score = load_dataset(args.env_id, args.dataset_id)
    obs_dim, act_dim = data["observations"].shape[1], data["actions"].shape[1]
    replay = make_replay(data, args.reward_scale, args.device)
    n = replay["obs"].shape[0]

    actor = Actor(obs_dim, act_dim, args.hidden_dim).to(args.device)
    critic = Critic(obs_dim, act_dim, args.hidden_dim).to(args.device)
    actor_target, critic_target_net = copy.deepcopy(actor), copy.deepcopy(critic)
    # foreach: one kernel per operation over all tensors (bit for bit the per-tensor loop; `fused` is not)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=args.actor_lr, foreach=True)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=args.critic_lr, foreach=True)
    # history: the evaluation curve, [{"step", "score", "std", "seconds", "cpu_seconds"}], kept in the
    # checkpoint; seconds / cpu_seconds: wall-clock / this process's CPU time spent on updates so far
    # (resumes included, evaluations not): what a budget costs
    start, history, spent_before = 0, [], (0.0, 0.0)
    ckpt = resume_checkpoint(args.checkpoint, args.env_id, "rebrac", args.seed) if args.resume else None
    may_change = ("eval_episodes", "eval_seed", "checkpoint_every")  # the evaluation and saving, not the training
    if ckpt is not None and not check_resume(ckpt, args.checkpoint, args, "total_updates", may_change):
        print(
            f"[rebrac] {args.checkpoint} is already at update {ckpt['step']} of {args.total_updates}: nothing to train"
        )
        return {"score": ckpt["score"], "updates": 0, "seconds": 0.0}
    if ckpt is not None:
        for module, key in (
            (actor, "actor"),
            (critic, "critic"),
            (actor_target, "actor_target"),
            (critic_target_net, "critic_target"),
            (actor_opt, "actor_opt"),
            (critic_opt, "critic_opt"),
        ):
            module.load_state_dict(ckpt[key])
        for opt in (actor_opt, critic_opt):  # a checkpoint's param groups replace ours: keep foreach
            for group in opt.param_groups:
                group["foreach"] = True
        load_rng_state(ckpt["rng_state"], args.device)
        start, history = ckpt["step"], ckpt.get("history", [])
        spent_before = (ckpt.get("seconds", 0.0), ckpt.get("cpu_seconds", 0.0))
        print(f"[rebrac] resuming {args.checkpoint} at update {start}")

    check_precision(args.precision, args.device, "rebrac")

    def update(batch, update_actor: bool):
        # --precision bf16: the forward passes under autocast, their outputs back in fp32 for the losses
        with autocast(args.precision, args.device):
            target = critic_target(
                batch,
                actor_target,
                critic_target_net,
                args.gamma,
                args.critic_bc_coef,
                args.policy_noise,
                args.noise_clip,
            )
            q = critic(batch["obs"], batch["actions"])
        target, q = target.float(), q.float()
        critic_loss = ((q - target) ** 2).mean(1).sum(0)  # sum over the critics of each MSE
        critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        critic_opt.step()
        if not update_actor:
            return critic_loss.detach(), q.mean().detach(), None
        soft_update(actor_target, actor, args.tau)  # toward the pre-update actor, as CORL's: before the step
        # The actor's loss differentiates w.r.t. ψ only: frozen critic weights spare the backward pass their
        # weight gradients (a third of its matrix products), which the critic step would discard anyway.
        critic.requires_grad_(False)
        with autocast(args.precision, args.device):
            actor_loss, q_pi, lmbda, bc = actor_loss_fn(actor, critic, batch, args.actor_bc_coef, args.normalize_q)
        actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        actor_opt.step()
        critic.requires_grad_(True)
        soft_update(critic_target_net, critic, args.tau)
        return critic_loss.detach(), q.mean().detach(), (actor_loss.detach(), q_pi, lmbda, bc)

    # On CUDA, "reduce-overhead" replays the whole update as CUDA graphs: no Python or launch overhead.
    mode = "reduce-overhead" if str(args.device).startswith("cuda") else None
    step_fn = torch.compile(update, mode=mode) if args.compile else update
    run_name = f"rebrac_{args.env_id}_seed{args.seed}_{int(time.time())}"
    writer = SummaryWriter(f"runs/{run_name}")
    writer.add_text("args", str(asdict(args)))
    eval_seeds = list(range(args.eval_seed, args.eval_seed + args.eval_episodes))
    last_score, eval_env = float("nan"), None  # eval_env: the env evaluated in, as `describe_env` reads it

    def save(step: int, to: str = args.checkpoint):
        atomic_torch_save(
            {
                "actor": actor.state_dict(),
                "critic": critic.state_dict(),
                "actor_target": actor_target.state_dict(),
                "critic_target": critic_target_net.state_dict(),
                "actor_opt": actor_opt.state_dict(),
                "critic_opt": critic_opt.state_dict(),
                "step": step,
                "args": asdict(args),
                "env_id": args.env_id,
                "stage": "rebrac",
                "obs_dim": obs_dim,
                "act_dim": act_dim,
                "rng_state": save_rng_state(args.device),
                "score": last_score,
                "history": history,
                **spent(),
                "eval_env": eval_env,
            },
            to,
        )

    t0, t_log, cpu0 = time.time(), time.time(), time.process_time()
    in_eval = [0.0, 0.0]  # wall-clock and CPU seconds of this run's evaluations

    def spent() -> dict:
        return {
            "seconds": spent_before[0] + time.time() - t0 - in_eval[0],
            "cpu_seconds": spent_before[1] + time.process_time() - cpu0 - in_eval[1],
        }

    bar = tqdm(range(start, args.total_updates), initial=start, total=args.total_updates, desc="rebrac", mininterval=2)
    with StopOnSignal() as stop:
        for step in bar:
            idx = torch.randint(0, n, (args.batch_size,), device=args.device)
            batch = {k: v[idx] for k, v in replay.items()}
            critic_loss, q_mean, actor_stats = step_fn(batch, (step + 1) % args.policy_freq == 0)
            if (step + 1) % 1000 == 0:
                writer.add_scalar("losses/critic_loss", critic_loss.item(), step + 1)
                writer.add_scalar("values/q_data", q_mean.item(), step + 1)
                if actor_stats is not None:
                    writer.add_scalar("losses/actor_loss", actor_stats[0].item(), step + 1)
                    writer.add_scalar("values/q_pi", actor_stats[1].item(), step + 1)
                    writer.add_scalar("values/lambda", actor_stats[2].item(), step + 1)
                    writer.add_scalar("losses/bc_mse", actor_stats[3].item(), step + 1)
                writer.add_scalar("charts/updates_per_second", 1000 / (time.time() - t_log), step + 1)
                t_log = time.time()
            if (step + 1) % args.eval_every == 0 or step + 1 == args.total_updates:
                actor.eval()
                eval_start = (time.time(), time.process_time())
                result = run_episodes(make_env, args.env_id, eval_seeds, actor_policy(actor, args.device))
                in_eval[0] += time.time() - eval_start[0]
                in_eval[1] += time.process_time() - eval_start[1]
                actor.train()
                scores, eval_env = score(result["outcomes"]), result["env"]
                last_score = float(np.mean(scores))
                history.append({"step": step + 1, "score": last_score, "std": float(np.std(scores)), **spent()})
                writer.add_scalar("eval/normalized_score", last_score, step + 1)
                writer.add_scalar("eval/return", float(np.mean(result["returns"])), step + 1)
                bar.write(f"[rebrac] update {step + 1}: normalised score {last_score:.1f} ± {np.std(scores):.1f}")
            if (step + 1) % args.checkpoint_every == 0 or step + 1 == args.total_updates:
                save(step + 1)
            if args.snapshot_every and (step + 1) % args.snapshot_every == 0:
                save(step + 1, snapshot_path(args.checkpoint, step + 1))
            if stop:  # Ctrl-C or SIGTERM: this update is done; keep it
                save(step + 1)
                bar.close()
                writer.close()
                stop.exit("rebrac", f"update {step + 1} of {args.total_updates} (checkpoint {args.checkpoint})")
    elapsed = time.time() - t0
    done = args.total_updates - start
    print(
        f"[rebrac] {done} updates in {elapsed:.0f}s ({done / max(elapsed, 1e-9):.0f} updates/s incl. evaluation); "
        f"final normalised score {last_score:.1f}; checkpoint {args.checkpoint}"
    )
    if args.env_id.startswith("antmaze") and history and not any(h["score"] > 0 for h in history):
        print(
            f"[rebrac] warning: 0 % success at all {len(history)} evaluations: paired with this actor, ITPO measures "
            "nothing but goals ReBRAC never reaches; CORL trains AntMaze's ReBRAC 1M updates (--total-updates)"
        )
    writer.close()
    # cpu_seconds: this process's CPU time, what the loop costs on a machine shared with other jobs
    return {"score": last_score, "updates": done, "seconds": elapsed, "cpu_seconds": time.process_time() - cpu0}


if __name__ == "__main__":
    train(tyro.cli(Args))
