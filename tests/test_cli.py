"""Every script through its command line, as users run it, and a one-line error for each bad input."""

import json
import os
import subprocess
import sys

import pytest
import torch
import tyro

import itpo_eval
import rebrac
import train_dynamics
from conftest import ROOT

SCRIPTS = {  # script -> a flag its --help must document
    "collect_dataset.py": "--total-timesteps",
    "rebrac.py": "--actor-bc-coef",
    "train_dynamics.py": "--diffusion-steps",
    "train_reward.py": "--termination",
    "meanflow_onestep.py": "--tilt-temperature",
    "itpo_eval.py": "--particles",
    "plan_eval.py": "--policy-samples",
    "benchmarks/world_model_speed.py": "--compile-too",
    "benchmarks/rebrac_speed.py": "--updates",
    "benchmarks/corl_jax_speed.py": "--corl",
    "benchmarks/rebrac_budget.py": "--eval-samples",
    "benchmarks/sweep.py": "--preset",
    "benchmarks/report.py": "--root",
    "benchmarks/frontier.py": "--particles-axis",
    "benchmarks/evaluation_noise.py": "--noise",
}


def run(script, *argv, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, script), *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def one_line_error(result) -> str:
    """The error a user sees: exit code non-zero, stderr a single 'error: ...' line (no traceback)."""
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


def test_help_of_every_script_lists_its_flags():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {
        s: subprocess.Popen(
            [sys.executable, os.path.join(ROOT, s), "--help"],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for s in SCRIPTS
    }
    for script, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, (script, err)
        assert SCRIPTS[script] in out, script


def test_every_stage_runs_from_its_command_line(pipeline):
    """The pipeline with tiny settings, each stage a subprocess as the README shows, in a fresh folder."""
    work, env_id = pipeline["work"], pipeline["env_id"]
    cwd = work / "cli"
    cwd.mkdir()
    small = ["--env-id", env_id, "--hidden-dim", "16"]
    for script, extra in (
        ("rebrac.py", ["--total-updates", "4", "--batch-size", "8", "--eval-episodes", "1"]),
        ("train_dynamics.py", ["--total-steps", "4", "--num-layers", "1", "--diffusion-steps", "2", "--holdout", "10"]),
        ("train_reward.py", ["--total-steps", "4", "--num-layers", "1", "--holdout", "10"]),
        ("meanflow_onestep.py", ["--total-steps", "4", "--num-layers", "1", "--holdout", "10"]),
    ):
        result = run(script, *small, *extra, cwd=cwd)
        assert result.returncode == 0, result.stderr[-2000:]
        stage = {
            "rebrac.py": "rebrac",
            "train_dynamics.py": "dynamics",
            "train_reward.py": "reward",
            "meanflow_onestep.py": "meanflow",
        }[script]
        assert (cwd / f"checkpoints/{env_id}/{stage}_seed0.pt").exists()
    for world_model in ("ddpm", "meanflow"):
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
            "--world-model",
            world_model,
            "--run-name",
            world_model,
            cwd=cwd,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert "ITPO − ReBRAC on the same seeds" in result.stdout
        # the summary names the budgets behind its scores: each model's step and held-out error (DESIGN: report
        # every result with the budgets of its stages)
        models = json.loads((cwd / f"runs/{world_model}/summary.json").read_text())["settings"]["models"]
        world = "dynamics" if world_model == "ddpm" else "meanflow"
        assert list(models) == ["rebrac", world, "reward"] and all(m["step"] > 0 for m in models.values())
        assert models[world]["metrics"]["one_step_rmse"] > 0 and models["reward"]["metrics"]["reward_rmse"] > 0
    result = run(
        "benchmarks/world_model_speed.py",
        "--env-id",
        env_id,
        "--particles",
        "2",
        "--episodes",
        "1",
        "--repeats",
        "1",
        "--precisions",
        "fp32",
        "bf16",
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "DDPM / MeanFlow" in result.stdout and "bf16 / fp32 time" in result.stdout, result.stdout
    result = run(
        "benchmarks/rebrac_speed.py",
        "--env-id",
        env_id,
        "--updates",
        "3",
        "--batch-sizes",
        "8",
        "16",
        "--precisions",
        "fp32",
        "bf16",
        "--no-compile-too",
        "--profile",
        "3",
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ms/update" in result.stdout and "profile, batch 16 bf16 eager" in result.stdout, result.stdout
    assert "samples/s" in result.stdout and "x fp32" in result.stdout, result.stdout
    assert "steady state" in result.stdout, result.stdout
    baseline = ["--updates", "3", "--batch-sizes", "8", "--no-compile-too", "--repeats", "2"]
    result = run(
        "benchmarks/rebrac_speed.py",
        "--env-id",
        env_id,
        *baseline,
        "--baseline",
        os.path.join(ROOT, "rebrac.py"),
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "final actor weights of the baseline and this version: equal" in result.stdout, result.stdout
    assert "this / baseline" in result.stdout and "GFLOP of matrix products per update" in result.stdout
    budget = ["--env-id", env_id, "--samples", "64", "--eval-samples", "32", "--batch-sizes", "8", "16"]
    result = run("benchmarks/rebrac_budget.py", *budget, "--eval-episodes", "1", "--targets", "-1000", cwd=cwd)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert "first hour at which" in result.stdout and "batch 16 fp32:  updates" in result.stdout, result.stdout
    assert lines[-2].startswith("batch 8 fp32") and lines[-2].split()[-1] != "–", result.stdout  # reached at once


def test_corl_jax_speed_needs_a_corl_checkout(tmp_path):
    """Without CORL's rebrac.py at --corl (or with bad sizes) a one-line error, before JAX is imported."""
    line = one_line_error(run("benchmarks/corl_jax_speed.py", "--corl", str(tmp_path)))
    assert "no algorithms/offline/rebrac.py" in line and "clone https://github.com/tinkoff-ai/CORL" in line, line
    script = tmp_path / "algorithms" / "offline" / "rebrac.py"
    script.parent.mkdir(parents=True)
    script.write_text("")
    line = one_line_error(run("benchmarks/corl_jax_speed.py", "--corl", str(tmp_path), "--batch-sizes", "0"))
    assert "--batch-sizes must be positive" in line, line
    line = one_line_error(run("benchmarks/corl_jax_speed.py", "--corl", str(script), "--updates", "0"))
    assert "--updates" in line, line


def test_collect_dataset_runs_from_its_command_line(tmp_path):
    result = run(
        "collect_dataset.py",
        "--env",
        "hopper",
        "--total-timesteps",
        "300",
        "--snapshot-every",
        "100",
        "--learning-starts",
        "50",
        "--transitions",
        "100",
        "--eval-episodes",
        "1",
        "--work-dir",
        str(tmp_path / "work"),
        "--datasets-path",
        str(tmp_path / "datasets"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for kind in ("random", "medium", "expert", "medium-replay", "full-replay", "medium-expert"):
        assert (tmp_path / f"datasets/local/hopper/{kind}-v0/data/main_data.hdf5").exists(), kind


@pytest.mark.parametrize(
    "script,argv,says",
    [
        ("itpo_eval.py", ["--particles", "0"], "--particles"),
        ("itpo_eval.py", ["--episodes", "0"], "--episodes"),
        ("itpo_eval.py", ["--horizon", "0"], "--horizon"),
        ("itpo_eval.py", ["--step-size", "nan"], "--step-size"),
        ("itpo_eval.py", ["--step-size", "-0.001"], "--step-size"),
        ("itpo_eval.py", ["--env-id", "hopper-mediocre"], "unknown --env-id"),
        ("rebrac.py", ["--total-updates", "-5"], "--total-updates"),
        ("train_dynamics.py", ["--total-steps", "0"], "--total-steps"),
        ("meanflow_onestep.py", ["--tilt-temperature", "0"], "--tilt-temperature"),
        ("meanflow_onestep.py", ["--tilt-ess", "1"], "--tilt-ess must be in (0, 1)"),
        ("meanflow_onestep.py", ["--tilt-ess", "0.5", "--tilt-temperature", "inf"], "give one of them"),
        ("meanflow_onestep.py", ["--tilt-ess", "0.5", "--tilt-temperature", "0.3"], "give one of them"),
    ],
)
def test_numbers_out_of_range_are_refused_at_parse_time(script, argv, says):
    """In process, through tyro, as the command line parses them (one subprocess below checks the real exit)."""
    module = {"itpo_eval.py": itpo_eval, "rebrac.py": rebrac, "train_dynamics.py": train_dynamics}.get(script)
    if module is None:
        import meanflow_onestep as module
    with pytest.raises(SystemExit) as err:
        tyro.cli(module.Args, args=argv)
    message = str(err.value.code)
    assert message.startswith("error:") and says in message and "\n" not in message


def test_a_bad_flag_exits_with_one_line_from_the_real_command():
    line = one_line_error(run("rebrac.py", "--total-updates", "-5"))
    assert "--total-updates must be a positive number, not -5" in line


def test_a_corrupt_checkpoint_names_the_file_and_the_command_that_remakes_it(pipeline, tmp_path):
    truncated = tmp_path / "rebrac_seed0.pt"
    data = open(pipeline["ckpt"]["rebrac"], "rb").read()
    truncated.write_bytes(data[: len(data) // 2])
    args = itpo_eval.Args(
        env_id=pipeline["env_id"],
        rebrac_checkpoint=str(truncated),
        particles=2,
        episodes=1,
        dynamics_checkpoint=pipeline["ckpt"]["dynamics"],
        reward_checkpoint=pipeline["ckpt"]["reward"],
    )
    with pytest.raises(SystemExit) as err:
        itpo_eval.load_models(args)
    message = str(err.value)
    assert str(truncated) in message and "python rebrac.py --env-id hopper-medium-replay --seed 0" in message
    text = tmp_path / "reward.pt"
    text.write_text("not a checkpoint")
    result = run(
        "itpo_eval.py",
        "--env-id",
        pipeline["env_id"],
        "--rebrac-checkpoint",
        pipeline["ckpt"]["rebrac"],
        "--dynamics-checkpoint",
        pipeline["ckpt"]["dynamics"],
        "--reward-checkpoint",
        str(text),
        cwd=tmp_path,
    )
    assert "python train_reward.py --env-id hopper-medium-replay --seed 0" in one_line_error(result)
    assert not (tmp_path / "runs").exists()  # a run that fails before it starts leaves no log folder


def test_a_run_with_a_non_finite_score_exits_non_zero(pipeline, monkeypatch):
    monkeypatch.setattr(
        itpo_eval, "normalized_score", lambda env_id, outcomes: torch.full((len(outcomes),), float("nan")).numpy()
    )
    args = itpo_eval.Args(
        env_id=pipeline["env_id"],
        particles=2,
        episodes=1,
        max_episode_steps=2,
        device="cpu",
        rebrac_checkpoint=pipeline["ckpt"]["rebrac"],
        dynamics_checkpoint=pipeline["ckpt"]["dynamics"],
        reward_checkpoint=pipeline["ckpt"]["reward"],
        run_name="nan_score",
    )
    with pytest.raises(SystemExit) as err:
        itpo_eval.main(args)
    assert "non-finite normalised scores" in str(err.value)


def test_resume_without_a_checkpoint_says_it_starts_from_scratch(pipeline, tmp_path, capsys):
    path = str(tmp_path / "fresh.pt")
    train_dynamics.main(
        train_dynamics.Args(
            env_id=pipeline["env_id"],
            hidden_dim=8,
            num_layers=1,
            diffusion_steps=2,
            total_steps=2,
            holdout=10,
            checkpoint=path,
            resume=True,
            device="cpu",
        )
    )
    assert f"--resume: no checkpoint at {path}; starting from scratch" in capsys.readouterr().out
    rebrac.train(
        rebrac.Args(
            env_id=pipeline["env_id"],
            total_updates=2,
            batch_size=8,
            hidden_dim=8,
            eval_episodes=1,
            checkpoint=str(tmp_path / "fresh_rebrac.pt"),
            resume=True,
            device="cpu",
        )
    )
    assert "starting from scratch" in capsys.readouterr().out


def test_evaluation_noise_and_frontier_through_their_command_lines(pipeline, tmp_path):
    ckpt = pipeline["ckpt"]["rebrac"]
    argv = ["--env-id", pipeline["env_id"], "--rebrac-checkpoint", ckpt, "--episodes", "2", "--max-episode-steps", "20"]
    result = run("benchmarks/evaluation_noise.py", *argv, "--noise", "0.5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("paired Δ") == 2 and "N(0, 0.5²)" in result.stdout, result.stdout
    error = one_line_error(run("benchmarks/frontier.py", "--particles-axis", "0", cwd=tmp_path))
    assert "--particles-axis needs positive integers" in error
