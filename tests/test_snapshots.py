"""--snapshot-every: the checkpoints kept along training, which the budget curves evaluate ITPO with."""

import json
import time

import pytest
import torch

import common
import rebrac
import train_dynamics
from test_cli import one_line_error, run


def test_rebrac_snapshots_are_loadable_and_record_their_step(pipeline):
    work, env_id = pipeline["work"], pipeline["env_id"]
    cwd = work / "snapshots"
    cwd.mkdir()
    small = ["--env-id", env_id, "--hidden-dim", "16", "--batch-size", "8", "--eval-episodes", "1"]
    result = run("rebrac.py", *small, "--total-updates", "6", "--eval-every", "2", "--snapshot-every", "4", cwd=cwd)
    assert result.returncode == 0, result.stderr[-2000:]
    final = cwd / common.checkpoint_path(env_id, "rebrac", 0)
    snapshot = cwd / common.checkpoint_path(env_id, "rebrac", 0, step=4)
    assert snapshot.name == "rebrac_seed0_step4.pt"
    assert sorted(p.name for p in final.parent.glob("rebrac_seed0*")) == ["rebrac_seed0.pt", "rebrac_seed0_step4.pt"]
    kept, last = (torch.load(p, map_location="cpu", weights_only=True) for p in (snapshot, final))
    assert (kept["step"], last["step"]) == (4, 6)
    assert [h["step"] for h in kept["history"]] == [2, 4]  # its own evaluation curve, up to its step
    assert any(not torch.equal(kept["actor"][k], last["actor"][k]) for k in kept["actor"])

    # itpo_eval loads a snapshot like any other ReBRAC checkpoint, and its summary says which one it used
    result = run(
        "itpo_eval.py",
        "--env-id",
        env_id,
        "--particles",
        "2",
        "--episodes",
        "1",
        "--max-episode-steps",
        "3",
        "--rebrac-checkpoint",
        str(snapshot),
        "--dynamics-checkpoint",
        pipeline["ckpt"]["dynamics"],
        "--reward-checkpoint",
        pipeline["ckpt"]["reward"],
        "--run-name",
        "snap",
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((cwd / "runs/snap/summary.json").read_text())
    assert summary["settings"]["rebrac_checkpoint"] == str(snapshot)
    actor, _, _ = rebrac.load_rebrac(str(snapshot), env_id)
    assert all(torch.equal(v, kept["actor"][k]) for k, v in actor.state_dict().items())


def test_world_model_snapshots_hold_the_metrics_of_their_step(pipeline, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = str(tmp_path / "dynamics.pt")
    args = dict(env_id=pipeline["env_id"], diffusion_steps=2, hidden_dim=16, num_layers=1, holdout=10, device="cpu")
    train_dynamics.main(train_dynamics.Args(**args, total_steps=6, eval_every=2, snapshot_every=2, checkpoint=path))
    for step in (2, 4, 6):
        ckpt = torch.load(common.snapshot_path(path, step), map_location="cpu", weights_only=True)
        assert ckpt["step"] == step and ckpt["history"][-1]["step"] == step
        assert ckpt["metrics"]["one_step_rmse"] == ckpt["history"][-1]["one_step_rmse"]
    last = torch.load(path, map_location="cpu", weights_only=True)
    snap = torch.load(common.snapshot_path(path, 6), map_location="cpu", weights_only=True)
    assert all(torch.equal(last["model"][k], snap["model"][k]) for k in last["model"])


@pytest.mark.parametrize("script", ["rebrac.py", "train_dynamics.py", "train_reward.py", "meanflow_onestep.py"])
def test_a_snapshot_interval_off_the_evaluation_grid_is_refused(script):
    line = one_line_error(run(script, "--eval-every", "10", "--snapshot-every", "15"))
    assert "--snapshot-every" in line and "multiple of --eval-every" in line


def test_rebrac_history_records_the_time_spent_on_updates(pipeline, tmp_path, monkeypatch):
    """Each evaluation records the wall-clock and CPU seconds spent on updates so far: summed over a resume,
    evaluations left out (benchmarks/rebrac_budget.py compares batch sizes by them)."""
    slow_evaluation = rebrac.run_episodes

    def run_episodes(*a, **kw):
        time.sleep(1.0)  # an evaluation far longer than two updates of a 16-wide net
        return slow_evaluation(*a, **kw)

    monkeypatch.setattr(rebrac, "run_episodes", run_episodes)
    path = str(tmp_path / "rebrac.pt")
    small = dict(env_id=pipeline["env_id"], hidden_dim=16, batch_size=8, eval_every=2, eval_episodes=1, device="cpu")
    rebrac.train(rebrac.Args(**small, total_updates=4, checkpoint_every=2, checkpoint=path, resume=True))
    saved = torch.load(path, map_location="cpu", weights_only=True)
    rebrac.train(rebrac.Args(**small, total_updates=6, checkpoint_every=2, checkpoint=path, resume=True))
    history = torch.load(path, map_location="cpu", weights_only=True)["history"]
    assert [h["step"] for h in history] == [2, 4, 6]
    for clock in ("seconds", "cpu_seconds"):
        spent = [h[clock] for h in history]
        assert 0 < spent[0] <= spent[1] <= saved[clock] <= spent[2], (clock, spent, saved[clock])
    assert history[-1]["seconds"] < 1.0, history  # three 1-second evaluations are not in it


def test_rebrac_budget_reads_histories_from_before_the_clock():
    """Checkpoints of older versions have evaluations without cpu_seconds: unknown hours, not a KeyError."""
    import math
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    import rebrac_budget

    history = [{"step": 2, "score": 30.0}, {"step": 4, "score": 60.0, "cpu_seconds": 7200.0}]
    assert rebrac_budget.first_hour(history, 50.0, "cpu_seconds") == 2.0
    assert rebrac_budget.first_hour(history, 90.0, "cpu_seconds") is None
    assert math.isnan(rebrac_budget.first_hour(history, 20.0, "cpu_seconds"))  # reached, but not timed
