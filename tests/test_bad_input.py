"""Odd but plausible input: each is a one-line error or does what it says, never a traceback, an
ignored flag or a run that exits 0 having done something else."""

import json
import shutil

import pytest
import torch

import collect_dataset as cd
import common
import itpo_eval
import meanflow_onestep
import rebrac
import train_dynamics
import train_reward
from conftest import tiny_itpo_args, tiny_rebrac_args


def exit_message(call) -> str:
    """The one-line error of `call()` (which must exit)."""
    with pytest.raises(SystemExit) as err:
        call()
    message = str(err.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def test_collect_command_makes_the_dataset_it_is_named_for():
    """Every D4RL name's suggested command is one collect_dataset.py accepts and that writes that name's
    dataset (antmaze-medium-play was sent to `--env antmaze-medium-play`, which collect_dataset refuses)."""
    for env_id in common.ENV_IDS:
        command = common.collect_command(env_id)
        env = command.split("--env ")[1]
        family, kind = common.parse_env_id(env_id)
        if family == "antmaze":
            size = env.split("-", 1)[1]
            assert env == f"antmaze-{size}" and kind in cd.ANTMAZE_SETS[size], command
        else:
            assert env == family and env in cd.MUJOCO_ENVS, command


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: rebrac.Args(gamma=-1.0), "--gamma must be in (0, 1]"),
        (lambda: rebrac.Args(tau=0.0), "--tau must be in (0, 1]"),
        (lambda: rebrac.Args(eval_seed=-1), "--eval-seed must be ≥ 0"),  # failed after training, in gymnasium
        (lambda: rebrac.Args(reward_scale=0.0), "--reward-scale must be a positive number"),
        (lambda: train_reward.Args(holdout=-5), "--holdout must be a positive number"),  # trained on 5 transitions
        (lambda: train_dynamics.Args(holdout=0), "--holdout must be a positive number"),  # nan metrics
        (lambda: meanflow_onestep.Args(holdout=0), "--holdout must be a positive number"),
        (lambda: cd.Args(total_timesteps=100, snapshot_every=200), "must be a multiple of --snapshot-every"),
        (lambda: cd.Args(total_timesteps=300, snapshot_every=200), "must be a multiple of --snapshot-every"),
        (lambda: cd.Args(transitions=0), "--transitions must be a positive number"),  # empty datasets, exit 0
        (lambda: cd.Args(env="antmaze", behaviour_policy="no/ant.zip"), "--behaviour-policy no/ant.zip: no such file"),
        (lambda: cd.Args(behaviour_policy=__file__), "--behaviour-policy, --train-ant: only the AntMaze sets"),
        (lambda: cd.Args(env="antmaze", behaviour_policy=__file__, train_ant=True), "--train-ant trains the ant"),
    ],
)
def test_bad_flags_are_refused_at_parse_time(make, expected):
    assert expected in exit_message(make)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("args_class", [rebrac.Args, train_dynamics.Args, train_reward.Args, meanflow_onestep.Args])
def test_cuda_without_cuda_is_one_line(args_class):
    assert "torch sees no CUDA device" in exit_message(lambda: args_class(device="cuda"))


def test_missing_local_dataset_id_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    message = exit_message(lambda: common.load_dataset("hopper-medium", "local/hopper/nope-v0", verbose=False))
    assert "local/hopper/nope-v0 is not under" in message
    assert "python collect_dataset.py --env hopper and drop --dataset-id" in message


@pytest.mark.parametrize("record", ['{"step": 400, "snap', "[]", '{"snapshots": []}'])
def test_unreadable_collection_record_is_one_line(tmp_path, monkeypatch, record):
    """A cut-off or foreign progress.json was a JSONDecodeError or KeyError traceback on resume."""
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "collect" / "hopper" / "seed0"
    work.mkdir(parents=True)
    (work / "progress.json").write_text(record)
    args = cd.Args(env="hopper", total_timesteps=400, snapshot_every=200, work_dir=str(tmp_path / "collect"))
    message = exit_message(lambda: cd.main(args))
    assert "cannot resume from" in message and "progress.json" in message and "delete" in message


# ---------------------------------------------------------------------------------------------
# --resume of a checkpoint that is finished, past the budget, or trained with other settings
# ---------------------------------------------------------------------------------------------
def rebrac_args(path, **kw):
    return tiny_rebrac_args(eval_episodes=1, checkpoint=path, resume=True, **kw)


def test_rebrac_resume(pipeline, tmp_path, capsys):
    path = str(tmp_path / "rebrac.pt")
    shutil.copy(pipeline["ckpt"]["rebrac"], path)  # 20 updates, hidden 32, batch 64
    before = open(path, "rb").read()
    out = rebrac.train(rebrac_args(path))
    assert "already at update 20 of 20: nothing to train" in capsys.readouterr().out
    assert out["updates"] == 0 and open(path, "rb").read() == before  # was: "0 updates ... score nan"
    message = exit_message(lambda: rebrac.train(rebrac_args(path, total_updates=10)))
    assert "already at step 20, past --total-updates 10" in message  # was: "-10 updates", exit 0
    message = exit_message(lambda: rebrac.train(rebrac_args(path, total_updates=30, hidden_dim=16)))
    assert "--hidden-dim 32 (this run: 16)" in message  # was: a size-mismatch traceback
    message = exit_message(lambda: rebrac.train(rebrac_args(path, total_updates=30, actor_lr=1e-4)))
    assert "--actor-lr 0.001 (this run: 0.0001)" in message  # was: ignored (Adam's saved lr won)
    assert open(path, "rb").read() == before


def test_world_model_resume(pipeline, tmp_path, capsys):
    path = str(tmp_path / "reward.pt")
    shutil.copy(pipeline["ckpt"]["reward"], path)  # 100 steps, hidden 32, 2 layers
    kw = dict(env_id=pipeline["env_id"], num_layers=2, eval_every=50, holdout=20, device="cpu", checkpoint=path)
    metrics = train_reward.main(train_reward.Args(hidden_dim=32, total_steps=100, resume=True, **kw))
    assert "already at step 100 of 100: nothing to train" in capsys.readouterr().out
    assert metrics == torch.load(path, weights_only=True)["metrics"]  # was: empty metrics, "0 steps"
    message = exit_message(
        lambda: train_reward.main(train_reward.Args(hidden_dim=32, total_steps=50, resume=True, **kw))
    )
    assert "past --total-steps 50" in message
    message = exit_message(
        lambda: train_reward.main(train_reward.Args(hidden_dim=64, total_steps=200, resume=True, **kw))
    )
    assert "--hidden-dim 32 (this run: 64)" in message


def test_holdout_over_a_fifth_is_said(pipeline, tmp_path, capsys):
    train_reward.main(
        train_reward.Args(
            env_id=pipeline["env_id"],
            hidden_dim=8,
            num_layers=1,
            total_steps=2,
            holdout=10**6,
            checkpoint=str(tmp_path / "r.pt"),
            device="cpu",
        )
    )
    assert "--holdout 1000000 is over a fifth of the" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# ITPO: a checkpoint of the wrong stage, an ignored --dataset-id, the episode limit in summary.json
# ---------------------------------------------------------------------------------------------
def test_checkpoint_of_another_stage_is_refused(pipeline):
    message = exit_message(lambda: meanflow_onestep.load_meanflow(pipeline["ckpt"]["dynamics"], pipeline["env_id"]))
    assert "is a dynamics checkpoint, not a meanflow one" in message  # was: a TypeError traceback


def test_remake_hint_names_the_checkpoint_path_given(pipeline, tmp_path):
    elsewhere = str(tmp_path / "my rebrac.pt")
    message = exit_message(lambda: common.load_checkpoint(elsewhere, pipeline["env_id"], "rebrac"))
    assert message.endswith(
        f"make it with: python rebrac.py --env-id {pipeline['env_id']} --seed 0 --checkpoint '{elsewhere}'"
    )
    default = common.checkpoint_path("hopper-expert", "reward", 1)
    message = exit_message(lambda: common.load_checkpoint(default, "hopper-expert", "reward", 1))
    assert message.endswith(
        "make it with: python train_reward.py --env-id hopper-expert --seed 1"
    )  # no flag: it is the default


def itpo_args(pipeline, **kw):
    return tiny_itpo_args(pipeline, **{"particles": 4, "horizon": 2, "episodes": 1, "baseline": False, **kw})


def test_itpo_refuses_what_it_would_ignore(pipeline):
    message = exit_message(lambda: itpo_eval.main(itpo_args(pipeline, dataset_id="local/hopper/nope-v0")))
    assert "--dataset-id chooses the evaluation env of AntMaze datasets only" in message  # was: ignored, exit 0
    assert "--eval-seed must be ≥ 0" in exit_message(lambda: itpo_eval.main(itpo_args(pipeline, eval_seed=-1)))


@pytest.mark.parametrize("cut, applied", [(3, 3), (5000, 1000), (None, 1000)])
def test_summary_names_the_episode_limit_that_applied(pipeline, cut, applied):
    summary = itpo_eval.main(itpo_args(pipeline, max_episode_steps=cut, run_name=f"limit{cut}"))
    with open(f"runs/limit{cut}/summary.json") as f:
        assert json.load(f)["itpo"] == json.loads(json.dumps(summary["itpo"]))
    assert summary["itpo"]["episode_limit"] == applied
    assert summary["itpo"]["env"]["max_episode_steps"] == 1000  # the env's own
    assert max(summary["itpo"]["lengths"]) <= applied


def test_itpo_on_a_cpu_says_what_a_large_m_and_compile_cost(pipeline, capsys, monkeypatch):
    itpo_eval.main(itpo_args(pipeline, particles=256, max_episode_steps=2))
    assert "note:" not in capsys.readouterr().out  # the CPU range: no notice
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)  # the notice, not minutes of compiling
    itpo_eval.main(itpo_args(pipeline, particles=257, max_episode_steps=2, compile=True))
    out = capsys.readouterr().out
    assert "[itpo] note: M=257 on a CPU: about 30 ms per env step" in out and "try --particles 32 to 256" in out
    assert "[itpo] note: --compile on a CPU compiles for minutes" in out
    assert "[itpo] on " in out and "thread(s)" in out  # the start line names the device


def test_a_missing_shipped_ant_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(cd, "SHIPPED_ANT", str(tmp_path / "data/antmaze_goal_ant.zip"))
    message = exit_message(lambda: cd.main(cd.Args(env="antmaze-umaze", work_dir=str(tmp_path / "c"))))
    assert "the shipped ant" in message and "is missing" in message and "--train-ant" in message
