"""CORL's own JAX ReBRAC update, timed on this machine and fed our data: what `rebrac_speed.py` compares to.

    git clone https://github.com/tinkoff-ai/CORL /tmp/CORL          # measured at its commit 6afec90
    pip install "jax[cpu]" flax optax chex                          # not in requirements.txt: this script only
    python benchmarks/corl_jax_speed.py --corl /tmp/CORL --batch-sizes 256 1024

Imports CORL's `algorithms/offline/rebrac.py` from your checkout (its networks, losses and update
functions as they are; the imports its training loop alone needs, d4rl, gym, wandb and pyrallis, are
stubbed) and runs what its `main()` runs per epoch: one jitted `fori_loop` of `--updates` updates, the
actor and targets on every second one, batches sampled inside the loop. The data are the arrays
`rebrac.py` trains on (`common.load_dataset`, a′ from `rebrac.make_replay`). XLA gets one thread, like
the `OMP_NUM_THREADS=1` stages; the rate is updates per CPU-second of this process, as in
`rebrac_speed.py`, so the two compare when run one after the other on the same core (`taskset -c 1`).
"""

import os
import sys
import time
import types
from dataclasses import dataclass
from functools import partial

import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import rebrac  # noqa: E402
from common import load_dataset, parse_env_id, require, require_positive  # noqa: E402

CORL_SCRIPT = os.path.join("algorithms", "offline", "rebrac.py")


@dataclass
class Args:
    corl: str
    """a checkout of https://github.com/tinkoff-ai/CORL (or its algorithms/offline/rebrac.py)"""
    env_id: str = "hopper-medium-replay"
    """D4RL short name (the data the update is fed)"""
    batch_sizes: tuple[int, ...] = (256, 1024)
    """batch sizes to time (CORL's MuJoCo default: 1024)"""
    updates: int = 1000
    """updates per timed epoch (CORL's num_updates_on_epoch)"""
    epochs: int = 2
    """timed epochs per batch size, after one that compiles"""

    def __post_init__(self):
        parse_env_id(self.env_id)
        require_positive(self, "updates", "epochs")
        require(all(b > 0 for b in self.batch_sizes), f"--batch-sizes must be positive, not {self.batch_sizes}")
        if os.path.isdir(self.corl):
            self.corl = os.path.join(self.corl, CORL_SCRIPT)
        require(
            os.path.isfile(self.corl),
            f"--corl: no {CORL_SCRIPT} at {self.corl}; clone https://github.com/tinkoff-ai/CORL and pass its folder",
        )


def import_corl(path: str):
    """CORL's rebrac.py as a module, with the imports of its training loop stubbed."""
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    try:
        import jax
    except ImportError:
        sys.exit('error: JAX is not installed: pip install "jax[cpu]" flax optax chex (this benchmark only)')
    for name in ("d4rl", "gym", "wandb", "pyrallis"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["gym"].Env = object  # only in type hints
    sys.modules["pyrallis"].wrap = lambda *a, **k: lambda f: f
    if not hasattr(jax, "tree_map"):  # removed from newer JAX; CORL's sample_batch calls it
        jax.tree_map = jax.tree_util.tree_map
    import importlib.util

    spec = importlib.util.spec_from_file_location("corl_rebrac", path)
    corl = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(corl)
    return corl


def time_corl(corl, replay: dict, batch_size: int, updates: int, epochs: int) -> list[float]:
    """CORL's epoch loop (its main() without evaluation and logging): updates per CPU-second per epoch,
    the first (compilation) included."""
    import jax
    import jax.numpy as jnp
    import optax

    config = corl.Config(batch_size=batch_size, num_updates_on_epoch=updates)
    buffer = corl.ReplayBuffer()
    buffer.data = {k: jnp.asarray(v) for k, v in replay.items()}
    key, actor_key, critic_key = jax.random.split(jax.random.PRNGKey(config.train_seed), 3)
    state, action = buffer.data["states"][:1], buffer.data["actions"][:1]

    def train_state(cls, module, key, *inputs, lr):
        return cls.create(
            apply_fn=module.apply,
            params=module.init(key, *inputs),
            target_params=module.init(key, *inputs),
            tx=optax.adam(learning_rate=lr),
        )

    hidden = dict(hidden_dim=config.hidden_dim)
    actor = train_state(
        corl.ActorTrainState,
        corl.DetActor(
            action_dim=action.shape[-1], layernorm=config.actor_ln, n_hiddens=config.actor_n_hiddens, **hidden
        ),
        actor_key,
        state,
        lr=config.actor_learning_rate,
    )
    critic = train_state(
        corl.CriticTrainState,
        corl.EnsembleCritic(num_critics=2, layernorm=config.critic_ln, n_hiddens=config.critic_n_hiddens, **hidden),
        critic_key,
        state,
        action,
        lr=config.critic_learning_rate,
    )
    losses = dict(
        gamma=config.gamma,
        actor_bc_coef=config.actor_bc_coef,
        critic_bc_coef=config.critic_bc_coef,
        tau=config.tau,
        policy_noise=config.policy_noise,
        noise_clip=config.noise_clip,
    )
    full_update = partial(corl.update_td3, normalize_q=config.normalize_q, **losses)
    critic_update = partial(corl.update_td3_no_targets, **losses)
    delayed = jnp.equal(jnp.arange(updates) % config.policy_freq, 0).astype(int)

    def step(i, carry):  # its td3_loop_update_step
        key, batch_key = jax.random.split(carry["key"])
        batch = carry["buffer"].sample_batch(batch_key, batch_size=batch_size)
        given = dict(key=key, actor=carry["actor"], critic=carry["critic"], batch=batch, metrics=carry["metrics"])
        key, actor, critic, metrics = jax.lax.cond(
            delayed[i], partial(full_update, **given), partial(critic_update, **given)
        )
        carry.update(key=key, actor=actor, critic=critic, metrics=metrics)
        return carry

    names = ["critic_loss", "q_min", "actor_loss", "batch_entropy", "bc_mse_policy", "bc_mse_random", "action_mse"]
    carry, rates = {"key": key, "actor": actor, "critic": critic, "buffer": buffer}, []
    for _ in range(epochs + 1):
        carry["metrics"] = corl.Metrics.create(names)
        start = time.process_time()
        carry = jax.lax.fori_loop(0, updates, step, carry)
        jax.block_until_ready(carry["critic"].params)
        rates.append(updates / (time.process_time() - start))
    return rates


def main(args: Args) -> dict:
    corl = import_corl(args.corl)
    data, _, _ = load_dataset(args.env_id)
    ours = {k: v.numpy() for k, v in rebrac.make_replay(data, 1.0, "cpu").items()}
    names = {"obs": "states", "next_obs": "next_states"}  # CORL's keys
    replay = {names.get(k, k): v for k, v in ours.items()}
    out = {}
    for b in args.batch_sizes:
        rates = time_corl(corl, replay, b, args.updates, args.epochs)
        out[b] = max(rates[1:])
        print(
            f"CORL JAX ReBRAC batch {b:>5}: {out[b]:7.1f} updates per CPU-second (best of {args.epochs} epochs of "
            f"{args.updates}; epochs {', '.join(f'{r:.1f}' for r in rates[1:])}; the first, compiling: {rates[0]:.1f})",
            flush=True,
        )
    return out


if __name__ == "__main__":
    main(tyro.cli(Args))
