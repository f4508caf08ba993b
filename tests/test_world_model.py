"""The DDPM world model f_θ(s, a, ε) and the reward / termination model."""

import pytest
import torch
from torch.autograd.functional import jacobian

from common import one_step_rmse, weights_digest
from train_dynamics import DiffusionDynamics, cosine_alpha_bar, load_dynamics
from train_reward import load_reward


def tiny_model(K=4, seed=0):
    torch.manual_seed(seed)
    model = DiffusionDynamics(3, 2, diffusion_steps=K, hidden_dim=16, num_layers=2).double()
    model.normalizer.delta_std.fill_(0.5)
    model.normalizer.delta_mean.fill_(0.1)
    return model


def test_cosine_schedule():
    ab = cosine_alpha_bar(10)
    assert ab[0] == 1 and torch.all(ab[1:] < ab[:-1]) and ab[-1] < 1e-2
    m = DiffusionDynamics(3, 2, diffusion_steps=10)
    assert m.sigma[0] == 0 and torch.all(m.sigma[1:] > 0) and m.noise_shape == (10, 3)  # k = 1 adds no noise


def test_sampler_deterministic_for_fixed_noise_and_batches_over_leading_dims():
    model = tiny_model()
    s, a = torch.randn(2, 5, 3, dtype=torch.float64), torch.rand(2, 5, 2, dtype=torch.float64)
    eps = torch.randn(2, 5, *model.noise_shape, dtype=torch.float64)
    out = model.f(s, a, eps)
    assert out.shape == (2, 5, 3)
    torch.testing.assert_close(out, model.f(s, a, eps), rtol=0, atol=0)
    flat = model.f(s.reshape(10, 3), a.reshape(10, 2), eps.reshape(10, *model.noise_shape))
    torch.testing.assert_close(out.reshape(10, 3), flat)
    assert not torch.allclose(out, model.f(s, a, torch.randn_like(eps)))


def test_sampler_gradient_matches_central_differences():
    """float64, step 1e-6, tolerance 1e-6 (relative+absolute)."""
    model = tiny_model()
    s, a = torch.randn(3, dtype=torch.float64), torch.rand(2, dtype=torch.float64)
    eps = torch.randn(*model.noise_shape, dtype=torch.float64)
    jac_s, jac_a = jacobian(lambda s_, a_: model.f(s_, a_, eps), (s, a))
    h = 1e-6
    for x, jac, which in ((s, jac_s, 0), (a, jac_a, 1)):
        for i in range(len(x)):
            d = torch.zeros_like(x)
            d[i] = h
            args_p, args_m = [s, a], [s, a]
            args_p[which], args_m[which] = x + d, x - d
            fd = (model.f(*args_p, eps) - model.f(*args_m, eps)) / (2 * h)
            torch.testing.assert_close(jac[:, i], fd, rtol=1e-6, atol=1e-6)


def test_theorem_4_1_recursion_equals_autograd():
    """A_{k−1} = ∂h_k/∂u A_k + ∂h_k/∂a, B_{k−1} = ∂h_k/∂u B_k + ∂h_k/∂s, A_K = B_K = 0;
    then ∇_a f = σ_Δ A_0 and ∇_s f = I + σ_Δ B_0 (our f adds the delta back to s)."""
    model = tiny_model(K=5)
    s, a = torch.randn(3, dtype=torch.float64), torch.rand(2, dtype=torch.float64)
    eps = torch.randn(*model.noise_shape, dtype=torch.float64)
    A, B = torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3, 3, dtype=torch.float64)
    u = eps[0]
    for i, k in enumerate(range(model.K, 0, -1)):
        z = eps[i + 1] if k > 1 else None
        h = lambda u_, s_, a_: model.reverse_step(u_, k, s_, a_, z)  # noqa: E731
        dh_du, dh_ds, dh_da = jacobian(h, (u, s, a))
        A, B = dh_du @ A + dh_da, dh_du @ B + dh_ds
        u = h(u, s, a)
    jac_s, jac_a = jacobian(lambda s_, a_: model.f(s_, a_, eps), (s, a))
    D = torch.diag(model.normalizer.delta_std)
    torch.testing.assert_close(jac_a, D @ A)
    torch.testing.assert_close(jac_s, torch.eye(3, dtype=torch.float64) + D @ B)


def test_loaded_models_are_the_trained_ones(pipeline):
    """load_dynamics / load_reward rebuild exactly the weights the training stages saved."""
    env_id = pipeline["env_id"]
    model = load_dynamics(pipeline["ckpt"]["dynamics"], env_id)
    saved = torch.load(pipeline["ckpt"]["dynamics"], weights_only=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved["model"][k]), k
    assert model.K == 3 and not torch.all(model.normalizer.delta_std == 1)  # the normaliser was fitted
    s, a = torch.randn(4, 6, 11), torch.rand(4, 6, 3) * 2 - 1
    assert model.f(s, a, torch.randn(4, 6, *model.noise_shape)).shape == (4, 6, 11)
    reward = load_reward(pipeline["ckpt"]["reward"], env_id)
    saved = torch.load(pipeline["ckpt"]["reward"], weights_only=True)
    for k, v in reward.state_dict().items():
        assert torch.equal(v, saved["model"][k]), k
    assert reward.termination  # hopper data has terminals: the head is on by default


def test_ddpm_loss_equals_a_hand_computation():
    """L = ‖ε − ε̂_θ(√ᾱ_k x_0 + √(1 − ᾱ_k) ε, k, c)‖², x_0 the normalised delta, k ~ U{1..K}, at a fixed seed."""
    model = tiny_model(K=4)
    s, a, s_next = (
        torch.randn(64, 3, dtype=torch.float64),
        torch.rand(64, 2, dtype=torch.float64),
        torch.randn(64, 3, dtype=torch.float64),
    )
    torch.manual_seed(7)
    loss = model.loss(s, a, s_next)
    torch.manual_seed(7)
    k = torch.randint(1, 5, (64,))
    noise = torch.randn(64, 3, dtype=torch.float64)
    x0 = (s_next - s - 0.1) / 0.5
    alpha_bar = cosine_alpha_bar(4)[k].unsqueeze(-1)  # ᾱ_k at index k (ᾱ_0 = 1)
    xk = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
    expected = ((model.epsilon(xk, k, s, a) - noise) ** 2).mean()
    torch.testing.assert_close(loss, expected)


def test_the_termination_head_learns_when_the_robot_falls():
    """A toy set where the episode ends exactly when s[0] > 0.6: after training with train_reward's own loss
    the head's held-out accuracy is far above the base rate (always predicting "alive")."""
    from train_reward import RewardModel, evaluate

    torch.manual_seed(0)
    s, a = torch.rand(4000, 3) * 2 - 1, torch.rand(4000, 2) * 2 - 1
    data = {"observations": s, "actions": a, "rewards": s[:, 1] + a[:, 0], "terminals": (s[:, 0] > 0.6).float()}
    train = {k: v[:3000] for k, v in data.items()}
    held_out = {k: v[3000:] for k, v in data.items()}
    model = RewardModel(3, 2, hidden_dim=64, num_layers=2)
    model.normalizer.fit(train["observations"].numpy())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(400):
        idx = torch.randint(0, 3000, (256,))
        loss = model.loss({k: v[idx] for k, v in train.items()})
        opt.zero_grad()
        loss.backward()
        opt.step()
    metrics = evaluate(model, held_out)
    base_rate = 1 - float(held_out["terminals"].mean())  # ≈ 0.8
    assert metrics["termination_accuracy"] > 0.97 > base_rate + 0.1
    assert metrics["termination_recall"] > 0.9
    assert metrics["reward_rmse"] < 0.2


def test_one_step_rmse_is_zero_for_a_perfect_model():
    class Perfect:
        noise_shape = (1, 2)

        def f(self, s, a, eps):
            return s + a

    s, a = torch.randn(10, 2), torch.randn(10, 2)
    assert one_step_rmse(Perfect(), {"observations": s, "actions": a, "next_observations": s + a}) == 0.0


def test_checkpoint_from_another_dataset_is_refused(pipeline):
    with pytest.raises(SystemExit) as err:
        load_dynamics(pipeline["ckpt"]["dynamics"], "walker2d-medium")
    assert "hopper-medium-replay" in str(err.value) and "train_dynamics.py --env-id walker2d-medium" in str(err.value)
    with pytest.raises(SystemExit) as err:
        load_reward("nowhere.pt", "hopper-medium")
    assert "python train_reward.py --env-id hopper-medium" in str(err.value)


def test_dynamics_and_meanflow_resume_at_the_saved_step(pipeline, capsys):
    import shutil

    import meanflow_onestep
    import train_dynamics

    for module, key, kwargs in (
        (train_dynamics, "dynamics", dict(diffusion_steps=3)),
        (meanflow_onestep, "meanflow", {}),
    ):
        path = str(pipeline["work"] / f"resume_{key}.pt")
        shutil.copy(pipeline["ckpt"][key], path)
        before = torch.load(path, weights_only=True)
        tiny = dict(env_id=pipeline["env_id"], hidden_dim=32, num_layers=2, eval_every=10, holdout=20, device="cpu")
        resume = lambda total: module.Args(**tiny, total_steps=total, checkpoint=path, resume=True, **kwargs)  # noqa: E731
        module.main(resume(before["step"] + 20))
        assert f"resuming {path} at step {before['step']}" in capsys.readouterr().out
        after = torch.load(path, weights_only=True)
        assert after["step"] == before["step"] + 20
        if key == "meanflow":  # the EMA is saved for sampling, the raw weights for resuming
            assert set(after) >= {"model", "raw_model"}
            assert not torch.equal(after["model"]["net.0.weight"], after["raw_model"]["net.0.weight"])
            # data tilted by another ReBRAC checkpoint than this run's: resuming would mix two weightings
            tilted_by, rebrac = after["tilt_rebrac_step"], torch.load(pipeline["ckpt"]["rebrac"], weights_only=True)
            assert tilted_by == rebrac["step"] and after["tilt_rebrac_digest"] == weights_digest(rebrac["actor"])
            torch.save({**after, "tilt_rebrac_step": tilted_by + 1}, path)
            with pytest.raises(SystemExit, match=f"tilt_rebrac_step {tilted_by + 1} \\(this run: {tilted_by}\\)"):
                module.main(resume(after["step"] + 20))
            torch.save({**after, "tilt_rebrac_digest": "another actor"}, path)  # same step, other weights
            with pytest.raises(SystemExit, match="tilt_rebrac_digest another actor"):
                module.main(resume(after["step"] + 20))
