"""The reward model r_ξ(s, a) and, where episodes can end, a termination head p_ξ(done | s, a).

    python train_reward.py --env-id hopper-medium-replay

r_ξ is fitted by MSE (paper section 3.2). Hopper and Walker2d episodes terminate when the robot
falls; the paper is silent on this, but an imagined rollout that keeps collecting reward after a
fall lets the policy exploit falls. So a second head learns the probability that (s, a) ends the
episode (binary cross-entropy on the dataset's `terminals`), and itpo_eval weights each later
reward by the probability that the imagined episode is still alive. The head is on by default when
the dataset has terminals (`--termination / --no-termination` to force it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro

from common import (
    Normalizer,
    Precision,
    fit,
    load_checkpoint,
    mlp,
    parse_env_id,
    prepare,
    require_device,
    require_positive,
    require_snapshot_every,
)


@dataclass
class Args:
    env_id: str = "hopper-medium-replay"
    """D4RL short name"""
    dataset_id: str | None = None
    """explicit Minari dataset id (overrides the resolution from --env-id)"""
    seed: int = 0
    """seed of the run"""
    termination: bool | None = None
    """learn the termination head (default: on when the dataset has terminals)"""
    hidden_dim: int = 256
    """width of the hidden layers"""
    num_layers: int = 3
    """hidden layers"""
    total_steps: int = 100_000
    """gradient steps"""
    batch_size: int = 256
    """batch size"""
    lr: float = 3e-4
    """Adam learning rate"""
    holdout: int = 1000
    """transitions held out for the RMSE"""
    eval_every: int = 10_000
    """held-out RMSE every this many steps"""
    snapshot_every: int = 0
    """also keep the checkpoint of every this many steps beside the last one (<checkpoint>_step<N>.pt;
    a multiple of --eval-every, so that each snapshot holds its held-out metrics); 0: none"""
    checkpoint: str | None = None
    """default checkpoints/<env-id>/reward_seed<S>.pt"""
    resume: bool = False
    """continue from the checkpoint at its saved step"""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    """torch device"""
    precision: Precision = "fp32"
    """fp32, or bf16: the forward passes under bf16 autocast (weights, optimiser state, losses and the
    checkpoint stay fp32); faster only on a GPU or a CPU with bf16 units (AMX, AVX512-BF16)"""

    def __post_init__(self):
        parse_env_id(self.env_id)
        require_positive(self, "hidden_dim", "num_layers", "total_steps", "batch_size", "lr", "eval_every", "holdout")
        require_snapshot_every(self)
        require_device(self)


class RewardModel(nn.Module):
    """r_ξ(s, a) and, optionally, the logit of p_ξ(done | s, a), from one MLP trunk."""

    def __init__(
        self, obs_dim: int, act_dim: int, hidden_dim: int = 256, num_layers: int = 3, termination: bool = True
    ):
        super().__init__()
        self.config = dict(
            obs_dim=obs_dim, act_dim=act_dim, hidden_dim=hidden_dim, num_layers=num_layers, termination=termination
        )
        self.termination = termination
        self.normalizer = Normalizer(obs_dim)
        self.net = mlp(obs_dim + act_dim, 2 if termination else 1, hidden_dim, num_layers, act=nn.ReLU)

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[..., d], [..., m] -> reward [...], done logit [...] (None without the head)."""
        h = torch.cat([self.normalizer.obs(s), a], dim=-1)
        out = self.net(h).to(h.dtype)  # under bf16 autocast: the network in bf16, its output back in fp32
        return out[..., 0], (out[..., 1] if self.termination else None)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        reward, done_logit = self(batch["observations"], batch["actions"])
        loss = F.mse_loss(reward, batch["rewards"])
        if done_logit is not None:
            loss = loss + F.binary_cross_entropy_with_logits(done_logit, batch["terminals"])
        return loss


@torch.no_grad()
def evaluate(model: RewardModel, held_out: dict[str, torch.Tensor]) -> dict[str, float]:
    """Held-out reward RMSE; termination accuracy (threshold 0.5) and recall on true terminals."""
    reward, done_logit = model(held_out["observations"], held_out["actions"])
    metrics = {"reward_rmse": float(((reward - held_out["rewards"]) ** 2).mean().sqrt())}
    if done_logit is not None:
        pred, true = done_logit > 0, held_out["terminals"] > 0.5
        metrics["termination_accuracy"] = float((pred == true).float().mean())
        if true.any():
            metrics["termination_recall"] = float(pred[true].float().mean())
    return metrics


def load_reward(path: str, env_id: str, seed: int = 0, device: str = "cpu") -> RewardModel:
    """The trained r_ξ from its checkpoint (refuses one made for another dataset)."""
    ckpt = load_checkpoint(path, env_id, "reward", seed)
    model = RewardModel(**ckpt["config"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval().requires_grad_(False)


def main(args: Args) -> dict:
    train, held_out, path = prepare(args, "reward")
    has_terminals = bool(train["terminals"].sum() > 0)
    termination = has_terminals if args.termination is None else args.termination
    print(
        f"[reward] termination head {'on' if termination else 'off'} "
        f"({int(train['terminals'].sum())} terminals in the training split)"
    )
    model = RewardModel(
        train["observations"].shape[1], train["actions"].shape[1], args.hidden_dim, args.num_layers, termination
    )
    model.normalizer.fit(train["observations"].cpu().numpy())
    model.to(args.device)
    return fit(model, lambda m, b: m.loss(b), evaluate, args, "reward", train, held_out, path)


if __name__ == "__main__":
    main(tyro.cli(Args))
