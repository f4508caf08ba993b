"""The one-step MeanFlow world model."""

import math
import os
import sys

import torch
from torch.autograd.functional import jacobian

import itpo_eval
import meanflow_onestep as mf


def tiny(seed=0):
    torch.manual_seed(seed)
    return mf.MeanFlowDynamics(3, 2, hidden_dim=16, num_layers=2).double()


def test_one_step_sampling_is_deterministic_and_differentiable():
    model = tiny()
    s, a = torch.randn(3, dtype=torch.float64), torch.rand(2, dtype=torch.float64)
    eps = torch.randn(*model.noise_shape, dtype=torch.float64)
    assert model.noise_shape == (1, 3)
    torch.testing.assert_close(model.f(s, a, eps), model.f(s, a, eps), rtol=0, atol=0)
    jac_s, jac_a = jacobian(lambda s_, a_: model.f(s_, a_, eps), (s, a))
    h = 1e-6
    for i in range(2):
        d = torch.zeros(2, dtype=torch.float64)
        d[i] = h
        fd = (model.f(s, a + d, eps) - model.f(s, a - d, eps)) / (2 * h)
        torch.testing.assert_close(jac_a[:, i], fd, rtol=1e-6, atol=1e-6)
    for i in range(3):
        d = torch.zeros(3, dtype=torch.float64)
        d[i] = h
        fd = (model.f(s + d, a, eps) - model.f(s - d, a, eps)) / (2 * h)
        torch.testing.assert_close(jac_s[:, i], fd, rtol=1e-6, atol=1e-6)
    batch = model.f(s.expand(4, 5, 3), a.expand(4, 5, 2), eps.expand(4, 5, 1, 3))
    torch.testing.assert_close(batch[2, 3], model.f(s, a, eps))


def test_jvp_target_equals_finite_differences():
    model = tiny()
    n = 6
    z, v = torch.randn(n, 3, dtype=torch.float64), torch.randn(n, 3, dtype=torch.float64)
    s, a = torch.randn(n, 3, dtype=torch.float64), torch.rand(n, 2, dtype=torch.float64)
    t = torch.rand(n, dtype=torch.float64) * 0.8 + 0.1
    r = t * torch.rand(n, dtype=torch.float64)
    u, target = mf.meanflow_target(model, z, r, t, v, s, a)
    h = 1e-6
    dudt = (model.u(z + h * v, r, t + h, s, a) - model.u(z - h * v, r, t - h, s, a)) / (2 * h)
    torch.testing.assert_close(u, model.u(z, r, t, s, a))
    torch.testing.assert_close(target, v - (t - r)[:, None] * dudt, rtol=1e-6, atol=1e-7)


def test_tilt_weights():
    s, a = torch.randn(8, 3), torch.rand(8, 2)
    assert torch.equal(mf.tilt_weights(None, s, a, 1.0), torch.ones(8))

    class Zero(torch.nn.Module):
        def forward(self, obs):
            return torch.zeros(obs.shape[0], 2)

    assert torch.equal(mf.tilt_weights(Zero(), s, a, math.inf), torch.ones(8))
    torch.testing.assert_close(mf.tilt_weights(Zero(), s, a, 0.5), torch.exp(-(a**2).sum(-1) / 0.5))


def test_temperature_for_ess_meets_the_share_and_sharpens_as_it_falls():
    """τ from --tilt-ess: exp(−d/τ) keeps the asked share of the effective sample size; a smaller share is a
    sharper tilt (smaller τ); distances that are all alike leave nothing to tilt (inf)."""
    distance = torch.rand(1000) ** 3 * 4  # most transitions near the policy, a tail far from it
    temperatures = []
    for share in (0.9, 0.5, 0.1):
        tau = mf.temperature_for_ess(distance, share)
        assert abs(mf.effective_sample_share(torch.exp(-distance.double() / tau)) - share) < 1e-6
        temperatures.append(tau)
    assert temperatures[0] > temperatures[1] > temperatures[2] > 0
    assert mf.temperature_for_ess(torch.full((10,), 0.7), 0.5) == math.inf
    assert mf.effective_sample_share(torch.ones(7)) == 1.0
    assert abs(mf.effective_sample_share(torch.tensor([1.0, 0, 0, 0])) - 0.25) < 1e-12


def test_tilt_ess_trains_under_the_tau_it_chose(pipeline, tmp_path, capsys):
    """--tilt-ess 0.5: the weights the run trains on keep half the data's effective sample size (printed) and the
    checkpoint records the chosen τ beside the share; a resume re-derives the same τ."""
    args = dict(
        env_id=pipeline["env_id"],
        hidden_dim=16,
        num_layers=2,
        total_steps=4,
        eval_every=2,
        holdout=20,
        device="cpu",
        tilt_ess=0.5,
        rebrac_checkpoint=pipeline["ckpt"]["rebrac"],
        checkpoint=str(tmp_path / "meanflow_ess.pt"),
    )
    mf.main(mf.Args(**args))
    assert "(chosen by --tilt-ess 0.5): effective sample size 50.0% of the data" in capsys.readouterr().out
    ckpt = torch.load(args["checkpoint"], weights_only=True)
    assert ckpt["tilt_ess"] == 0.5 and 0 < ckpt["tilt_temperature"] < 1.0  # sharper than the default τ = 1
    mf.main(mf.Args(**{**args, "total_steps": 6, "resume": True}))  # same τ, so the resume is accepted
    assert torch.load(args["checkpoint"], weights_only=True)["step"] == 6


def test_time_sampling():
    torch.manual_seed(0)
    r, t = mf.sample_times(20_000, mf.Args(), "cpu")
    assert torch.all(r <= t) and torch.all((t > 0) & (t < 1))
    assert abs((r == t).float().mean().item() - 0.75) < 0.02


def test_tilt_weights_the_loss_as_weighting_each_transition_by_hand():
    """meanflow_loss = mean_i (w_i / mean w) · ℓ_i: find each ℓ_i at a fixed seed with a one-hot tilt, then
    check the loss of any tilt is the w-weighted mean of those per-transition losses."""
    model = tiny()
    n = 6
    batch = {
        "observations": torch.randn(n, 3, dtype=torch.float64),
        "actions": torch.rand(n, 2, dtype=torch.float64),
        "next_observations": torch.randn(n, 3, dtype=torch.float64),
    }
    args = mf.Args()

    def loss_with(tilt):
        torch.manual_seed(3)
        return mf.meanflow_loss(model, {**batch, "tilt": tilt}, args)

    per_transition = torch.stack([loss_with(torch.eye(n, dtype=torch.float64)[i]) for i in range(n)])
    weights = torch.tensor([0.1, 2.0, 0.5, 1.0, 3.0, 0.05], dtype=torch.float64)
    torch.testing.assert_close(loss_with(weights), (weights / weights.sum() * per_transition).sum())
    torch.testing.assert_close(loss_with(torch.ones(n, dtype=torch.float64)), per_transition.mean())
    assert per_transition.std() > 0  # the transitions' losses differ, so the weighting matters


def test_itpo_runs_with_the_meanflow_world_model(pipeline):
    ckpt = torch.load(pipeline["ckpt"]["meanflow"], weights_only=True)
    assert ckpt["tilt_temperature"] == 1.0 and ckpt["step"] == 50
    args = itpo_eval.Args(
        env_id=pipeline["env_id"],
        particles=4,
        episodes=2,
        max_episode_steps=10,
        device="cpu",
        world_model="meanflow",
        step_size=1e-2,
        rebrac_checkpoint=pipeline["ckpt"]["rebrac"],
        dynamics_checkpoint=pipeline["ckpt"]["meanflow"],
        reward_checkpoint=pipeline["ckpt"]["reward"],
        run_name="meanflow",
    )
    summary = itpo_eval.main(args)
    assert summary["settings"]["noise_shape"] == [1, 11]
    assert summary["itpo"]["skipped_updates"] == 0


def test_speed_benchmark_runs(pipeline, capsys):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    import world_model_speed

    world_model_speed.main(
        world_model_speed.Args(
            env_id=pipeline["env_id"],
            checkpoints=str(pipeline["work"] / "checkpoints"),
            particles=(4,),
            episodes=2,
            repeats=2,
            device="cpu",
        )
    )
    out = capsys.readouterr().out
    assert "ms per inner step" in out and "DDPM / MeanFlow" in out
