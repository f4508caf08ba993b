"""A one-step world model: conditional MeanFlow of the next state, optionally policy-tilted.

    python meanflow_onestep.py --env-id hopper-medium-replay            # tilted, τ = 1
    python meanflow_onestep.py --env-id hopper-medium-replay --tilt-temperature inf   # untilted
    python itpo_eval.py --env-id hopper-medium-replay --world-model meanflow

MeanFlow (Geng et al., 2025) learns the *average* velocity u(z_t, r, t) of the flow
z_t = (1 − t)·x + t·e between data x (t = 0, here the normalised state delta, as in
train_dynamics.py) and noise e (t = 1), conditioned on c = (s, a). The MeanFlow identity
    u(z_t, r, t) = v − (t − r) · d/dt u(z_t, r, t),   v = e − x,
    d/dt u = v·∂_z u + ∂_t u   (a JVP along the tangent (v, 1, 0) of the inputs (z, t, r)),
gives a regression target (stop-gradient) for u_θ. Sampling is one network evaluation:
    s′ = s + μ_Δ + σ_Δ · (z − u_θ(z, r = 0, t = 1 | s, a)),   z ~ N(0, I),
exposed as the same f(s, a, ε) as the DDPM with ε: [..., 1, state_dim].

Policy tilt (our reading: the paper's later version names a tilted sampler but gives no formula):
each transition's loss is weighted by exp(−‖a − π_ψ(s)‖² / τ), normalised over the batch, with π_ψ the
pretrained ReBRAC actor, so capacity goes to the actions the policy — and so the imagined
rollouts — take. τ = inf switches the tilt off (uniform weights). `--tilt-ess 0.5` chooses τ instead, as an
independent re-implementation does (DESIGN.md): the sharpest tilt whose effective sample size is half the data's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import tyro
from torch.func import jvp

from common import (
    TIME_EMBEDDING_DIM,
    Normalizer,
    Precision,
    checkpoint_path,
    fit,
    load_checkpoint,
    mlp,
    one_step_rmse,
    parse_env_id,
    prepare,
    require,
    require_device,
    require_positive,
    require_snapshot_every,
    time_embedding,
    weights_digest,
)
from rebrac import load_rebrac


@dataclass
class Args:
    env_id: str = "hopper-medium-replay"
    """D4RL short name"""
    dataset_id: str | None = None
    """explicit Minari dataset id (overrides the resolution from --env-id)"""
    seed: int = 0
    """seed of the run (and of the ReBRAC checkpoint used for the tilt)"""
    tilt_temperature: float = 1.0
    """τ of the policy tilt exp(−‖a − π_ψ(s)‖²/τ); inf turns the tilt off"""
    tilt_ess: float | None = None
    """choose τ instead: the one whose weights keep this share of the data's effective sample size, (Σw)²/(nΣw²)
    (e.g. 0.5; τ = 1 keeps 94 / 83 / 74 % on hopper / walker2d / halfcheetah-medium-replay)"""
    rebrac_checkpoint: str | None = None
    """ReBRAC checkpoint for the tilt (default checkpoints/<env-id>/rebrac_seed<S>.pt)"""
    share_r_equals_t: float = 0.75
    """share of training pairs with r = t (plain flow matching); the rest have r < t"""
    logit_normal_mean: float = -0.4
    """mean of the logit-normal from which t and r are drawn"""
    logit_normal_std: float = 1.0
    """std of that logit-normal"""
    adaptive_p: float = 1.0
    """adaptive loss weight 1 / (loss + c)^p"""
    adaptive_c: float = 1e-3
    """c of the adaptive loss weight"""
    time_scale: float = 1.0
    """t and t − r are embedded as sin/cos of time_scale·t at frequencies 1 … 1/1000 (a smooth
    embedding: at 8k steps on hopper-medium-replay, scale 1 gave one-step RMSE 0.256, 20 gave 0.280, 1000 gave 0.276)"""
    ema_decay: float = 0.999
    """the sampler uses an exponential moving average of the weights, as MeanFlow does"""
    hidden_dim: int = 256
    """width of the hidden layers"""
    num_layers: int = 3
    """hidden layers"""
    total_steps: int = 200_000
    """gradient steps"""
    batch_size: int = 256
    """batch size"""
    lr: float = 3e-4
    """Adam learning rate"""
    holdout: int = 1000
    """transitions held out for the one-step RMSE"""
    eval_every: int = 10_000
    """held-out one-step RMSE every this many steps"""
    snapshot_every: int = 0
    """also keep the checkpoint of every this many steps beside the last one (<checkpoint>_step<N>.pt;
    a multiple of --eval-every, so that each snapshot holds its held-out metrics); 0: none"""
    checkpoint: str | None = None
    """default checkpoints/<env-id>/meanflow_seed<S>.pt"""
    resume: bool = False
    """continue from the checkpoint at its saved step"""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    """torch device"""
    precision: Precision = "fp32"
    """fp32, or bf16: the forward passes under bf16 autocast (weights, optimiser state, losses and the
    checkpoint stay fp32); faster only on a GPU or a CPU with bf16 units (AMX, AVX512-BF16)"""

    def __post_init__(self):
        parse_env_id(self.env_id)
        require_positive(
            self,
            "hidden_dim",
            "num_layers",
            "total_steps",
            "batch_size",
            "lr",
            "eval_every",
            "holdout",
            "logit_normal_std",
            "adaptive_c",
        )
        require_snapshot_every(self)
        require_device(self)
        require(
            self.tilt_temperature > 0,
            f"--tilt-temperature must be positive (inf: no tilt), not {self.tilt_temperature}",
        )
        if self.tilt_ess is not None:
            require(0 < self.tilt_ess < 1, f"--tilt-ess must be in (0, 1), not {self.tilt_ess}")
            ignored = self.tilt_temperature  # τ = 1 is the default; any other value asks for a τ that would go unused
            require(
                ignored == 1.0, f"--tilt-ess chooses τ, --tilt-temperature {ignored} would be ignored: give one of them"
            )
        require(0 <= self.share_r_equals_t <= 1, f"--share-r-equals-t must be in [0, 1], not {self.share_r_equals_t}")
        require(0 <= self.ema_decay < 1, f"--ema-decay must be in [0, 1), not {self.ema_decay}")


class MeanFlowDynamics(nn.Module):
    """u_θ(z, r, t | s, a), the average velocity; `f(s, a, eps)` samples s′ in one evaluation."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_dim: int = 256, num_layers: int = 3, time_scale: float = 1.0):
        super().__init__()
        self.config = dict(
            obs_dim=obs_dim, act_dim=act_dim, hidden_dim=hidden_dim, num_layers=num_layers, time_scale=time_scale
        )
        self.obs_dim, self.time_scale = obs_dim, time_scale
        self.normalizer = Normalizer(obs_dim)
        # time is embedded as (t, t − r); ∂u/∂t enters the training target through the JVP, so the
        # embedding's fastest frequency (time_scale rad per unit of t) sets how rough that target is
        self.net = mlp(2 * obs_dim + act_dim + 2 * TIME_EMBEDDING_DIM, obs_dim, hidden_dim, num_layers)

    @property
    def noise_shape(self) -> tuple[int, int]:
        return (1, self.obs_dim)

    def u(self, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """z [..., d], r and t [...] in [0, 1], s [..., d] raw, a [..., m] -> u [..., d]."""
        emb = torch.cat([time_embedding(self.time_scale * t), time_embedding(self.time_scale * (t - r))], dim=-1)
        h = torch.cat([z, self.normalizer.obs(s), a, emb], dim=-1)
        return self.net(h).to(h.dtype)  # under bf16 autocast: the network in bf16, its output back in fp32

    def f(self, s: torch.Tensor, a: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """s′ = f(s, a, ε) = s + μ_Δ + σ_Δ (z − u_θ(z, 0, 1 | s, a)), z = ε[..., 0, :]."""
        z = eps[..., 0, :]
        ones = torch.ones(z.shape[:-1], device=z.device, dtype=z.dtype)
        x = z - self.u(z, torch.zeros_like(ones), ones, s, a)
        return s + self.normalizer.delta_mean + self.normalizer.delta_std * x


def meanflow_target(model: MeanFlowDynamics, z, r, t, v, s, a):
    """(u_θ(z, r, t), u_tgt = v − (t − r)·du/dt) with du/dt = v·∂_z u + ∂_t u from one JVP."""
    u, dudt = jvp(lambda z_, r_, t_: model.u(z_, r_, t_, s, a), (z, r, t), (v, torch.zeros_like(r), torch.ones_like(t)))
    return u, v - (t - r).unsqueeze(-1) * dudt


def sample_times(n: int, args: Args, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(r, t) with r ≤ t from a logit-normal; a share `share_r_equals_t` has r = t."""
    samples = torch.sigmoid(args.logit_normal_mean + args.logit_normal_std * torch.randn(2, n, device=device))
    t, r = samples.max(0).values, samples.min(0).values
    r = torch.where(torch.rand(n, device=device) < args.share_r_equals_t, t, r)
    return r, t


def action_distance(actor: nn.Module, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """‖a − π_ψ(s)‖² per transition."""
    with torch.no_grad():
        return ((a - actor(s)) ** 2).sum(-1)


def tilt_weights(actor: nn.Module | None, s: torch.Tensor, a: torch.Tensor, temperature: float) -> torch.Tensor:
    """exp(−‖a − π_ψ(s)‖²/τ) per transition (unnormalised); all ones when τ = inf."""
    if actor is None or math.isinf(temperature):
        return torch.ones(s.shape[0], device=s.device)
    return torch.exp(-action_distance(actor, s, a) / temperature)


def effective_sample_share(weights: torch.Tensor) -> float:
    """(Σw)² / (n Σw²): 1 for uniform weights, 1/n when one transition holds all the weight."""
    return float(weights.sum() ** 2 / (weights**2).sum() / len(weights))


def temperature_for_ess(distance: torch.Tensor, share: float) -> float:
    """The τ at which exp(−d/τ) keeps `share` of the data's effective sample size. The share rises with τ
    (from 1/n towards 1), so bisect log τ; inf when every d is the same (no τ tilts the data)."""
    d = (distance - distance.min()).double()  # a shift of d rescales every weight alike
    if float(d.max()) == 0:
        return math.inf
    lo, hi = math.log(float(d[d > 0].min()) * 1e-3), math.log(float(d.max()) * 1e6)
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if effective_sample_share(torch.exp(-d / math.exp(mid))) < share else (lo, mid)
    return math.exp(hi)


def meanflow_loss(model: MeanFlowDynamics, batch: dict[str, torch.Tensor], args: Args) -> torch.Tensor:
    """Tilt-weighted, adaptively weighted ‖u_θ − stop_grad(u_tgt)‖²."""
    s, a, n = batch["observations"], batch["actions"], model.normalizer
    x = (batch["next_observations"] - s - n.delta_mean) / n.delta_std
    e = torch.randn_like(x)
    r, t = sample_times(x.shape[0], args, x.device)
    z = (1 - t).unsqueeze(-1) * x + t.unsqueeze(-1) * e
    u, u_tgt = meanflow_target(model, z, r, t, e - x, s, a)
    err = ((u - u_tgt.detach()) ** 2).sum(-1)
    adaptive = 1.0 / (err.detach() + args.adaptive_c) ** args.adaptive_p
    tilt = batch["tilt"] / batch["tilt"].mean()
    return (tilt * adaptive * err).mean()


def load_meanflow(path: str, env_id: str, seed: int = 0, device: str = "cpu") -> MeanFlowDynamics:
    """The trained one-step model from its checkpoint (refuses one made for another dataset)."""
    ckpt = load_checkpoint(path, env_id, "meanflow", seed)
    model = MeanFlowDynamics(**ckpt["config"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval().requires_grad_(False)


def main(args: Args) -> dict:
    train, held_out, path = prepare(args, "meanflow")
    actor, tilt_step, tilt_digest, tau = None, None, None, args.tilt_temperature
    if not math.isinf(args.tilt_temperature):
        rebrac_path = args.rebrac_checkpoint or checkpoint_path(args.env_id, "rebrac", args.seed)
        actor, _, rebrac = load_rebrac(rebrac_path, args.env_id, args.seed)
        actor, tilt_step, tilt_digest = actor.to(args.device).eval(), rebrac["step"], weights_digest(rebrac["actor"])
    if args.tilt_ess is not None:
        tau = temperature_for_ess(action_distance(actor, train["observations"], train["actions"]), args.tilt_ess)
    train["tilt"] = tilt_weights(actor, train["observations"], train["actions"], tau)
    chosen = f" (chosen by --tilt-ess {args.tilt_ess})" if args.tilt_ess is not None else ""
    print(
        f"[meanflow] tilt τ={tau:.4g}{chosen}: effective sample size "
        f"{effective_sample_share(train['tilt']):.1%} of the data"
    )
    model = MeanFlowDynamics(
        train["observations"].shape[1], train["actions"].shape[1], args.hidden_dim, args.num_layers, args.time_scale
    )
    model.normalizer.fit(train["observations"].cpu().numpy(), train["next_observations"].cpu().numpy())
    model.to(args.device)
    return fit(
        model,
        lambda m, b: meanflow_loss(m, b, args),
        lambda m, h: {"one_step_rmse": one_step_rmse(m, h, args.seed)},
        args,
        "meanflow",
        train,
        held_out,
        path,
        # which ReBRAC tilted the data: resuming under another one's tilt would train on two weightings
        meta={
            "tilt_temperature": tau,
            "tilt_ess": args.tilt_ess,
            "tilt_rebrac_step": tilt_step,
            "tilt_rebrac_digest": tilt_digest,
        },
        ema_decay=args.ema_decay,
    )


if __name__ == "__main__":
    main(tyro.cli(Args))
