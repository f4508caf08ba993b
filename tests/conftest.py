"""A tiny pipeline made once per test session: hopper datasets from a few hundred SAC steps, and
tiny ReBRAC, dynamics, reward and MeanFlow checkpoints trained on them for a few steps."""

import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
torch.set_num_threads(1)

ENV_ID = "hopper-medium-replay"


def tiny_rebrac_args(**settings):
    """rebrac.Args of the pipeline's ReBRAC checkpoint, with the given settings (tests that resume that
    checkpoint must train it as it was trained)."""
    import rebrac

    base = dict(
        env_id=ENV_ID,
        total_updates=20,
        batch_size=64,
        hidden_dim=32,
        eval_every=10**9,
        checkpoint_every=10,
        eval_episodes=2,
        device="cpu",
    )
    return rebrac.Args(**{**base, **settings})


def tiny_itpo_args(pipeline, **settings):
    """itpo_eval.Args on the pipeline's tiny checkpoints, on the CPU, with the given settings."""
    import itpo_eval

    c = pipeline["ckpt"]
    paths = dict(rebrac_checkpoint=c["rebrac"], dynamics_checkpoint=c["dynamics"], reward_checkpoint=c["reward"])
    return itpo_eval.Args(**{"env_id": pipeline["env_id"], "device": "cpu", **paths, **settings})


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory):
    import collect_dataset
    import meanflow_onestep
    import rebrac
    import train_dynamics
    import train_reward

    work = tmp_path_factory.mktemp("pipeline")
    old_cwd, old_path = os.getcwd(), os.environ.get("MINARI_DATASETS_PATH")
    os.chdir(work)
    os.environ["MINARI_DATASETS_PATH"] = str(work / "datasets")
    collect_dataset.main(
        collect_dataset.Args(
            env="hopper",
            total_timesteps=600,
            snapshot_every=200,
            learning_starts=100,
            transitions=300,
            eval_episodes=1,
            work_dir=str(work / "collect"),
        )
    )
    ckpt = {k: str(work / f"checkpoints/{ENV_ID}/{k}_seed0.pt") for k in ("rebrac", "dynamics", "reward", "meanflow")}
    rebrac.train(tiny_rebrac_args())
    train_dynamics.main(
        train_dynamics.Args(
            env_id=ENV_ID,
            diffusion_steps=3,
            hidden_dim=32,
            num_layers=2,
            total_steps=100,
            eval_every=50,
            holdout=20,
            device="cpu",
        )
    )
    train_reward.main(
        train_reward.Args(
            env_id=ENV_ID, hidden_dim=32, num_layers=2, total_steps=100, eval_every=50, holdout=20, device="cpu"
        )
    )
    meanflow_onestep.main(
        meanflow_onestep.Args(
            env_id=ENV_ID, hidden_dim=32, num_layers=2, total_steps=50, eval_every=25, holdout=20, device="cpu"
        )
    )
    yield {"work": work, "ckpt": ckpt, "env_id": ENV_ID}
    os.chdir(old_cwd)
    if old_path is None:
        os.environ.pop("MINARI_DATASETS_PATH", None)
    else:
        os.environ["MINARI_DATASETS_PATH"] = old_path
