"""Ctrl-C (SIGINT) and SIGTERM in the training scripts, through their command lines: the current update
finishes, the checkpoint is written, one line gives the command that continues, the exit status is 130,
and the continued run ends with exactly the weights of a run that was never interrupted."""

import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ENV_ID, ROOT

TINY = {
    "rebrac.py": ["--total-updates", "4000", "--batch-size", "64", "--hidden-dim", "32", "--eval-every", "100000"],
    "train_reward.py": ["--total-steps", "4000", "--hidden-dim", "32", "--num-layers", "2", "--holdout", "20"],
}


def start(script, argv, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, os.path.join(ROOT, script), "--env-id", ENV_ID, "--device", "cpu", *argv]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("script,sig", [("rebrac.py", signal.SIGINT), ("train_reward.py", signal.SIGTERM)])
def test_signal_saves_and_the_continued_run_equals_the_uninterrupted_one(pipeline, tmp_path, script, sig):
    interrupted, whole = str(tmp_path / "interrupted.pt"), str(tmp_path / "whole.pt")
    proc = start(script, [*TINY[script], "--checkpoint", interrupted], tmp_path)
    deadline = time.time() + 120
    while not (tmp_path / "runs").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # the tensorboard folder appears just before the first update
    time.sleep(1.0)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err, err
    line = out.strip().splitlines()[-1]
    assert f"{signal.Signals(sig).name}: stopped after" in line and "continue with: python" in line, out
    step = torch.load(interrupted, weights_only=True)["step"]
    assert 0 < step < 4000, f"the signal should land mid-run, it landed at step {step}"

    command = shlex.split(line.split("continue with: ", 1)[1])  # the printed command, run as printed
    assert command[0] == "python" and command[-1] == "--resume"
    resumed = subprocess.run([sys.executable, *command[1:]], cwd=tmp_path, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert start(script, [*TINY[script], "--checkpoint", whole], tmp_path).wait(timeout=300) == 0

    continued, uninterrupted = (torch.load(p, weights_only=True) for p in (interrupted, whole))
    assert continued["step"] == uninterrupted["step"] == 4000
    nets = ("actor", "critic", "actor_target", "critic_target") if script == "rebrac.py" else ("model",)
    for net in nets:
        for name, value in uninterrupted[net].items():
            assert torch.equal(continued[net][name], value), f"{net}.{name}: the continued run differs"


def test_collect_stops_at_its_next_snapshot_and_a_rerun_finishes(tmp_path):
    import json

    argv = ["--env", "hopper", "--total-timesteps", "3000", "--snapshot-every", "1000", "--learning-starts", "100"]
    argv += ["--transitions", "300", "--eval-episodes", "1", "--work-dir", "work", "--datasets-path", "datasets"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, os.path.join(ROOT, "collect_dataset.py"), *argv]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "work" / "hopper" / "seed0" / "runs").exists() and time.time() < deadline:
        time.sleep(0.05)  # its tensorboard folder: SAC is about to start
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "Traceback" not in err, out + err
    assert "SIGINT: [collect] stopping at the next safe point" in out
    assert "continue with: python" in out.strip().splitlines()[-1] and "--resume" not in out  # a rerun resumes
    progress = json.loads((tmp_path / "work" / "hopper" / "seed0" / "progress.json").read_text())
    assert progress["step"] in (1000, 2000) and not (tmp_path / "datasets").exists()  # stopped at a snapshot
    rerun = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"resuming SAC at step {progress['step']}" in rerun.stdout
    assert (tmp_path / "datasets" / "local" / "hopper" / "medium-replay-v0").exists()


def test_the_command_to_continue_names_only_a_stage_script(monkeypatch):
    """Inside another program (a sweep's Ray worker, pytest) the line does not print that program's argv."""
    from common import rerun_command

    monkeypatch.setattr(sys, "argv", [os.path.join(ROOT, "rebrac.py"), "--env-id", "hopper-medium"])
    assert rerun_command("--resume") == f"python {os.path.join(ROOT, 'rebrac.py')} --env-id hopper-medium --resume"
    monkeypatch.setattr(sys, "argv", ["/opt/ray/_private/workers/default_worker.py", "--node-ip-address=1.2.3.4"])
    assert rerun_command("--resume") == "the same call with --resume"


def test_sigterm_to_a_sweep_stops_its_stage_at_a_checkpoint(pipeline, tmp_path):
    """Ray's workers sit in their own process group: a sweep's Ctrl-C or `kill` reaches only the driver, which
    passes it on, so the ReBRAC in flight writes the update it is on instead of being killed with Ray."""
    argv = ["--preset", "smoke", "--env-ids", ENV_ID, "--seeds", "0", "--root", "sweep", "--num-cpus", "1"]
    argv += ["--rebrac-updates", "1000000", "--rebrac-eval-every", "500000", "--rebrac-curve", "500000", "--no-report"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, os.path.join(ROOT, "benchmarks", "sweep.py"), *argv]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while not list((tmp_path / "sweep" / "runs").glob("rebrac_*")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)  # ReBRAC's tensorboard folder appears just before its first update
    time.sleep(3.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "Traceback" not in err, out[-3000:] + err[-3000:]
    assert "[sweep] interrupted: stopping 1 training stage(s)" in out, out[-3000:]
    message = err.strip().splitlines()[-1]
    assert message.startswith("error: sweep interrupted") and f"({ENV_ID} seed 0 rebrac)" in message, message
    assert "did not stop" not in message, message
    step = torch.load(tmp_path / "sweep" / "checkpoints" / ENV_ID / "rebrac_seed0.pt", weights_only=True)["step"]
    assert 0 < step < 500_000, f"the checkpoint should hold the update the signal landed on, not {step}"
