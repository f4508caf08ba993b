"""The differentiable world model f_θ: a conditional DDPM of the next state given c = (s, a).

    python train_dynamics.py --env-id hopper-medium-replay

The denoiser ε̂_θ(x_k, k, c) predicts the noise of the *normalised state delta*
x_0 = (s′ − s − μ_Δ) / σ_Δ: deltas are small and centred, so one network serves every region of the
state space, and the sampler adds s back. Cosine noise schedule (Nichol & Dhariwal, 2021), K steps.

The sampler is f_θ(s, a, ε) (paper eq. (1)) with every Gaussian draw passed in:
    ε: [..., K, state_dim];  ε[..., 0, :] = z_K is the starting point s^(K), ε[..., i, :] is the noise
    added by reverse step k = K − i + 1 (i = 1..K−1); the last reverse step (k = 1) adds none.
For fixed ε it is a deterministic, differentiable function of (s, a) and batches over any leading dims.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro

from common import (
    TIME_EMBEDDING_DIM,
    Normalizer,
    Precision,
    fit,
    load_checkpoint,
    mlp,
    one_step_rmse,
    parse_env_id,
    prepare,
    require_device,
    require_positive,
    require_snapshot_every,
    time_embedding,
)


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
    snapshot_every: int = 0
    """also keep the checkpoint of every this many steps beside the last one (<checkpoint>_step<N>.pt;
    a multiple of --eval-every, so that each snapshot holds its held-out metrics); 0: none"""
    checkpoint: str | None = None
    """default checkpoints/<env-id>/dynamics_seed<S>.pt"""
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
            "diffusion_steps",
            "hidden_dim",
            "num_layers",
            "total_steps",
            "batch_size",
            "lr",
            "eval_every",
            "holdout",
        )
        require_snapshot_every(self)
        require_device(self)


# ---------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------
def cosine_alpha_bar(num_steps: int, s: float = 0.008) -> torch.Tensor:
    """ᾱ_k for k = 0..K of the cosine schedule, with β_k clipped to 0.999."""
    t = torch.linspace(0, num_steps, num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    return torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])


class DiffusionDynamics(nn.Module):
    """p_θ(s′ | s, a) as a DDPM over the normalised delta; `f(s, a, eps)` is the reverse sampler."""

    def __init__(
        self, obs_dim: int, act_dim: int, diffusion_steps: int = 10, hidden_dim: int = 256, num_layers: int = 3
    ):
        super().__init__()
        self.config = dict(
            obs_dim=obs_dim,
            act_dim=act_dim,
            diffusion_steps=diffusion_steps,
            hidden_dim=hidden_dim,
            num_layers=num_layers,
        )
        self.obs_dim, self.K = obs_dim, diffusion_steps
        self.normalizer = Normalizer(obs_dim)
        self.denoiser = mlp(2 * obs_dim + act_dim + TIME_EMBEDDING_DIM, obs_dim, hidden_dim, num_layers)
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
        h = torch.cat([x, self.normalizer.obs(s), a, k_emb], dim=-1)
        return self.denoiser(h).to(h.dtype)  # under bf16 autocast: the network in bf16, its output back in fp32

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
# Loading and training
# ---------------------------------------------------------------------------------------------
def load_dynamics(path: str, env_id: str, seed: int = 0, device: str = "cpu") -> DiffusionDynamics:
    """The trained f_θ from its checkpoint (refuses one made for another dataset)."""
    ckpt = load_checkpoint(path, env_id, "dynamics", seed)
    model = DiffusionDynamics(**ckpt["config"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval().requires_grad_(False)


def main(args: Args) -> dict:
    train, held_out, path = prepare(args, "dynamics")
    model = DiffusionDynamics(
        train["observations"].shape[1],
        train["actions"].shape[1],
        args.diffusion_steps,
        args.hidden_dim,
        args.num_layers,
    )
    model.normalizer.fit(train["observations"].cpu().numpy(), train["next_observations"].cpu().numpy())
    model.to(args.device)
    return fit(
        model,
        lambda m, b: m.loss(b["observations"], b["actions"], b["next_observations"]),
        lambda m, h: {"one_step_rmse": one_step_rmse(m, h, args.seed)},
        args,
        "dynamics",
        train,
        held_out,
        path,
    )


if __name__ == "__main__":
    main(tyro.cli(Args))
