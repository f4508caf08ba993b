"""The differentiable world model f_θ: a conditional DDPM of the next state given c = (s, a).

    python train_dynamics.py --env-id hopper-medium-replay

The denoiser ε̂_θ(x_k, k, c) predicts the noise of the *normalised state delta*
x_0 = (s′ − s − μ_Δ) / σ_Δ: deltas are small and centred, so one network serves every region of the
state space, and the sampler adds s back. Cosine noise schedule (Nichol & Dhariwal, 2021), K steps.

The sampler is f_θ(s, a, ε) (paper eq. (1)) with every Gaussian draw passed in:
    ε: [..., K, state_dim];  ε[..., 0, :] = z_K is the starting point s^(K), ε[..., i, :] is the noise
    added by reverse step k = K − i + 1 (i = 1..K−1); the last reverse step (k = 1) adds none.
For fixed ε it is a deterministic, differentiable function of (s, a) and batches over any leading dims.

This file also owns `fit`, the supervised training loop (held-out split, tensorboard, atomic
checkpoints, --resume) that train_reward.py and meanflow_onestep.py reuse.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from collect_dataset import atomic_torch_save, load_checkpoint, load_dataset, seed_everything


@dataclass
class Args:
    env_id: str = "hopper-medium-replay"
    """D4RL short name"""
    dataset_id: str | None = None
    """explicit Minari dataset id (overrides the resolution from --env-id)"""
    seed: int = 0
    """seed of the run"""
    diffusion_steps: int = 10
    """K, the number of denoising steps"""
    hidden_dim: int = 256
    """width of the denoiser's hidden layers"""
    num_layers: int = 3
    """hidden layers of the denoiser"""
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
    checkpoint: str | None = None
    """default checkpoints/<env-id>/dynamics_seed<S>.pt"""
    resume: bool = False
    """continue from the checkpoint at its saved step"""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    """torch device"""


# ---------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------
def mlp(in_dim: int, out_dim: int, hidden_dim: int, num_layers: int, act=nn.SiLU) -> nn.Sequential:
    layers, d = [], in_dim
    for _ in range(num_layers):
        layers += [nn.Linear(d, hidden_dim), act()]
        d = hidden_dim
    return nn.Sequential(*layers, nn.Linear(d, out_dim))


def time_embedding(t: torch.Tensor, dim: int = 32) -> torch.Tensor:
    """Sinusoidal embedding of a (continuous or integer) time, t: [...] -> [..., dim]."""
    t = t if t.is_floating_point() else t.float()
    freqs = torch.exp(-math.log(1000.0) * torch.arange(dim // 2, device=t.device, dtype=t.dtype) / (dim // 2))
    angles = t.unsqueeze(-1) * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class Normalizer(nn.Module):
    """Dataset statistics of states and state deltas, stored in the checkpoint as buffers."""

    def __init__(self, obs_dim: int):
        super().__init__()
        for name in ("obs_mean", "delta_mean"):
            self.register_buffer(name, torch.zeros(obs_dim))
        for name in ("obs_std", "delta_std"):
            self.register_buffer(name, torch.ones(obs_dim))

    def fit(self, obs: np.ndarray, next_obs: np.ndarray) -> "Normalizer":
        delta = next_obs - obs
        for name, value in (("obs_mean", obs.mean(0)), ("obs_std", obs.std(0) + 1e-3),
                            ("delta_mean", delta.mean(0)), ("delta_std", delta.std(0) + 1e-3)):
            getattr(self, name).copy_(torch.as_tensor(value))
        return self

    def obs(self, s: torch.Tensor) -> torch.Tensor:
        return (s - self.obs_mean) / self.obs_std


def cosine_alpha_bar(num_steps: int, s: float = 0.008) -> torch.Tensor:
    """ᾱ_k for k = 0..K of the cosine schedule, with β_k clipped to 0.999."""
    t = torch.linspace(0, num_steps, num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    return torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])


class DiffusionDynamics(nn.Module):
    """p_θ(s′ | s, a) as a DDPM over the normalised delta; `f(s, a, eps)` is the reverse sampler."""

    def __init__(self, obs_dim: int, act_dim: int, diffusion_steps: int = 10, hidden_dim: int = 256,
                 num_layers: int = 3):
        super().__init__()
        self.config = dict(obs_dim=obs_dim, act_dim=act_dim, diffusion_steps=diffusion_steps,
                           hidden_dim=hidden_dim, num_layers=num_layers)
        self.obs_dim, self.K = obs_dim, diffusion_steps
        self.normalizer = Normalizer(obs_dim)
        self.denoiser = mlp(2 * obs_dim + act_dim + 32, obs_dim, hidden_dim, num_layers)
        alpha_bar = cosine_alpha_bar(diffusion_steps)
        alphas = alpha_bar[1:] / alpha_bar[:-1]  # α_k, k = 1..K (index k − 1)
        betas = 1 - alphas
        posterior_var = betas * (1 - alpha_bar[:-1]) / (1 - alpha_bar[1:])  # σ_k² = β̃_k
        self.register_buffer("alpha_bar", alpha_bar.float())  # index k = 0..K
        self.register_buffer("sqrt_recip_alpha", (1 / alphas.sqrt()).float())
        self.register_buffer("eps_coef", (betas / (1 - alpha_bar[1:]).sqrt()).float())
        self.register_buffer("sigma", posterior_var.sqrt().float())

    @property
    def noise_shape(self) -> tuple[int, int]:
        """Shape of the noise ε of one transition: (K, state_dim)."""
        return (self.K, self.obs_dim)

    def epsilon(self, x: torch.Tensor, k: torch.Tensor, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """ε̂_θ(x_k, k, (s, a)) with s raw (normalised here) and k an integer tensor broadcastable to x[..., 0]."""
        k_emb = time_embedding(k.expand(x.shape[:-1]))
        return self.denoiser(torch.cat([x, self.normalizer.obs(s), a, k_emb], dim=-1))

    def loss(self, s: torch.Tensor, a: torch.Tensor, s_next: torch.Tensor) -> torch.Tensor:
        """L(θ) = E‖ε − ε̂_θ(√ᾱ_k x_0 + √(1−ᾱ_k) ε, k, c)‖², k ~ U{1..K}."""
        n = self.normalizer
        x0 = (s_next - s - n.delta_mean) / n.delta_std
        k = torch.randint(1, self.K + 1, (s.shape[0],), device=s.device)
        noise = torch.randn_like(x0)
        ab = self.alpha_bar[k].unsqueeze(-1)
        xk = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        return F.mse_loss(self.epsilon(xk, k, s, a), noise)

    def reverse_step(self, x: torch.Tensor, k: int, s: torch.Tensor, a: torch.Tensor, z: torch.Tensor | None):
        """h_k(u, s, a, z) = (u − (β_k/√(1−ᾱ_k)) ε̂_θ(u, k, c)) / √α_k + σ_k z  (paper eq. (1))."""
        k_t = torch.full((), k, device=x.device, dtype=torch.long)
        x = self.sqrt_recip_alpha[k - 1] * (x - self.eps_coef[k - 1] * self.epsilon(x, k_t, s, a))
        return x if z is None else x + self.sigma[k - 1] * z

    def f(self, s: torch.Tensor, a: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """s′ = f_θ(s, a, ε): s [..., d], a [..., m], ε [..., K, d] -> s′ [..., d] (raw units)."""
        x = eps[..., 0, :]
        for i, k in enumerate(range(self.K, 0, -1)):
            x = self.reverse_step(x, k, s, a, eps[..., i + 1, :] if k > 1 else None)
        n = self.normalizer
        return s + n.delta_mean + n.delta_std * x


# ---------------------------------------------------------------------------------------------
# Data and the supervised training loop (shared by train_reward.py and meanflow_onestep.py)
# ---------------------------------------------------------------------------------------------
def split_holdout(data: dict[str, np.ndarray], holdout: int, seed: int):
    """Random transitions held out for evaluation; returns (train, held_out) dicts of arrays."""
    perm = np.random.default_rng(seed).permutation(len(data["rewards"]))
    test, train = perm[:holdout], perm[holdout:]
    return {k: v[train] for k, v in data.items()}, {k: v[test] for k, v in data.items()}


def to_tensors(data: dict[str, np.ndarray], device: str) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v, device=device) for k, v in data.items()}


def one_step_rmse(model, held_out: dict[str, torch.Tensor], seed: int = 0) -> float:
    """RMSE of one sampled next state against the true one (raw units, all dims) on held-out data."""
    g = torch.Generator(device=held_out["observations"].device).manual_seed(seed)
    s, a = held_out["observations"], held_out["actions"]
    eps = torch.randn((s.shape[0], *model.noise_shape), generator=g, device=s.device)
    with torch.no_grad():
        pred = model.f(s, a, eps)
    return float(((pred - held_out["next_observations"]) ** 2).mean().sqrt())


def fit(model: nn.Module, loss_fn, evaluate, args, what: str, train: dict, held_out: dict,
        meta: dict | None = None, ema_decay: float | None = None) -> dict:
    """Train `model` on minibatches of `train` with `loss_fn(model, batch)`; every `args.eval_every`
    steps log the dict `evaluate(model, held_out)`; checkpoint atomically with the model's config and
    `meta`; honour --resume. With `ema_decay`, an exponential moving average of the weights is what
    is evaluated and saved as "model" (the raw weights are kept for resuming)."""
    device = args.device
    n = len(train["rewards"])
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    ema = None
    if ema_decay is not None:
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(ema_decay), use_buffers=True)
    start, history = 0, []  # history: the held-out metrics at each evaluation, kept in the checkpoint
    if args.resume and os.path.exists(args.checkpoint):
        ckpt = load_checkpoint(args.checkpoint, args.env_id, what, f"the same command without --resume (env-id {args.env_id})")
        model.load_state_dict(ckpt.get("raw_model", ckpt["model"]))
        if ema is not None:
            ema.module.load_state_dict(ckpt["model"])
            ema.n_averaged.fill_(ckpt["step"])
        opt.load_state_dict(ckpt["opt"])
        torch.set_rng_state(ckpt["rng_state"])
        start, history = ckpt["step"], ckpt.get("history", [])
        print(f"[{what}] resuming {args.checkpoint} at step {start}")
    plain_args = asdict(args)
    writer = SummaryWriter(f"runs/{what}_{args.env_id}_seed{args.seed}_{int(time.time())}")
    writer.add_text("args", str(plain_args))
    metrics, t0 = {}, time.time()

    def save(step: int):
        weights = {"model": ema.module.state_dict(), "raw_model": model.state_dict()} if ema else {"model": model.state_dict()}
        atomic_torch_save({**weights, "config": model.config, "opt": opt.state_dict(),
                           "step": step, "env_id": args.env_id, "args": plain_args, "metrics": metrics, "history": history,
                           "rng_state": torch.get_rng_state(), **(meta or {})}, args.checkpoint)

    bar = tqdm(range(start, args.total_steps), initial=start, total=args.total_steps, desc=what, mininterval=2)
    for step in bar:
        idx = torch.randint(0, n, (args.batch_size,), device=device)
        loss = loss_fn(model, {k: v[idx] for k, v in train.items()})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            ema.update_parameters(model)
        if (step + 1) % 500 == 0:
            writer.add_scalar(f"{what}/loss", loss.item(), step + 1)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.total_steps:
            model.eval()
            metrics = evaluate(ema.module if ema is not None else model, held_out)
            model.train()
            history.append({"step": step + 1, **metrics})
            for k, v in metrics.items():
                writer.add_scalar(f"{what}/{k}", v, step + 1)
            bar.write(f"[{what}] step {step + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            save(step + 1)
    metrics["seconds"] = time.time() - t0
    print(f"[{what}] {args.total_steps - start} steps in {metrics['seconds']:.0f}s; held-out "
          + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "seconds") + f"; checkpoint {args.checkpoint}")
    writer.close()
    return metrics


def prepare(args, stage: str):
    """Seed, load the dataset, split off the held-out transitions; returns (train, held_out) tensors."""
    seed_everything(args.seed)
    if args.checkpoint is None:
        args.checkpoint = f"checkpoints/{args.env_id}/{stage}_seed{args.seed}.pt"
    data, _, _ = load_dataset(args.env_id, args.dataset_id)
    train, held_out = split_holdout(data, min(args.holdout, len(data["rewards"]) // 5), args.seed)
    return to_tensors(train, args.device), to_tensors(held_out, args.device)


def load_dynamics(path: str, env_id: str, device: str = "cpu") -> DiffusionDynamics:
    """The trained f_θ from its checkpoint (refuses one made for another dataset)."""
    ckpt = load_checkpoint(path, env_id, "dynamics", f"python train_dynamics.py --env-id {env_id}")
    model = DiffusionDynamics(**ckpt["config"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval().requires_grad_(False)


def main(args: Args) -> dict:
    train, held_out = prepare(args, "dynamics")
    model = DiffusionDynamics(train["observations"].shape[1], train["actions"].shape[1], args.diffusion_steps,
                              args.hidden_dim, args.num_layers)
    model.normalizer.fit(train["observations"].cpu().numpy(), train["next_observations"].cpu().numpy())
    model.to(args.device)
    return fit(model, lambda m, b: m.loss(b["observations"], b["actions"], b["next_observations"]),
               lambda m, h: {"one_step_rmse": one_step_rmse(m, h, args.seed)}, args, "dynamics", train, held_out)


if __name__ == "__main__":
    main(tyro.cli(Args))
