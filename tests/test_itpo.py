"""ITPO (Algorithm 1): the inner loop's mathematics and the paired evaluation."""

import json

import numpy as np
import pytest
import torch
from torch.autograd.functional import jacobian
from torch.func import functional_call

import itpo_eval
from conftest import tiny_itpo_args
from rebrac import Actor, Critic
from train_dynamics import DiffusionDynamics
from train_reward import RewardModel

D, M_ACT, K, H, GAMMA = 3, 2, 2, 3, 0.9


def tiny_problem(termination=False, seed=0):
    torch.manual_seed(seed)
    actor = Actor(D, M_ACT, 6).double()
    for p in actor.parameters():  # larger weights than ReBRAC's init, so every term matters
        p.data.normal_(0, 0.5)
    critic = Critic(D, M_ACT, 6).double().requires_grad_(False)
    world = DiffusionDynamics(D, M_ACT, diffusion_steps=K, hidden_dim=8, num_layers=1).double().requires_grad_(False)
    reward = RewardModel(D, M_ACT, 8, 1, termination=termination).double().requires_grad_(False)
    return actor, critic, world, reward


def stacked(actor, n=1):
    return {k: v.detach().unsqueeze(0).repeat(n, *[1] * v.dim()) for k, v in actor.named_parameters()}


def test_autograd_equals_theorem_4_1_recursion():
    """∇ψL = Σ_j γ^j (r_s G_j + r_a D_j) + γ^H (Q_s G_H + Q_a D_H), D_j = Π_s G_j + Π_ψ, G_{j+1} = F_s G_j + F_a D_j."""
    actor, critic, world, reward = tiny_problem()
    s0 = torch.randn(D, dtype=torch.float64)
    eps = torch.randn(H, *world.noise_shape, dtype=torch.float64)
    names = [k for k, _ in actor.named_parameters()]
    shapes = [v.shape for _, v in actor.named_parameters()]
    flat0 = torch.cat([v.detach().flatten() for _, v in actor.named_parameters()])

    def unflatten(flat):
        out, i = {}, 0
        for name, shape in zip(names, shapes):
            out[name] = flat[i : i + shape.numel()].view(shape)
            i += shape.numel()
        return out

    def pi(flat, s):
        return functional_call(actor, unflatten(flat), (s,))

    G, grad, s = torch.zeros(D, len(flat0), dtype=torch.float64), torch.zeros(len(flat0), dtype=torch.float64), s0
    for j in range(H + 1):
        a = pi(flat0, s)
        Pi_s, Pi_psi = jacobian(lambda s_: pi(flat0, s_), s), jacobian(lambda f_: pi(f_, s), flat0)
        Dj = Pi_s @ G + Pi_psi
        if j == H:
            Q_s, Q_a = jacobian(lambda s_, a_: critic(s_, a_).min(0).values, (s, a))
            grad = grad + GAMMA**H * (Q_s @ G + Q_a @ Dj)
            break
        r_s, r_a = jacobian(lambda s_, a_: reward(s_, a_)[0], (s, a))
        grad = grad + GAMMA**j * (r_s @ G + r_a @ Dj)
        F_s, F_a = jacobian(lambda s_, a_: world.f(s_, a_, eps[j]), (s, a))
        G = F_s @ G + F_a @ Dj
        s = world.f(s, a, eps[j])

    policy = itpo_eval.batched_policy(actor)
    _, grads = itpo_eval.inner_step(policy, stacked(actor), critic, world, reward, s0[None], eps[None, None], GAMMA)
    autograd = torch.cat([grads[k][0].flatten() for k in names])
    torch.testing.assert_close(autograd, grad, rtol=1e-8, atol=1e-10)
    assert grad.abs().sum() > 0


def test_one_inner_step_increases_the_objective():
    actor, critic, world, reward = tiny_problem(termination=True)
    policy = itpo_eval.batched_policy(actor)
    s0 = torch.randn(1, D, dtype=torch.float64)
    eps = torch.randn(1, 16, H, *world.noise_shape, dtype=torch.float64)
    params = stacked(actor)
    before, grads = itpo_eval.inner_step(policy, params, critic, world, reward, s0, eps, GAMMA)
    norm = torch.sqrt(sum(g.pow(2).sum() for g in grads.values()))
    alpha = 1e-3 / norm
    moved = {k: v + alpha * grads[k] for k, v in params.items()}
    after, _ = itpo_eval.inner_step(policy, moved, critic, world, reward, s0, eps, GAMMA)
    assert after.item() > before.item()
    backwards = {k: v - alpha * grads[k] for k, v in params.items()}
    assert itpo_eval.inner_step(policy, backwards, critic, world, reward, s0, eps, GAMMA)[0].item() < before.item()


def test_batched_gradient_equals_separate_episodes():
    actor, critic, world, reward = tiny_problem(termination=True)
    policy = itpo_eval.batched_policy(actor)
    n = 3
    params = {k: v + 0.1 * torch.randn_like(v) for k, v in stacked(actor, n).items()}  # a different ψ each
    s0 = torch.randn(n, D, dtype=torch.float64)
    eps = torch.randn(n, 5, H, *world.noise_shape, dtype=torch.float64)
    objective, grads = itpo_eval.inner_step(policy, params, critic, world, reward, s0, eps, GAMMA)
    for i in range(n):
        one = {k: v[i : i + 1] for k, v in params.items()}
        obj_i, grads_i = itpo_eval.inner_step(policy, one, critic, world, reward, s0[i : i + 1], eps[i : i + 1], GAMMA)
        torch.testing.assert_close(objective[i : i + 1], obj_i)
        for k in grads:
            torch.testing.assert_close(grads[k][i : i + 1], grads_i[k])


def test_termination_weights_rewards_after_a_fall():
    """With p_done ≈ 1 at every step only the first reward counts."""
    actor, critic, world, reward = tiny_problem(termination=True)
    with torch.no_grad():
        reward.net[-1].bias[1] = 50.0  # done logit → p_done ≈ 1
    policy = itpo_eval.batched_policy(actor)
    s0 = torch.randn(1, D, dtype=torch.float64)
    eps = torch.randn(1, 1, H, *world.noise_shape, dtype=torch.float64)
    objective = itpo_eval.imagine_rollout(policy, stacked(actor), critic, world, reward, s0, eps, GAMMA)
    first_reward = reward(s0, actor(s0))[0]
    torch.testing.assert_close(objective, first_reward)


def small_args(pipeline, **kw):
    return tiny_itpo_args(pipeline, **{"particles": 4, "episodes": 2, "max_episode_steps": 15, **kw})


def test_planted_nan_keeps_psi_and_is_counted(pipeline):
    args = small_args(pipeline)
    actor, critic, world, reward, _ = itpo_eval.load_models(args)
    with torch.no_grad():
        reward.net[-1].bias[0] = float("nan")
    agent = itpo_eval.ITPOAgent(actor, critic, world, reward, args, gamma=0.99)
    before = {k: v.clone() for k, v in agent.params.items()}
    obs = np.random.default_rng(0).normal(size=(2, 11)).astype(np.float32)
    actions = agent(obs, np.array([True, True]))
    assert agent.skipped == 2 and np.isfinite(actions).all()
    for k in before:
        assert torch.equal(agent.params[k], before[k])


def test_alpha_zero_equals_rebrac_exactly_and_summary_has_both(pipeline):
    summary = itpo_eval.main(small_args(pipeline, step_size=0.0, run_name="alpha0"))
    assert summary["itpo"]["returns"] == summary["rebrac"]["returns"]
    assert summary["itpo"]["lengths"] == summary["rebrac"]["lengths"]
    on_disk = json.load(open(pipeline["work"] / "runs/alpha0/summary.json"))
    for method in ("itpo", "rebrac"):
        for key in ("returns", "normalized_scores", "mean", "std", "seconds_per_env_step", "skipped_updates"):
            assert key in on_disk[method]
    assert on_disk["settings"]["horizon"] == 5 and on_disk["settings"]["inner_steps"] == 1


@pytest.mark.parametrize(
    "extra", [dict(optimizer="adam", step_size=1e-3), dict(step_size=1e-2, reset_every_step=True, inner_steps=2)]
)
def test_adaptation_changes_the_episode(pipeline, extra):
    summary = itpo_eval.main(small_args(pipeline, baseline=True, run_name="adapt", **extra))
    assert summary["itpo"]["returns"] != summary["rebrac"]["returns"]
    assert summary["itpo"]["skipped_updates"] == 0


def test_checkpoint_of_another_dataset_is_refused(pipeline):
    with pytest.raises(SystemExit) as err:
        itpo_eval.load_models(small_args(pipeline, env_id="hopper-medium"))
    assert "hopper-medium-replay" in str(err.value)
    with pytest.raises(SystemExit) as err:
        itpo_eval.load_models(small_args(pipeline, rebrac_checkpoint="missing.pt"))
    assert "python rebrac.py --env-id hopper-medium-replay" in str(err.value)


def test_adam_skipped_episode_keeps_its_moments(pipeline):
    args = small_args(pipeline, optimizer="adam", step_size=1e-3)
    actor, critic, world, reward, _ = itpo_eval.load_models(args)
    agent = itpo_eval.ITPOAgent(actor, critic, world, reward, args, gamma=0.99)
    obs = np.random.default_rng(0).normal(size=(2, 11)).astype(np.float32)
    agent(obs, np.array([True, True]))
    moments = {k: (m1.clone(), m2.clone()) for k, (m1, m2) in agent.moments.items()}
    params = {k: v.clone() for k, v in agent.params.items()}
    with torch.no_grad():
        reward.net[-1].bias[0] = float("nan")
    agent(obs, np.array([True, True]))
    assert agent.skipped == 2
    for k in params:
        assert torch.equal(agent.params[k], params[k])
        assert torch.equal(agent.moments[k][0], moments[k][0]) and torch.equal(agent.moments[k][1], moments[k][1])


# ---------------------------------------------------------------------------------------------
# ITPOAgent, the loop users run: what one real step does to ψ, and which noise it uses
# ---------------------------------------------------------------------------------------------
def record_inner_steps(monkeypatch):
    """Wrap itpo_eval.inner_step so that every call's ψ, noise and states are kept."""
    calls, real = [], itpo_eval.inner_step

    def recording(policy, params, critic, world, reward, s0, eps, *rest):
        calls.append(
            {"params": {k: v.detach().clone() for k, v in params.items()}, "eps": eps.clone(), "s0": s0.clone()}
        )
        return real(policy, params, critic, world, reward, s0, eps, *rest)

    monkeypatch.setattr(itpo_eval, "inner_step", recording)
    return calls


def tiny_agent(step_size, optimizer="sgd", n=2, dtype=torch.float64, **kw):
    actor, critic, world, reward = (m.to(dtype) for m in tiny_problem(termination=True))
    args = itpo_eval.Args(
        particles=16, episodes=n, horizon=H, step_size=abs(step_size), optimizer=optimizer, device="cpu", **kw
    )
    args.step_size = step_size  # a negative α is refused at parse time; the test sets it behind the parser's back
    return itpo_eval.ITPOAgent(actor, critic, world, reward, args, GAMMA), actor


@pytest.mark.parametrize("optimizer,step_size", [("sgd", 1e-4), ("adam", 1e-4)])
def test_one_real_step_of_the_agent_raises_the_imagined_return(monkeypatch, optimizer, step_size):
    obs = np.random.default_rng(0).normal(size=(2, D))
    alive = np.array([True, True])
    for sign in (1, -1):
        calls = record_inner_steps(monkeypatch)
        agent, actor = tiny_agent(sign * step_size, optimizer)
        agent(obs, alive)
        eps, s0 = calls[0]["eps"], calls[0]["s0"]
        before = itpo_eval.imagine_rollout(
            agent.policy, stacked(actor, 2), agent.critic, agent.world, agent.reward, s0, eps, GAMMA
        )
        after = itpo_eval.imagine_rollout(
            agent.policy, agent.params, agent.critic, agent.world, agent.reward, s0, eps, GAMMA
        )
        assert torch.all(sign * (after - before) > 0), (optimizer, sign, before, after)


def test_psi_is_carried_from_step_to_step_and_the_noise_is_fresh_per_state(monkeypatch):
    calls = record_inner_steps(monkeypatch)
    agent, actor = tiny_agent(1e-3, inner_steps=2)
    obs, alive = np.random.default_rng(1).normal(size=(2, D)), np.array([True, True])
    after = []
    for _ in range(3):
        agent(obs, alive)
        after.append({k: v.clone() for k, v in agent.params.items()})
    assert len(calls) == 6  # E = 2 inner steps at each of 3 real states
    pretrained = stacked(actor, 2)
    for k in pretrained:
        torch.testing.assert_close(calls[0]["params"][k], pretrained[k], rtol=0, atol=0)
        for t in (1, 2):  # the first inner step at real step t starts where real step t − 1 ended
            torch.testing.assert_close(calls[2 * t]["params"][k], after[t - 1][k], rtol=0, atol=0)
    assert not torch.equal(after[0]["net.0.weight"], pretrained["net.0.weight"])
    for t in range(3):  # the same noise for the E inner steps of one real state ...
        assert torch.equal(calls[2 * t]["eps"], calls[2 * t + 1]["eps"])
    assert not torch.equal(calls[0]["eps"], calls[2]["eps"])  # ... and fresh noise at the next one
    assert not torch.equal(calls[2]["eps"], calls[4]["eps"])


def test_reset_every_step_restarts_from_the_pretrained_actor(monkeypatch):
    calls = record_inner_steps(monkeypatch)
    agent, actor = tiny_agent(1e-3, reset_every_step=True)
    obs, alive = np.random.default_rng(2).normal(size=(2, D)), np.array([True, True])
    for _ in range(3):
        agent(obs, alive)
    pretrained = stacked(actor, 2)
    for call in calls:
        for k in pretrained:
            torch.testing.assert_close(call["params"][k], pretrained[k], rtol=0, atol=0)
    assert not torch.equal(agent.params["net.0.weight"], pretrained["net.0.weight"])


def test_a_finished_episode_keeps_its_slot_and_its_psi(monkeypatch):
    agent, _ = tiny_agent(1e-3)
    obs = np.random.default_rng(3).normal(size=(2, D))
    agent(obs, np.array([True, True]))
    frozen = {k: v[1].clone() for k, v in agent.params.items()}
    actions = agent(obs, np.array([True, False]))
    assert actions.shape == (2, M_ACT)
    for k in frozen:
        assert torch.equal(agent.params[k][1], frozen[k])
    assert not torch.equal(agent.params["net.0.weight"][0], agent.pretrained["net.0.weight"])


def test_a_non_finite_new_psi_is_skipped_like_a_non_finite_gradient():
    agent, actor = tiny_agent(1e308, dtype=torch.float32)  # ψ + α·∇ψĴ overflows to ±inf in float32
    obs = np.random.default_rng(4).normal(size=(2, D)).astype(np.float32)
    actions = agent(obs, np.array([True, True]))
    assert int(agent.skipped) == 2 and np.isfinite(actions).all()
    for k, v in stacked(actor, 2).items():
        assert torch.equal(agent.params[k], v)


def test_compiled_step_equals_eager():
    obs = np.random.default_rng(5).normal(size=(2, D))
    eager, _ = tiny_agent(1e-3, inner_steps=2)
    compiled, _ = tiny_agent(1e-3, inner_steps=2, compile=True)
    for _ in range(2):
        a_eager, a_compiled = eager(obs, np.array([True, True])), compiled(obs, np.array([True, False]))
        np.testing.assert_allclose(a_compiled[0], a_eager[0], rtol=1e-6, atol=1e-8)
    for k in eager.params:
        torch.testing.assert_close(compiled.params[k][0], eager.params[k][0], rtol=1e-6, atol=1e-9)
    assert not torch.equal(compiled.params["net.0.weight"][1], eager.params["net.0.weight"][1])


def test_each_new_episode_starts_from_the_pretrained_actor(pipeline, monkeypatch):
    """Through `evaluate`, as users run it: the second evaluation's first inner step sees the pretrained ψ."""
    args = small_args(pipeline, step_size=1e-2, max_episode_steps=3, episodes=2)
    actor, critic, world, reward, _ = itpo_eval.load_models(args)
    agent = itpo_eval.ITPOAgent(actor, critic, world, reward, args, gamma=0.99)
    calls = record_inner_steps(monkeypatch)
    itpo_eval.evaluate(agent, args, None, "first")
    moved = {k: v.clone() for k, v in agent.params.items()}
    start = len(calls)
    itpo_eval.evaluate(agent, args, None, "second")
    for k, v in stacked(actor, 2).items():
        assert torch.equal(calls[start]["params"][k], v)
    assert not torch.equal(moved["net.0.weight"], stacked(actor, 2)["net.0.weight"])


def test_imagined_return_is_in_the_envs_reward_units():
    """AntMaze's critic learned on rewards × 100, so its Q_φ is 100× the same critic's in the env's units:
    with `reward_scale` 100, Ĵ and ∇ψĴ are those of the unscaled critic (α means the same on every family)."""
    actor, critic, world, reward = tiny_problem()
    policy = itpo_eval.batched_policy(actor)
    s0 = torch.randn(1, D, dtype=torch.float64)
    eps = torch.randn(1, 4, H, *world.noise_shape, dtype=torch.float64)

    def objective_and_gradient(scale):
        params = {k: v.clone().requires_grad_() for k, v in stacked(actor).items()}
        objective = itpo_eval.imagine_rollout(policy, params, critic, world, reward, s0, eps, GAMMA, scale).sum()
        return objective, torch.autograd.grad(objective, list(params.values()))

    with torch.no_grad():
        critic.out.bias.fill_(0.5)  # Q_φ and r_ξ of comparable size, so that neither hides the other
    objective, gradient = objective_and_gradient(1.0)
    with torch.no_grad():
        critic.out.weight.mul_(100.0)
        critic.out.bias.mul_(100.0)  # the critic of rewards × 100
    scaled_objective, scaled_gradient = objective_and_gradient(100.0)
    torch.testing.assert_close(scaled_objective, objective)
    for g, scaled_g in zip(gradient, scaled_gradient):
        torch.testing.assert_close(scaled_g, g)


def test_first_adam_step_is_alpha_times_the_gradient_sign(monkeypatch):
    """With bias correction Adam's first step is α·g/(|g| + 1e-8): each weight moves by α along its gradient
    (up to float32 rounding of the step count's bias-correction terms)."""
    calls = record_inner_steps(monkeypatch)
    agent, actor = tiny_agent(1e-4, optimizer="adam")
    agent(np.random.default_rng(6).normal(size=(2, D)), np.array([True, True]))
    pretrained = stacked(actor, 2)
    _, grads = itpo_eval.inner_step(
        agent.policy, pretrained, agent.critic, agent.world, agent.reward, calls[0]["s0"], calls[0]["eps"], GAMMA
    )
    for k, g in grads.items():
        torch.testing.assert_close(agent.params[k] - pretrained[k], 1e-4 * g / (g.abs() + 1e-8), rtol=1e-4, atol=1e-12)
