"""--precision: fp32 is exactly the computation without autocast, bf16 runs every stage from its command
line and leaves fp32 checkpoints, and ITPO's bf16 scheme keeps ∇ψĴ well inside the gradient's own
sampling noise."""

import contextlib
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import common
import itpo_eval
import meanflow_onestep
import rebrac
import train_dynamics
import train_reward
from conftest import ROOT
from rebrac import Actor, Critic, EnsembleLinear
from train_dynamics import DiffusionDynamics
from train_reward import RewardModel

# ---------------------------------------------------------------------------------------------
# fp32: the default, and the same computation as with no autocast anywhere (the code before --precision)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [rebrac, train_dynamics, train_reward, meanflow_onestep, itpo_eval])
def test_fp32_is_the_default(module):
    assert module.Args().precision == "fp32"


def test_the_fp32_context_is_no_autocast_at_all():
    for device in ("cpu", "cuda"):
        with common.autocast("fp32", device):
            assert not torch.is_autocast_enabled("cpu") and not torch.is_autocast_enabled("cuda")
    with common.autocast("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def tensors(tree, prefix=""):
    """Every tensor in a checkpoint, by its path in the dict."""
    if isinstance(tree, torch.Tensor):
        yield prefix, tree
    elif isinstance(tree, dict):
        for k, v in tree.items():
            yield from tensors(v, f"{prefix}/{k}")
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from tensors(v, f"{prefix}[{i}]")


def train_tiny(pipeline, tmp_path, name, precision):
    """A few ReBRAC updates and DDPM steps on the tiny dataset; returns their two checkpoints."""
    paths = {"rebrac": str(tmp_path / f"rebrac_{name}.pt"), "dynamics": str(tmp_path / f"dynamics_{name}.pt")}
    rebrac.train(
        rebrac.Args(
            env_id=pipeline["env_id"],
            total_updates=6,
            batch_size=16,
            hidden_dim=16,
            eval_episodes=1,
            checkpoint=paths["rebrac"],
            device="cpu",
            precision=precision,
        )
    )
    train_dynamics.main(
        train_dynamics.Args(
            env_id=pipeline["env_id"],
            hidden_dim=16,
            num_layers=1,
            diffusion_steps=2,
            total_steps=6,
            batch_size=16,
            eval_every=6,
            holdout=10,
            checkpoint=paths["dynamics"],
            device="cpu",
            precision=precision,
        )
    )
    return {k: torch.load(v, weights_only=True) for k, v in paths.items()}


def test_fp32_training_is_bit_identical_to_training_without_autocast(pipeline, tmp_path, monkeypatch):
    """Same seed, same steps: the weights, optimiser state and metrics of --precision fp32 equal those of the
    code with the autocast context removed (as it was before --precision), bit for bit; bf16 differs."""
    fp32 = train_tiny(pipeline, tmp_path, "fp32", "fp32")
    bf16 = train_tiny(pipeline, tmp_path, "bf16", "bf16")
    no_autocast = lambda precision, device: contextlib.nullcontext()  # noqa: E731
    monkeypatch.setattr(rebrac, "autocast", no_autocast)
    monkeypatch.setattr(common, "autocast", no_autocast)
    plain = train_tiny(pipeline, tmp_path, "plain", "bf16")  # asks bf16, but nothing is autocast
    for stage in ("rebrac", "dynamics"):
        got, want = dict(tensors(fp32[stage])), dict(tensors(plain[stage]))
        assert got.keys() == want.keys()
        for path in got:
            if "rng_state" not in path:
                assert torch.equal(got[path], want[path]), (stage, path)
        assert fp32[stage].get("metrics") == plain[stage].get("metrics")
        weights = "actor" if stage == "rebrac" else "model"
        assert any(not torch.equal(v, bf16[stage][weights][k]) for k, v in fp32[stage][weights].items()), stage


# ---------------------------------------------------------------------------------------------
# bf16 through the command line: every stage runs, checkpoints stay fp32, the precision is recorded
# ---------------------------------------------------------------------------------------------
def run(script, *argv, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, os.path.join(ROOT, script), *argv]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_bf16_runs_every_stage_from_its_command_line_and_saves_fp32(pipeline, tmp_path):
    env_id = pipeline["env_id"]
    small = ["--env-id", env_id, "--hidden-dim", "16", "--precision", "bf16"]
    stages = {
        "rebrac": ("rebrac.py", ["--total-updates", "4", "--batch-size", "8", "--eval-episodes", "1"]),
        "dynamics": ("train_dynamics.py", ["--total-steps", "4", "--num-layers", "1", "--diffusion-steps", "2"]),
        "reward": ("train_reward.py", ["--total-steps", "4", "--num-layers", "1"]),
        "meanflow": ("meanflow_onestep.py", ["--total-steps", "4", "--num-layers", "1"]),
    }
    warns = not common.native_bf16("cpu")  # bf16 is emulated on this CPU: every stage must say so
    for stage, (script, extra) in stages.items():
        holdout = [] if stage == "rebrac" else ["--holdout", "10"]
        result = run(script, *small, *extra, *holdout, "--device", "cpu", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        assert ("warning: --precision bf16" in result.stdout) == warns, result.stdout
        ckpt = torch.load(tmp_path / f"checkpoints/{env_id}/{stage}_seed0.pt", weights_only=True)
        assert ckpt["args"]["precision"] == "bf16"
        floats = {path: t.dtype for path, t in tensors(ckpt) if t.is_floating_point()}
        assert floats and all(dtype == torch.float32 for dtype in floats.values()), (stage, floats)
    result = run(
        "itpo_eval.py",
        *["--env-id", env_id, "--particles", "2", "--episodes", "1", "--max-episode-steps", "3"],
        *["--precision", "bf16", "--device", "cpu", "--run-name", "bf16"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert ("warning: --precision bf16" in result.stdout) == warns
    with open(tmp_path / "runs/bf16/summary.json") as f:
        assert json.load(f)["settings"]["precision"] == "bf16"


# ---------------------------------------------------------------------------------------------
# ITPO's bf16 scheme: only f_θ's network in bf16, and ∇ψĴ well inside its own sampling noise
# ---------------------------------------------------------------------------------------------
D, A, H = 11, 3, 5  # hopper's state and action sizes, the paper's horizon


def tiny_problem(seed: int):
    """Untrained float32 models of hopper's sizes; the DDPM's delta std 0.1 keeps the rollouts' sampling
    noise at the level measured on trained hopper models (cosine of two fp32 gradients ≈ 0.9–0.98)."""
    torch.manual_seed(seed)
    actor = Actor(D, A, 32)
    critic = Critic(D, A, 32).requires_grad_(False)
    world = DiffusionDynamics(D, A, diffusion_steps=3, hidden_dim=32, num_layers=2).requires_grad_(False)
    world.normalizer.delta_std.fill_(0.1)
    reward = RewardModel(D, A, 32, 2, termination=True).requires_grad_(False)
    return actor, critic, world, reward


def deviation_ratios(seed: int, scheme: str, n: int = 16, m: int = 32) -> torch.Tensor:
    """Per state: (1 − cos(∇ψĴ bf16, ∇ψĴ fp32), same noise) / (1 − cos(∇ψĴ fp32 noise A, fp32 noise B)).

    For small angles 1 − cos θ ≈ θ²/2, and two independent draws are √2 times one draw's angle θ_e from
    the exact gradient apart, so the ratio ≈ θ_bf² / (2 θ_e²): ratio ≤ 1/8 means the bf16 gradient is at
    most half as far from the fp32 one as the sampling noise of M particles puts the fp32 one itself."""
    actor, critic, world, reward = tiny_problem(seed)
    policy = itpo_eval.batched_policy(actor)
    params = {k: v.detach().unsqueeze(0).repeat(n, *[1] * v.dim()) for k, v in actor.named_parameters()}
    s0 = torch.randn(n, D)
    eps_a, eps_b = (torch.randn(n, m, H, *world.noise_shape) for _ in range(2))

    def grad(eps, precision, whole=False):
        with common.autocast("bf16" if whole else "fp32", "cpu"):
            _, g = itpo_eval.inner_step(policy, params, critic, world, reward, s0, eps, 0.99, 1.0, precision)
        return torch.cat([v.flatten(1) for v in g.values()], 1).double()

    cos = torch.nn.functional.cosine_similarity
    fp32_a, fp32_b = grad(eps_a, "fp32"), grad(eps_b, "fp32")
    bf16 = grad(eps_a, "fp32", whole=True) if scheme == "whole" else grad(eps_a, "bf16")
    return (1 - cos(bf16, fp32_a, dim=1)) / (1 - cos(fp32_a, fp32_b, dim=1))


BOUND = 1 / 8  # bf16's angle at most half the sampling noise of one fp32 draw, at every state (see above)


def test_the_itpo_bf16_scheme_keeps_the_gradient_well_inside_its_sampling_noise():
    """The kept scheme (itpo_eval --precision bf16) stays within the bound at every state of four tiny
    problems; autocasting the whole inner step (π_ψ, r_ξ, Q_φ too) breaks it on at least one of them, so
    the bound can fail (on an AVX2 CPU without bf16 units: whole step 0.81 on one of the four, the kept
    scheme ≤ 0.003 on all; rounding differs on other CPUs, so the contrast may need other seeds there)."""
    kept = {seed: deviation_ratios(seed, "world").max().item() for seed in range(4)}
    whole = {seed: deviation_ratios(seed, "whole").max().item() for seed in range(4)}
    assert max(kept.values()) <= BOUND, kept
    assert max(whole.values()) > BOUND, whole


def test_under_bf16_only_the_world_models_network_computes_in_bf16():
    """One ITPO step at --precision bf16: every linear layer of f_θ outputs bf16, every one of π_ψ, r_ξ and
    Q_φ outputs fp32 — so the scheme is what the gradient check measured, and not a silent fp32 run."""
    actor, critic, world, reward = tiny_problem(0)
    dtypes = {"world": set(), "actor": set(), "critic": set(), "reward": set()}
    for name, model in (("world", world), ("actor", actor), ("critic", critic), ("reward", reward)):
        for layer in model.modules():
            if isinstance(layer, (nn.Linear, EnsembleLinear)):
                layer.register_forward_hook(lambda mod, inp, out, name=name: dtypes[name].add(out.dtype))
    args = itpo_eval.Args(particles=4, episodes=2, device="cpu", precision="bf16")
    agent = itpo_eval.ITPOAgent(actor, critic, world, reward, args, gamma=0.99)
    agent(torch.randn(2, D).numpy(), torch.ones(2, dtype=torch.bool).numpy())
    assert dtypes["world"] == {torch.bfloat16}
    assert dtypes["actor"] == dtypes["critic"] == dtypes["reward"] == {torch.float32}
