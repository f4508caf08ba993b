"""--ground-truth (ground_truth.py): the real simulator scores each adaptation of ITPO, from a restored copy
of the evaluation env's state, without touching the evaluation episodes."""

import json
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn as nn

import ground_truth
import itpo_eval
from common import run_episodes
from conftest import ROOT, tiny_itpo_args

# ---------------------------------------------------------------------------------------------
# A toy env whose dynamics are a known differentiable function: with that function as f_θ (and its
# reward and termination as r_ξ), the imagined and the true Ĵ must be the same number.
# ---------------------------------------------------------------------------------------------
D, A, LIMIT = 3, 2, 1.0
W_S = torch.tensor([[0.5, -0.3, 0.2], [0.1, 0.4, -0.6], [-0.2, 0.3, 0.1]])
W_A = torch.tensor([[0.8, -0.5], [0.3, 0.9], [-0.4, 0.2]])
DRIFT = torch.tensor([0.08, 0.0, 0.0])  # s[0] creeps up to LIMIT: the episodes fall, some inside H


def toy_next(s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return s + 0.1 * torch.tanh(s @ W_S.T + a @ W_A.T) + DRIFT


def toy_reward(s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return 1.0 - (s[..., 1:] ** 2).sum(-1) - 0.1 * (a**2).sum(-1) + s[..., 0]


class ToyEnv(gym.Env):
    """s′ = toy_next(s, a), reward toy_reward(s, a), the episode ends when s′[0] > LIMIT. Its state is s
    (float32), copied and restored through get_sim_state/set_sim_state. With `hidden`, the dynamics also
    depend on a step counter that the copy leaves out: a copy that does not reproduce the step."""

    def __init__(self, hidden: bool = False):
        self.hidden, self.count = hidden, 0
        self.s = torch.zeros(D)

    def reset(self, seed=None, options=None):
        rng = np.random.default_rng(seed)
        self.s, self.count = torch.as_tensor(rng.uniform(-0.3, 0.3, D), dtype=torch.float32), 0
        return self.s.numpy().copy(), {}

    def step(self, action):
        a = torch.as_tensor(np.asarray(action), dtype=torch.float32)
        r = float(toy_reward(self.s, a))
        self.s = toy_next(self.s, a) + (1e-3 * self.count if self.hidden else 0.0)
        self.count += 1
        return self.s.numpy().copy(), r, bool(self.s[0] > LIMIT), False, {}

    def get_sim_state(self):
        return self.s.numpy().copy()

    def set_sim_state(self, state):
        self.s = torch.as_tensor(state).clone()
        return self.s.numpy().copy()


class ToyWorld(nn.Module):
    """f_θ = the toy env's own dynamics (its noise is ignored: the toy env is deterministic)."""

    noise_shape = (1, D)

    def __init__(self, offset: float = 0.0):
        super().__init__()
        self.offset = offset

    def f(self, s, a, eps):
        return toy_next(s, a) + self.offset


def toy_reward_model(s, a):
    """r_ξ and the termination head of the toy env (logit ±1e6: p_done is exactly 0 or 1)."""
    return toy_reward(s, a), 1e6 * (toy_next(s, a)[..., 0] - LIMIT)


def toy_critic(s, a):
    q = torch.stack([s @ torch.tensor([2.0, -1.0, 0.5]) + a.sum(-1), s @ torch.tensor([1.5, 0.5, -1.0]) - a[..., 0]])
    return q + 3.0


def toy_agent(world, episodes=3, **kw):
    torch.manual_seed(0)
    actor = nn.Sequential(nn.Linear(D, 16), nn.Tanh(), nn.Linear(16, A), nn.Tanh())
    args = itpo_eval.Args(particles=4, episodes=episodes, horizon=3, step_size=0.05, device="cpu", **kw)
    return itpo_eval.ITPOAgent(actor, toy_critic, world, toy_reward_model, args, gamma=0.9)


def run_toy(world=None, hidden=False, every=1, horizon=4):
    agent = toy_agent(world or ToyWorld())
    probe = ground_truth.GroundTruth(agent, lambda: ToyEnv(hidden), every=every, horizon=horizon)
    result = run_episodes(lambda: ToyEnv(hidden), "hopper-medium-replay", [0, 1, 2], agent, 20, probe=probe)
    return result, probe


def test_toy_env_imagined_and_true_objective_agree_at_every_step():
    result, probe = run_toy()
    for ep in probe.steps:
        steps = {k: np.asarray(v, dtype=float) for k, v in ep.items()}
        assert len(steps["t"]) > 3
        for which in ("before", "after"):
            np.testing.assert_allclose(steps[f"imagined_{which}"], steps[f"true_{which}"], rtol=2e-6, atol=1e-6)
        gains = steps["imagined_after"] - steps["imagined_before"]
        assert np.all(np.abs(gains) > 1e-4)  # ψ moved by far more than the tolerance: the comparison has teeth
        error = steps["world_model_error"]
        assert np.isnan(error).any() and np.nanmax(error) < 1e-5  # some rollouts fell inside H: no s_H there
    assert min(result["lengths"]) < 20  # the episodes themselves fell
    summary = probe.finish()
    assert summary["overall"]["agreement"] == 1.0
    assert summary["determinism"]["checked"] > 0 and summary["determinism"]["mismatches"] == 0


def test_toy_env_with_a_wrong_world_model_disagrees():
    """The same check with f_θ off by 0.02 per step: the imagined Ĵ and the world model's error move away."""
    _, probe = run_toy(ToyWorld(offset=0.02))
    steps = {k: np.asarray(v, dtype=float) for k, v in probe.steps[0].items()}
    assert np.abs(steps["imagined_before"] - steps["true_before"]).max() > 1e-2
    assert np.nanmin(steps["world_model_error"]) > 1e-2


def test_a_copy_that_does_not_reproduce_the_step_is_counted():
    _, probe = run_toy(hidden=True, every=2)
    assert probe.checked > 0 and probe.mismatches > 0


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Walker2d-v5", "HalfCheetah-v5"])
def test_restored_mujoco_copy_steps_exactly_like_the_original(env_id, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo writes its model warnings (walker2d, halfcheetah) to ./MUJOCO_LOG.TXT
    real, copy = gym.make(env_id), gym.make(env_id)
    real.reset(seed=3)
    copy.reset(seed=4)
    rng = np.random.default_rng(0)
    for _ in range(30):
        real.step(rng.uniform(-1, 1, real.action_space.shape))
    sim = ground_truth.Simulator(copy)
    obs = sim.set_state(ground_truth.Simulator(real).get_state())
    np.testing.assert_array_equal(obs, real.unwrapped._get_obs())
    for _ in range(100):
        a = rng.uniform(-1, 1, real.action_space.shape)
        o, r, term, _, _ = real.unwrapped.step(a)
        assert (o.tolist(), r, term) == (lambda x: (x[0].tolist(), x[1], x[2]))(sim.step(a))


def test_summary_definitions():
    steps = {k: np.zeros(4) for k in ground_truth.STEP_FIELDS}
    steps["imagined_after"] = np.array([1.0, 1.0, -1.0, 0.0])
    steps["true_after"] = np.array([1.0, -1.0, -1.0, 0.0])
    steps["return_adapted"] = np.array([3.0, 0.0, 0.0, 1.0])
    steps["world_model_error"] = np.array([np.nan, 1.0, 3.0, np.nan])
    steps["q_adapted"] = np.array([1.0, -1.0, 2.0, 0.0])
    s = ground_truth.summarise(steps)
    assert (s["agreement"], s["imagined_rose"], s["true_rose"]) == (0.75, 0.5, 0.25)
    assert (s["adapted_beat_pretrained"], s["mean_t_step_gain"]) == (0.5, 1.0)
    assert (s["world_model_error"], s["world_model_error_steps"]) == (2.0, 2)
    assert (s["critic_error"], s["critic_abs_error"]) == (0.5, 1.0)


def test_ground_truth_where_no_state_can_be_restored_is_refused():
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "itpo_eval.py"), "--env-id", "antmaze-umaze", "--ground-truth"],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: --ground-truth"), result.stderr
    with pytest.raises(SystemExit, match="--ground-truth-every"):
        itpo_eval.Args(ground_truth=True, ground_truth_every=0)
    with pytest.raises(SystemExit, match="get_sim_state"):
        ground_truth.Simulator(gym.make("CartPole-v1"))


# ---------------------------------------------------------------------------------------------
# On hopper with the tiny trained models of conftest.py
# ---------------------------------------------------------------------------------------------
def small_args(pipeline, **kw):
    settings = dict(particles=4, episodes=2, horizon=3, step_size=0.05, max_episode_steps=12, baseline=False)
    return tiny_itpo_args(pipeline, **{**settings, **kw})


def test_true_objective_and_returns_equal_a_hand_rollout_of_the_replayed_simulator(pipeline):
    """Reach each probed state by replaying the episode's actions from its seed (no state copying), then roll
    π_ψ out by hand: the true Ĵ before and after, the T-step returns, falls and the critic's target."""
    args = small_args(pipeline, ground_truth_every=2, ground_truth_horizon=6)
    actor, critic, world, reward, rebrac_args = itpo_eval.load_models(args)
    gamma = rebrac_args["gamma"]
    agent = itpo_eval.ITPOAgent(actor, critic, world, reward, args, gamma)
    probe = ground_truth.GroundTruth(agent, lambda: gym.make("Hopper-v5"), every=2, horizon=6)
    seen = []  # (actions taken so far, ψ before, ψ after, ε) at each real step

    def recording(envs, obs, alive, actions):
        last = agent.last_adaptation
        seen.append((actions.copy(), last["params_before"], agent.params, last["eps"], obs.copy()))
        probe(envs, obs, alive, actions)

    seeds = [args.eval_seed + i for i in range(args.episodes)]
    run_episodes(lambda: gym.make("Hopper-v5"), args.env_id, seeds, agent, args.max_episode_steps, probe=recording)

    def hand(i, t, params, steps):
        """Replay episode i to step t, then act with π_ψ (ψ = params[i]) for `steps` steps."""
        env = gym.make("Hopper-v5").unwrapped
        obs, _ = env.reset(seed=seeds[i])
        for past in seen[:t]:
            obs, *_ = env.step(past[0][i])
        np.testing.assert_array_equal(obs.astype(np.float32), seen[t][4][i])
        one = {k: v[i : i + 1] for k, v in params.items()}
        rewards, fell, states = [], False, [obs.astype(np.float32)]
        for _ in range(steps):
            a = agent.policy(one, torch.as_tensor(states[-1])[None, None])[0, 0].numpy()
            o, r, term, _, _ = env.step(a)
            rewards.append(r)
            states.append(o.astype(np.float32))
            if term:
                fell = True
                break
        q = lambda s: critic(torch.as_tensor(s)[None], agent.policy(one, torch.as_tensor(s)[None, None])[:, 0])  # noqa: E731
        value = 0.0 if fell else gamma**steps * float(q(states[-1]).min(0).values)
        discounted = sum(gamma**j * r for j, r in enumerate(rewards)) + value
        return discounted, sum(rewards), fell, float(q(states[0]).min(0).values)

    checked, moved = 0, 0.0
    for i in range(args.episodes):
        steps = probe.steps[i]
        assert steps["t"] == list(range(0, len(seen), 2))[: len(steps["t"])] and len(steps["t"]) >= 3
        for n, t in enumerate(steps["t"]):
            _, before, after, eps, obs = seen[t]
            pretrained = {k: v.expand(args.episodes, *v.shape) for k, v in agent.pretrained.items()}
            true_before = hand(i, t, before, args.horizon)[0]
            true_after = hand(i, t, after, args.horizon)[0]
            target, ret_after, fell_after, q_after = hand(i, t, after, 6)
            _, ret_pre, fell_pre, _ = hand(i, t, pretrained, 6)
            s0 = torch.as_tensor(obs)
            imagined = [
                itpo_eval.imagine_rollout(agent.policy, p, critic, world, reward, s0, eps, gamma)[i].item()
                for p in (before, after)
            ]
            got = [steps[k][n] for k in ("true_before", "true_after", "target_adapted", "return_adapted")]
            np.testing.assert_allclose(got, [true_before, true_after, target, ret_after], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(steps["return_pretrained"][n], ret_pre, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(steps["q_adapted"][n], q_after, rtol=1e-5, atol=1e-5)
            assert (steps["fell_adapted"][n], steps["fell_pretrained"][n]) == (fell_after, fell_pre)
            np.testing.assert_allclose([steps["imagined_before"][n], steps["imagined_after"][n]], imagined, rtol=1e-6)
            moved = max(moved, abs(true_after - true_before))
            checked += 1
    assert checked >= 6 and moved > 1e-3  # ψ moved enough that "before" and "after" differ beyond the tolerance


def test_ground_truth_leaves_the_evaluation_episodes_unchanged(pipeline):
    """Same returns and lengths with and without --ground-truth; the summary, the per-step arrays and the
    figure are written."""
    plain = itpo_eval.main(small_args(pipeline, run_name="gt_off"))
    probed = itpo_eval.main(small_args(pipeline, run_name="gt_on", ground_truth=True, ground_truth_horizon=5))
    for key in ("returns", "lengths"):
        assert probed["itpo"][key] == plain["itpo"][key]
    gt = json.load(open(pipeline["work"] / "runs/gt_on/summary.json"))["itpo"]["ground_truth"]
    assert gt["determinism"]["checked"] > 0 and gt["determinism"]["mismatches"] == 0
    assert gt["overall"]["probed_steps"] == sum(plain["itpo"]["lengths"]) and len(gt["episodes"]) == 2
    assert gt["seconds"] > 0 and os.path.getsize(pipeline["work"] / "runs/gt_on/ground_truth.png") > 0
    # ms per env step is the agent's cost: the probes' seconds are left out of it (they cost far more)
    itpo = probed["itpo"]
    acting = itpo["seconds_per_env_step"] * max(itpo["lengths"]) * len(itpo["lengths"])  # lockstep steps × N
    assert acting == pytest.approx(itpo["wall_seconds"] - gt["seconds"], rel=1e-6)
    steps = ground_truth.load_steps(pipeline["work"] / "runs/gt_on/ground_truth_steps.json")
    assert len(steps[0]["t"]) == plain["itpo"]["lengths"][0]
