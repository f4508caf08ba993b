"""plan_eval.py: MPPI and gradient shooting on ITPO's models, scored by the one imagined return Ĵ."""

import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_itpo import GAMMA, M_ACT, H, stacked, tiny_problem

import common
import plan_eval
from conftest import ROOT


def test_a_given_action_sequence_is_scored_as_the_policy_that_took_it():
    """Ĵ of π's own imagined actions, given as a plan, is π's Ĵ: one definition of the imagined return."""
    actor, critic, world, reward = tiny_problem(termination=True)
    policy, params = common.batched_policy(actor), stacked(actor, 2)
    s0 = torch.randn(2, 3, dtype=torch.float64)
    eps = torch.randn(2, 4, H, *world.noise_shape, dtype=torch.float64)
    with torch.no_grad():
        returns, taken = common.imagined_returns(policy, params, critic, world, reward, s0, eps, GAMMA)
        replayed, same = common.imagined_returns(policy, params, critic, world, reward, s0, eps, GAMMA, actions=taken)
        other, _ = common.imagined_returns(policy, params, critic, world, reward, s0, eps, GAMMA, actions=-taken)
    assert taken.shape == (2, 4, H, M_ACT) and torch.equal(same, taken)
    torch.testing.assert_close(replayed, returns)
    assert not torch.allclose(other, returns)  # the plan's actions, not π's, drive the rollout
    mean = common.imagine_rollout(policy, params, critic, world, reward, s0, eps, GAMMA)
    torch.testing.assert_close(mean, returns.mean(-1))


def test_mppi_refit_by_hand():
    candidates = torch.tensor([[[[0.0]], [[1.0]], [[-1.0]], [[0.5]], [[-0.5]]]])  # N 1, C 5, H 1, m 1
    values = torch.tensor([[1.0, 3.0, float("nan"), 2.0, float("inf")]])  # a blown-up rollout: never an elite
    mean, std, elite, weight = plan_eval.refit(candidates, values, elites=2, temperature=0.5, min_std=0.05, max_std=2)
    w = torch.tensor([1.0, float(np.exp(-0.5))])
    w = w / w.sum()
    torch.testing.assert_close(weight[0], w)
    torch.testing.assert_close(elite[0, :, 0, 0], torch.tensor([1.0, 0.5]))
    m = w[0] * 1.0 + w[1] * 0.5
    torch.testing.assert_close(mean[0, 0, 0], m)
    torch.testing.assert_close(std[0, 0, 0], (w[0] * (1 - m) ** 2 + w[1] * (0.5 - m) ** 2).sqrt())
    _, clamped, _, _ = plan_eval.refit(candidates, values, elites=1, temperature=0.5, min_std=0.05, max_std=2)
    assert clamped.item() == pytest.approx(0.05)  # one elite: no spread, σ at its floor


def test_mppi_refit_moves_the_plan_to_a_toy_objectives_peak():
    """Sampling N(μ, σ²) and refitting on Ĵ(a) = −Σ(a − a*)² carries μ from 0 to a* and shrinks σ to its floor."""
    target = torch.tensor([0.6, -0.3])  # a* for a plan of H 2 × m 1
    generator = torch.Generator().manual_seed(0)
    mean, std = torch.zeros(1, 2, 1), torch.full((1, 2, 1), 2.0)
    for _ in range(8):
        candidates = (mean[:, None] + std[:, None] * torch.randn(1, 64, 2, 1, generator=generator)).clamp(-1, 1)
        values = -((candidates[..., 0] - target) ** 2).sum(-1)
        mean, std, _, _ = plan_eval.refit(candidates, values, elites=8, temperature=5.0, min_std=0.05, max_std=2)
    torch.testing.assert_close(mean[0, :, 0], target, atol=0.1, rtol=0)
    assert std.max() < 0.2


def test_a_shooting_step_raises_the_imagined_return(pipeline):
    """One ascent step on the plan raises Ĵ on the same noise (small enough a step that the first order rules)."""
    args = plan_args(pipeline, planner="shooting", particles=3, shooting_steps=1)
    actor, critic, world, reward, _ = plan_eval.load_models(args)
    s0 = torch.as_tensor(np.random.default_rng(0).normal(size=(2, 11)).astype(np.float32))
    eps = torch.randn(2, 3, args.horizon, *world.noise_shape, generator=torch.Generator().manual_seed(1))
    planner = plan_eval.Planner(actor, critic, world, reward, args, gamma=0.99)

    def mean_return(plan):  # Ĵ [N] of one plan per episode, over its 3 imagined rollouts
        return planner.returns(s0, eps, plan[:, None].expand(-1, 3, -1, -1))[0].mean(1)

    start = planner.returns(s0, eps[:, :1])[1][:, 0].detach().requires_grad_()  # π's imagined actions
    (g,) = torch.autograd.grad(mean_return(start).sum(), start)
    planner.args = replace(args, step_size=0.01 / g.flatten(1).norm(dim=1).max().item())  # moves a by ≤ 0.01
    _, plan, _ = planner._shooting(s0, eps, torch.tensor([True, True]))
    with torch.no_grad():
        before, after = mean_return(start), mean_return(plan)
    assert not torch.equal(plan, start) and (after > before).all(), (before, after)


def plan_args(pipeline, **kw):
    c = pipeline["ckpt"]
    paths = dict(rebrac_checkpoint=c["rebrac"], dynamics_checkpoint=c["dynamics"], reward_checkpoint=c["reward"])
    base = dict(env_id=pipeline["env_id"], device="cpu", episodes=2, max_episode_steps=8, horizon=2, **paths)
    return plan_eval.Args(**{**base, **kw})


def test_shooting_at_step_size_zero_acts_as_the_actor(pipeline):
    """The plan starts at π's imagined actions, whose first is π(s_t): no ascent, the ReBRAC episodes."""
    out = plan_eval.main(plan_args(pipeline, planner="shooting", step_size=0.0, particles=3))
    assert out["shooting"]["normalized_scores"] == out["rebrac"]["normalized_scores"]
    moved = plan_eval.main(plan_args(pipeline, planner="shooting", step_size=5.0, particles=3))
    assert moved["shooting"]["returns"] != moved["rebrac"]["returns"]


def test_shooting_logs_the_norm_of_its_action_gradient(pipeline):
    """stats["grad_norm"] is ‖∇_a Ĵ‖ of the plan, by autograd here, averaged over the episodes still alive."""
    args = plan_args(pipeline, planner="shooting", particles=3, step_size=0.0)
    actor, critic, world, reward, _ = plan_eval.load_models(args)
    planner = plan_eval.Planner(actor, critic, world, reward, args, gamma=0.99)
    obs = np.random.default_rng(0).normal(size=(2, 11)).astype(np.float32)
    planner(obs, np.array([True, False]))
    s0, noise = torch.as_tensor(obs), torch.Generator().manual_seed(args.seed)  # the planner's first draw
    eps = torch.randn(2, 3, args.horizon, *world.noise_shape, generator=noise)
    plan = planner.returns(s0, eps[:, :1])[1][:, 0].detach().requires_grad_()
    (g,) = torch.autograd.grad(planner.returns(s0, eps, plan[:, None].expand(-1, 3, -1, -1))[0].mean(1).sum(), plan)
    norms = g.flatten(1).norm(dim=1)
    assert norms[0] > 0 and not torch.isclose(norms[0], norms[1])
    torch.testing.assert_close(planner.stats["grad_norm"], norms[0])


def test_mppi_warm_starts_from_the_shifted_plan_and_resets(pipeline):
    args = plan_args(pipeline, samples=6, policy_samples=2, elites=3, iterations=2)
    actor, critic, world, reward, _ = plan_eval.load_models(args)
    planner = plan_eval.Planner(actor, critic, world, reward, args, gamma=0.99)
    obs = np.random.default_rng(0).normal(size=(2, 11)).astype(np.float32)
    action = planner(obs, np.array([True, True]))
    assert action.shape == (2, 3) and np.abs(action).max() <= 1 and planner.mean.abs().sum() > 0
    planner.reset(torch.tensor([True, False]))
    assert planner.mean[0].abs().sum() == 0 and planner.mean[1].abs().sum() > 0


def test_mppi_without_a_finite_rollout_acts_as_the_actor_and_counts_it(pipeline):
    """Where no candidate's Ĵ is finite (a world model that blew up) there is no plan: π acts, the warm start is
    kept, the step is counted as skipped, and the logged Ĵ is over the episodes that planned."""
    args = plan_args(pipeline, samples=6, policy_samples=2, elites=3, iterations=2)
    actor, critic, world, reward, _ = plan_eval.load_models(args)
    planner = plan_eval.Planner(actor, critic, world, reward, args, gamma=0.99)
    returns = planner.returns

    last = []

    def broken(s0, eps, actions=None):  # episode 0's every rollout is nan, episode 1's first one blew up (inf)
        j, taken = returns(s0, eps, actions)
        j = torch.where(torch.arange(len(j))[:, None] == 0, float("nan"), j)
        j[1] = j[1] - j[1].abs().max() - 1  # every finite Ĵ below 0: a non-finite one must not read as 0
        j[1, 0] = float("inf")
        last[:] = [j]
        return j, taken

    planner.returns = broken
    obs = np.random.default_rng(0).normal(size=(2, 11)).astype(np.float32)
    action = planner(obs, np.array([True, True]))
    with torch.no_grad():
        pi = planner.policy(planner.params, torch.as_tensor(obs)[:, None])[:, 0].numpy()
    np.testing.assert_allclose(action[0], pi[0])
    assert planner.skipped.item() == 1 and planner.mean[0].abs().sum() == 0 and planner.mean[1].abs().sum() > 0
    torch.testing.assert_close(planner.stats["imagined_return"], last[0][1, 1:].max())  # episode 1's finite best
    assert torch.isfinite(planner.stats["std"])


@pytest.mark.parametrize("planner", ["mppi", "shooting"])
def test_cli_runs_the_planner_paired_with_rebrac(pipeline, tmp_path, planner):
    c = pipeline["ckpt"]
    argv = ["--env-id", pipeline["env_id"], "--planner", planner, "--device", "cpu", "--episodes", "2"]
    argv += ["--max-episode-steps", "5", "--horizon", "2", "--run-name", "plan", "--rebrac-checkpoint", c["rebrac"]]
    if planner == "mppi":
        argv += ["--samples", "8", "--policy-samples", "2", "--elites", "4", "--iterations", "2"]
    else:
        argv += ["--particles", "3"]
    argv += ["--dynamics-checkpoint", c["dynamics"], "--reward-checkpoint", c["reward"]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, os.path.join(ROOT, "plan_eval.py"), *argv], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((tmp_path / "runs" / "plan" / "summary.json").read_text())
    assert len(summary[planner]["normalized_scores"]) == 2 and summary[planner]["seconds_per_env_step"] > 0
    diff = np.array(summary[planner]["normalized_scores"]) - np.array(summary["rebrac"]["normalized_scores"])
    assert summary["paired_difference"]["mean"] == pytest.approx(diff.mean())
    assert summary["settings"]["planner"] == planner
    assert summary["settings"]["models"]["dynamics"]["path"] == c["dynamics"]  # the budgets behind the scores


@pytest.mark.parametrize("planner, knob", [("mppi", "samples"), ("shooting", "particles")])
def test_match_itpo_chooses_the_rollouts_at_itpos_cost(pipeline, monkeypatch, planner, knob):
    """The matched n is where the planner's cost meets ITPO's, and the run then is a run at n."""

    def fake_step_ms(agents, obs, rounds=3, steps=5):  # a fake clock: ITPO 40 "ms", a planner 2 + 0.5 per rollout
        return {"itpo": 40.0, "planner": 2.0 + 0.5 * getattr(agents["planner"].args, knob)}

    monkeypatch.setattr(plan_eval, "step_ms", fake_step_ms)
    extra = {"policy_samples": 2, "elites": 3, "iterations": 1} if planner == "mppi" else {}
    args = plan_args(pipeline, planner=planner, match_itpo=(8, 1), match_only=True, run_name=f"m{planner}", **extra)
    out = plan_eval.main(args)
    assert out["match"][knob] == 76 and out["settings"][knob] == 76 and out["match"]["ratio"] == pytest.approx(1.0)
    assert planner not in out  # --match-only: nothing evaluated
    real = plan_eval.main(plan_args(pipeline, planner=planner, match_itpo=(2, 1), run_name=f"r{planner}", **extra))
    monkeypatch.undo()
    n = real["match"][knob]
    same = plan_eval.main(plan_args(pipeline, planner=planner, run_name=f"s{planner}", **{knob: n}, **extra))
    assert real[planner]["returns"] == same[planner]["returns"]  # matching leaves no trace in the episodes


def test_step_ms_keeps_each_agents_fastest_round(monkeypatch):
    """step_ms warms each agent up once, then interleaves the rounds and keeps each agent's fastest (fake clock:
    agent "a" costs 1 ms a call, "b" 4 ms, and every call of round 2 is 10 ms slower, as on a busy machine)."""
    clock, calls = [0.0], {"a": 0, "b": 0}

    def agent(name, ms):
        def step(obs, alive):
            calls[name] += 1
            slow = 10.0 if 1 + 3 <= calls[name] <= 1 + 6 else 0.0  # round 2 of 3 steps, after the warm-up call
            clock[0] += (ms + slow) / 1e3
            return np.zeros((len(obs), 3), np.float32)

        return step

    monkeypatch.setattr(plan_eval.time, "perf_counter", lambda: clock[0])
    agents = {"a": agent("a", 1.0), "b": agent("b", 4.0)}
    ms = plan_eval.step_ms(agents, np.zeros((2, 11), np.float32), rounds=3, steps=3)
    assert calls == {"a": 1 + 3 * 3, "b": 1 + 3 * 3}
    assert ms == pytest.approx({"a": 1.0, "b": 4.0})


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--elites", "600"], "--elites (600) must be at most --samples + --policy-samples"),
        (["--min-std", "3"], "--min-std and --max-std need 0 < min ≤ max"),
        (["--samples", "0"], "--samples must be a positive number"),
        (["--step-size", "nan"], "--step-size must be ≥ 0"),
        (["--particles", "8"], "--particles: only --planner shooting uses it"),  # mppi is the default
        (["--planner", "shooting", "--elites", "8", "--samples", "9"], "--samples, --elites: only --planner mppi"),
        (["--match-itpo", "32", "1", "--samples", "64"], "--match-itpo chooses --samples: drop one"),
        (["--match-itpo", "0", "1"], "--match-itpo takes ITPO's M and E, both > 0"),
        (["--match-only"], "--match-only needs --match-itpo M E"),
    ],
)
def test_bad_flags_are_one_line(flags, message):
    run = subprocess.run([sys.executable, os.path.join(ROOT, "plan_eval.py"), *flags], capture_output=True, text=True)
    lines = [line for line in run.stderr.strip().splitlines() if line.strip()]
    assert run.returncode != 0 and len(lines) == 1 and message in lines[0], run.stderr
