"""ReBRAC: hyper-parameters, networks, critic target, end-to-end run and resume."""

import numpy as np
import pytest
import torch

import rebrac
from conftest import tiny_rebrac_args

# The (β_a, β_c) table of CORL's ReBRAC configs, written out again so that the script's copy is checked against it.
DESIGN_TABLE = """
halfcheetah .001 .1 .001 .01 .01 .01 .01 .1 .01 .001 .001 .1
hopper .001 .01 .01 .01 .1 .1 .1 .01 .05 .5 .01 .01
walker2d .01 0 .05 .1 .01 .5 .01 .01 .05 .01 .01 .01
"""
KINDS = ["random", "medium", "expert", "medium-expert", "medium-replay", "full-replay"]
ANTMAZE = {
    "umaze": (0.003, 0.002),
    "umaze-diverse": (0.003, 0.001),
    "medium-play": (0.001, 0.0005),
    "medium-diverse": (0.001, 0),
    "large-play": (0.002, 0.001),
    "large-diverse": (0.002, 0.002),
}


def test_beta_table_matches_design_for_all_24_datasets():
    expected = {f"antmaze-{k}": v for k, v in ANTMAZE.items()}
    for line in DESIGN_TABLE.strip().splitlines():
        env, *values = line.split()
        for i, kind in enumerate(KINDS):
            expected[f"{env}-{kind}"] = (float(values[2 * i]), float(values[2 * i + 1]))
    assert set(rebrac.REBRAC_BETAS) == set(expected) and len(expected) == 24
    for env_id, betas in expected.items():
        assert rebrac.REBRAC_BETAS[env_id] == pytest.approx(betas), env_id


def test_family_defaults_and_overrides():
    a = rebrac.resolve_args(rebrac.Args(env_id="antmaze-large-diverse"))
    assert (a.actor_lr, a.critic_lr, a.batch_size, a.gamma, a.reward_scale) == (3e-4, 5e-5, 256, 0.999, 100.0)
    assert (a.actor_bc_coef, a.critic_bc_coef) == (0.002, 0.002)
    m = rebrac.resolve_args(rebrac.Args(env_id="hopper-medium-replay", critic_bc_coef=0.3, batch_size=32))
    assert (m.actor_lr, m.critic_lr, m.gamma, m.reward_scale) == (1e-3, 1e-3, 0.99, 1.0)
    assert (m.actor_bc_coef, m.critic_bc_coef, m.batch_size) == (0.05, 0.3, 32)


def test_architecture_and_init():
    actor, critic = rebrac.Actor(5, 2), rebrac.Critic(5, 2)
    linears = [m for m in actor.net if isinstance(m, torch.nn.Linear)]
    assert [l.out_features for l in linears] == [256, 256, 256, 2]
    assert linears[-1].weight.abs().max() <= 1e-3 and linears[0].bias.eq(0.1).all()
    assert linears[0].weight.abs().max() <= 1 / np.sqrt(5)
    assert critic.out.weight.abs().max() <= 3e-3 and critic.hidden[1].bias.eq(0.1).all()
    s, a = torch.randn(7, 4, 5), torch.rand(7, 4, 2)
    assert actor(s).shape == (7, 4, 2) and actor(s).abs().max() <= 1
    q = critic(s, a)
    assert q.shape == (2, 7, 4)
    # the two critics are independent networks: critic i equals a plain MLP with its weights
    x = torch.cat([s, a], -1)
    for i in range(2):
        h = x
        for layer, norm in zip(critic.hidden, critic.norms):
            h = norm(torch.relu(h @ layer.weight[i] + layer.bias[i]))
        torch.testing.assert_close(q[i], (h @ critic.out.weight[i] + critic.out.bias[i]).squeeze(-1))


def test_critic_target_by_hand():
    batch = {
        "next_obs": torch.zeros(4, 3),
        "rewards": torch.tensor([1.0, 2.0, 3.0, 4.0]),
        "dones": torch.tensor([0.0, 1.0, 0.0, 0.0]),
        "next_actions": torch.tensor([[0.5], [0.0], [1.0], [-1.0]]),
    }
    actor_target = lambda s: torch.tensor([[0.9], [0.0], [0.0], [-0.2]])  # noqa: E731
    q_values = torch.tensor([[10.0, 5.0, 7.0, 1.0], [8.0, 6.0, 9.0, 2.0]])
    critic_target = lambda s, a: q_values  # noqa: E731  (min over critics: 8, 5, 7, 1)
    noise = torch.tensor([[1.0], [0.0], [10.0], [-10.0]])  # 0.2·noise, clipped to ±0.5
    target = rebrac.critic_target(
        batch, actor_target, critic_target, gamma=0.9, critic_bc_coef=0.5, policy_noise=0.2, noise_clip=0.5, noise=noise
    )
    a_tilde = torch.tensor([1.0, 0.0, 0.5, -0.7])  # clip(0.9 + 0.2, ±1), 0, 0 + 0.5, −0.2 − 0.5
    penalty = (a_tilde - batch["next_actions"][:, 0]) ** 2
    expected = batch["rewards"] + 0.9 * (1 - batch["dones"]) * (torch.tensor([8.0, 5.0, 7.0, 1.0]) - 0.5 * penalty)
    torch.testing.assert_close(target, expected)
    assert target[1] == 2.0  # terminal: no bootstrap


def test_replay_bootstraps_timeouts_and_keeps_next_actions_in_episode():
    data = {
        "observations": np.zeros((5, 2), np.float32),
        "next_observations": np.zeros((5, 2), np.float32),
        "actions": np.arange(5, dtype=np.float32)[:, None],
        "rewards": np.ones(5, np.float32),
        "terminals": np.array([0, 1, 0, 0, 0], np.float32),
        "timeouts": np.array([0, 0, 0, 1, 0], np.float32),
    }
    replay = rebrac.make_replay(data, reward_scale=100.0, device="cpu")
    assert replay["dones"].tolist() == [0, 1, 0, 0, 0]  # the timeout at index 3 is bootstrapped
    assert replay["next_actions"][:, 0].tolist() == [1, 1, 3, 3, 4]
    assert replay["rewards"].tolist() == [100.0] * 5


def test_actor_loss_normalises_q():
    actor, critic = rebrac.Actor(3, 1, 8), rebrac.Critic(3, 1, 8)
    batch = {"obs": torch.randn(16, 3), "actions": torch.rand(16, 1)}
    loss, q, lmbda, bc = rebrac.actor_loss_fn(actor, critic, batch, actor_bc_coef=0.1, normalize_q=True)
    pi = actor(batch["obs"])
    qmin = critic(batch["obs"], pi).min(0).values
    torch.testing.assert_close(lmbda, 1 / qmin.abs().mean())
    torch.testing.assert_close(loss, (0.1 * ((pi - batch["actions"]) ** 2).sum(-1) - lmbda * qmin).mean())


def test_end_to_end_checkpoint_and_resume(pipeline, capsys):
    path = pipeline["ckpt"]["rebrac"]
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["step"] == 20 and ckpt["env_id"] == "hopper-medium-replay"
    assert ckpt["obs_dim"] == 11 and ckpt["act_dim"] == 3
    actor, critic = rebrac.Actor(11, 3, 32), rebrac.Critic(11, 3, 32)
    for module, key in (
        (actor, "actor"),
        (critic, "critic"),
        (rebrac.Actor(11, 3, 32), "actor_target"),
        (rebrac.Critic(11, 3, 32), "critic_target"),
    ):
        module.load_state_dict(ckpt[key])  # strict: every weight is there, with its shape
    assert len(ckpt["actor_opt"]["state"]) == len(list(actor.parameters()))  # Adam's moments, to resume
    resumed = str(pipeline["work"] / "resumed.pt")
    torch.save(ckpt, resumed)
    rebrac.train(tiny_rebrac_args(total_updates=30, eval_episodes=1, checkpoint=resumed, resume=True))
    assert "resuming" in capsys.readouterr().out
    after = torch.load(resumed, weights_only=True)
    assert after["step"] == 30
    assert not torch.equal(after["actor"]["net.0.weight"], ckpt["actor"]["net.0.weight"])


def test_update_equals_the_plain_reference_update_bit_for_bit(pipeline):
    """The script's update (frozen critic in the actor step, actor target moved before the step, foreach
    Adam and lerp) trains exactly the weights of ReBRAC's update written the plain way, as the committed
    rows were trained: per-tensor Adam, the actor's backward also into the critic's weights (discarded),
    the actor target moved after the step toward a copy of the pre-update actor."""
    import copy

    from common import load_dataset, seed_everything

    args = rebrac.resolve_args(tiny_rebrac_args(total_updates=14, checkpoint=str(pipeline["work"] / "plain.pt")))
    rebrac.train(args)
    trained = torch.load(args.checkpoint, weights_only=True)

    seed_everything(args.seed)
    data, _, _ = load_dataset(args.env_id, verbose=False)
    replay = rebrac.make_replay(data, args.reward_scale, "cpu")
    obs_dim, act_dim = data["observations"].shape[1], data["actions"].shape[1]
    actor, critic = rebrac.Actor(obs_dim, act_dim, args.hidden_dim), rebrac.Critic(obs_dim, act_dim, args.hidden_dim)
    actor_target, critic_target = copy.deepcopy(actor), copy.deepcopy(critic)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=args.actor_lr, foreach=False)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=args.critic_lr, foreach=False)
    for step in range(args.total_updates):
        idx = torch.randint(0, len(replay["obs"]), (args.batch_size,))
        batch = {k: v[idx] for k, v in replay.items()}
        target = rebrac.critic_target(
            batch, actor_target, critic_target, args.gamma, args.critic_bc_coef, args.policy_noise, args.noise_clip
        )
        critic_opt.zero_grad()
        ((critic(batch["obs"], batch["actions"]) - target) ** 2).mean(1).sum(0).backward()
        critic_opt.step()
        if (step + 1) % args.policy_freq == 0:
            before = copy.deepcopy(actor)
            actor_opt.zero_grad()
            rebrac.actor_loss_fn(actor, critic, batch, args.actor_bc_coef, args.normalize_q)[0].backward()
            actor_opt.step()
            with torch.no_grad():
                for net, source in ((actor_target, before), (critic_target, critic)):
                    for p_target, p in zip(net.parameters(), source.parameters()):
                        p_target.lerp_(p, args.tau)
    for key, net in (
        ("actor", actor),
        ("critic", critic),
        ("actor_target", actor_target),
        ("critic_target", critic_target),
    ):
        for name, value in net.state_dict().items():
            assert torch.equal(trained[key][name], value), f"{key}.{name} differs from the plain update"
