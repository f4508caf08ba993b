"""benchmarks/sweep.py (the pipeline as a graph of Ray tasks, resumable) and benchmarks/report.py
(its statistics and outputs)."""

import json
import math
import os
import re
import shutil
import sys

import numpy as np
import pytest
import torch
from scipy.stats import trim_mean

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import report  # noqa: E402
import sweep  # noqa: E402


# ---------------------------------------------------------------------------------------------
# The whole graph, smoke budgets, local Ray
# ---------------------------------------------------------------------------------------------
def test_sweep_runs_the_graph_resumes_and_reports(pipeline, tmp_path):
    env_id = pipeline["env_id"]
    root = tmp_path / "sweep"
    args = sweep.Args(
        preset="smoke",
        env_ids=[env_id],
        seeds=[0],
        root=str(root),
        num_cpus=2,
        alpha_grid=[5e-5, 5e-4],
        temperature_grid=[0.5, 5.0],  # MPPI's τ tuned, shooting's step size fixed
        shooting_step_grid=[0.1],
        tdmpc2_runs=[f"{env_id}:0"],
        device="cpu",
    )
    first = sweep.main(args)
    assert first["failed"] == []
    stages = {k[2]: v for k, v in first["statuses"].items() if k[1] == 0}
    assert set(stages) == {
        "rebrac",
        "dynamics",
        "reward",
        "meanflow",
        "tune-ddpm-5e-05",
        "tune-ddpm-0.0005",
        "tune-meanflow-5e-05",
        "tune-meanflow-0.0005",
        "itpo-ddpm",
        "itpo-meanflow",
        # budget curves: the ReBRAC snapshot at 10 of 20 updates, each world model's at 15 of 30 steps
        "curve-ddpm-rebrac10",
        "curve-meanflow-rebrac10",
        "curve-ddpm-dynamics15",
        "curve-meanflow-meanflow15",
        # the planners on the DDPM's models (their budgets timed against ITPO's, MPPI's τ tuned), and MPPI at
        # TD-MPC2's budget on MeanFlow
        "match-mppi",
        "match-shooting",
        "tune-mppi-0.5",
        "tune-mppi-5.0",
        "plan-mppi",
        "plan-shooting",
        "plan-mppi-tdmpc2",
    }
    assert set(stages.values()) == {"done"}
    logs = {p.name.split("_")[0] for p in (root / "runs").iterdir()}  # tensorboard under the root, not the cwd
    assert {"rebrac", "dynamics", "reward", "meanflow"} <= logs, logs

    budgets = sweep.PRESETS["smoke"]
    ckpts = {}
    for stage, budget in (
        ("rebrac", budgets["rebrac_updates"]),
        ("dynamics", budgets["dynamics_steps"]),
        ("reward", budgets["reward_steps"]),
        ("meanflow", budgets["meanflow_steps"]),
    ):
        path = root / "checkpoints" / env_id / f"{stage}_seed0.pt"
        assert torch.load(path, map_location="cpu", weights_only=True)["step"] == budget
        ckpts[path] = os.stat(path).st_mtime_ns
    summaries = {}
    for wm in ("ddpm", "meanflow"):
        path = root / "summaries" / f"{env_id}_seed0_{wm}.json"
        summary = json.loads(path.read_text())
        summaries[path] = os.stat(path).st_mtime_ns
        alpha = summary["alpha"]
        assert set(alpha["tuning_scores"]) == {"5e-05", "0.0005"}
        assert alpha["tune_seeds"] == [2000, 2001]
        best = max(alpha["tuning_scores"].values())
        assert alpha["tuning_scores"][repr(alpha["chosen"])] == best
        assert summary["settings"]["step_size"] == alpha["chosen"]
        assert summary["settings"]["eval_seed"] == 1000 and summary["settings"]["world_model"] == wm
        assert len(summary["itpo"]["normalized_scores"]) == len(summary["rebrac"]["normalized_scores"]) == 2
        assert max(summary["itpo"]["lengths"]) <= 10
        assert summary["budgets"]["preset"] == "smoke" and summary["budgets"]["particles"] == 4
        assert summary["stage_seconds"]["rebrac"] > 0 and summary["stage_seconds"]["evaluation"] > 0
    # Each curve point ran ITPO with the snapshot it names, the other models final, α as chosen for the final run.
    for wm, vary, step in (("ddpm", "rebrac", 10), ("meanflow", "rebrac", 10), ("ddpm", "dynamics", 15)):
        point = json.loads((root / "curves" / f"{env_id}_seed0_{wm}_{vary}{step}.json").read_text())
        final = json.loads((root / "summaries" / f"{env_id}_seed0_{wm}.json").read_text())
        assert point["curve"] == {"vary": vary, "step": step}
        assert point["models"][vary]["step"] == step and final["models"][vary]["step"] == 2 * step
        assert point["models"][vary]["path"].endswith(f"{vary}_seed0_step{step}.pt")
        other = "reward"
        assert point["models"][other] == final["models"][other]
        assert point["settings"]["step_size"] == final["alpha"]["chosen"]
        assert len(point["itpo"]["normalized_scores"]) == len(point["rebrac"]["normalized_scores"]) == 2
        if vary != "rebrac":
            assert point["models"][vary]["metrics"]["one_step_rmse"] > 0
    # The planners: paired against ReBRAC on ITPO's evaluation episodes, with the models and budgets they name.
    itpo = json.loads((root / "summaries" / f"{env_id}_seed0_ddpm.json").read_text())
    for label, planner, wm in (
        ("mppi", "mppi", "ddpm"),
        ("shooting", "shooting", "ddpm"),
        ("mppi-tdmpc2", "mppi", "meanflow"),
    ):
        plan = json.loads((root / "planners" / f"{env_id}_seed0_{label}.json").read_text())
        st = plan["settings"]
        assert st["planner"] == planner and st["world_model"] == wm and st["eval_seed"] == 1000
        assert len(plan[planner]["normalized_scores"]) == len(plan["rebrac"]["normalized_scores"]) == 2
        assert plan["rebrac"]["normalized_scores"] == itpo["rebrac"]["normalized_scores"]  # the same episodes
        assert plan["models"]["reward"] == itpo["models"]["reward"]
        assert plan["budget"] == ("tdmpc2" if label == "mppi-tdmpc2" else "matched")
    mppi = json.loads((root / "planners" / f"{env_id}_seed0_mppi.json").read_text())
    smoke = sweep.PRESETS["smoke"]
    matched = {
        p: json.loads((root / "tuning" / f"{env_id}_seed0_{p}_match.json").read_text()) for p in ("mppi", "shooting")
    }
    assert mppi["settings"]["iterations"] == smoke["mppi_iterations"]
    assert mppi["settings"]["samples"] == matched["mppi"]["match"]["samples"]  # N as timed against ITPO
    assert matched["mppi"]["match"]["itpo"] == {"particles": smoke["particles"], "inner_steps": smoke["inner_steps"]}
    tuned = json.loads((root / "tuning" / f"{env_id}_seed0_mppi_temperature0.5.json").read_text())
    assert tuned["mppi"]["seconds_per_env_step"] > 0 and tuned["key"]["plan"]["samples"] == mppi["settings"]["samples"]
    assert set(mppi["tuned"]["tuning_scores"]) == {"0.5", "5.0"}
    assert mppi["settings"]["temperature"] == mppi["tuned"]["chosen"]
    assert mppi["tuned"]["tuning_scores"][repr(mppi["tuned"]["chosen"])] == max(mppi["tuned"]["tuning_scores"].values())
    shooting = json.loads((root / "planners" / f"{env_id}_seed0_shooting.json").read_text())
    assert shooting["tuned"]["fixed"] and shooting["settings"]["step_size"] == 0.1
    assert shooting["settings"]["particles"] == matched["shooting"]["match"]["particles"]
    tdmpc2 = json.loads((root / "planners" / f"{env_id}_seed0_mppi-tdmpc2.json").read_text())
    assert (tdmpc2["settings"]["iterations"], tdmpc2["settings"]["samples"]) == (6, 512)  # TD-MPC2's
    tuning = json.loads((root / "tuning" / f"{env_id}_seed0_ddpm_alpha5e-05.json").read_text())
    assert tuning["itpo"]["lengths"] and max(tuning["itpo"]["lengths"]) <= 10  # tuning episodes are cut
    results = root / "results"
    assert (results / "table.md").exists() and (results / "differences.png").stat().st_size > 0
    assert (results / "training_curves_hopper.png").stat().st_size > 0
    assert (results / "budget_curves_hopper.png").stat().st_size > 0
    assert len(list((results / "summaries").glob("*.json"))) == 2
    assert len(list((results / "curves").glob("*.json"))) == 4
    table = (results / "table.md").read_text()
    assert env_id in table
    assert f"`{os.path.relpath(root, ROOT)}`: {env_id}:0" in table  # the root that made the row
    curve_lines = [line for line in table.splitlines() if line.startswith(f"| {env_id} | ITPO-")]
    # 2 points of ReBRAC's curve and 2 of the world model's, per world model
    assert len(curve_lines) == 8, table
    assert "## α tuning" in table and "5e-05: " in table
    assert "## ReBRAC's own evaluation along training" in table and f"| {env_id} | 0 | " in table
    assert any(line.startswith(f"| {env_id} | 0 | ") and " at 20 | " in line for line in table.splitlines())
    planner_lines = [line for line in table.splitlines() if line.startswith(f"| {env_id} | mppi")]
    assert len(planner_lines) == 2 and "I 6 × N 512" in table, table
    assert all("side by side" in line for line in planner_lines if "I 6 × N 512" not in line), planner_lines
    assert len(list((results / "planners").glob("*.json"))) == 3

    # A rerun finds everything complete: nothing is trained, tuned or evaluated again.
    second = sweep.main(args)
    assert second["failed"] == []
    assert set(second["statuses"].values()) == {"skipped"}
    assert {p: os.stat(p).st_mtime_ns for p in ckpts} == ckpts
    assert {p: os.stat(p).st_mtime_ns for p in summaries} == summaries

    # A larger reward budget: the reward model continues from its checkpoint (a marker put into its
    # history survives), the other stages are kept, and both evaluations, whose reward model changed,
    # are redone, here with a fixed α.
    reward = root / "checkpoints" / env_id / "reward_seed0.pt"
    ckpt = torch.load(reward, map_location="cpu", weights_only=True)
    ckpt["history"].append({"step": -1, "marker": 1.0})
    torch.save(ckpt, reward)
    kept = {p: t for p, t in ckpts.items() if p != reward}
    third = sweep.main(sweep.Args(**{**vars(args), "reward_steps": 45, "step_size": 5e-5, "report": False}))
    by_stage = {k[2]: v for k, v in third["statuses"].items()}
    assert by_stage == {
        "dataset": "skipped",
        "rebrac": "skipped",
        "dynamics": "skipped",
        "meanflow": "skipped",
        "reward": "done",
        "itpo-ddpm": "done",
        "itpo-meanflow": "done",
        "curve-ddpm-rebrac10": "done",
        "curve-meanflow-rebrac10": "done",
        "curve-ddpm-dynamics15": "done",
        "curve-meanflow-meanflow15": "done",
        "match-mppi": "done",  # their reward model changed too
        "match-shooting": "done",
        "tune-mppi-0.5": "done",
        "tune-mppi-5.0": "done",
        "plan-mppi": "done",
        "plan-shooting": "done",
        "plan-mppi-tdmpc2": "done",
    }
    history = torch.load(reward, map_location="cpu", weights_only=True)["history"]
    assert {"step": -1, "marker": 1.0} in history and history[-1]["step"] == 45
    assert {p: os.stat(p).st_mtime_ns for p in kept} == kept
    for path in summaries:
        summary = json.loads(path.read_text())
        assert summary["alpha"] == {"chosen": 5e-5, "fixed": True, "tuning_scores": {}, "tune_seeds": []}
        assert summary["settings"]["step_size"] == 5e-5
        assert summary["sweep_key"]["checkpoints"]["reward"]["step"] == 45

    # ReBRAC extended past the update that tilted MeanFlow's data: MeanFlow is neither reused nor resumed (its
    # budget raised too, so that the sweep, not only `fit`, must catch it), and the message says what to do.
    extended = {"reward_steps": 45, "step_size": 5e-5, "report": False, "rebrac_updates": 30, "meanflow_steps": 45}
    fourth = sweep.main(sweep.Args(**{**vars(args), **extended}))
    assert fourth["statuses"][(env_id, 0, "rebrac")] == "done"
    assert fourth["failed"] == [(env_id, 0, "meanflow")]
    failure = (root / "failures").glob("*meanflow*")
    assert "tilted by ReBRAC at update 20, this sweep's trains to 30: delete it" in next(failure).read_text()


def test_ctrl_c_stops_the_sweep_in_one_line(monkeypatch, tmp_path):
    """Ctrl-C while stages run: one line naming what stopped and how to resume, not Ray's traceback."""

    def interrupted(self):
        next(iter(self.nodes.values())).status = "running"
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep.Sweep, "run", interrupted)
    args = sweep.Args(preset="smoke", env_ids=["hopper-medium-replay"], root=str(tmp_path), report=False)
    with pytest.raises(SystemExit) as err:
        sweep.main(args)
    message = str(err.value.code)
    assert message.startswith("error: sweep interrupted") and "\n" not in message, message
    assert "stopped 1 in flight (hopper-medium-replay" in message and "rerun the same command" in message


def test_ctrl_c_waits_for_the_training_stages_and_kills_the_evaluations(monkeypatch, tmp_path):
    """A training stage is asked to stop (it checkpoints) and waited for; an evaluation, which has no handler
    and starts over anyway, is killed at once instead of holding Ctrl-C up for STOP_WAIT_S."""
    import ray

    args = sweep.Args(preset="smoke", env_ids=["hopper-medium-replay"], root=str(tmp_path), report=False)
    s = sweep.Sweep(args, *sweep.resolve(args))
    training, evaluation = (s.nodes[("hopper-medium-replay", 0, stage)] for stage in ("rebrac", "itpo-ddpm"))
    cancelled, waited = {}, []
    monkeypatch.setattr(ray, "cancel", lambda ref, force=False: cancelled.__setitem__(ref, force))
    monkeypatch.setattr(ray, "wait", lambda refs, num_returns, timeout: (waited.extend(refs), ([], list(refs)))[1])
    s.stop_in_flight({"training": training, "evaluation": evaluation})
    assert cancelled == {"training": False, "evaluation": True} and waited == ["training"]
    assert s.late == [training.label]  # still running when the wait ended


def test_a_stage_whose_worker_dies_fails_with_the_time_it_ran_and_the_sweep_goes_on(monkeypatch, tmp_path, capsys):
    """A Ray worker that dies (OOM, a signal) leaves only Ray's error: the stage fails with it and the time the
    driver saw it run (it logged "failed in nans"), its dependents are not run, the others go on."""
    import ray

    class Ref:
        def __init__(self, stage):
            self.stage = stage

    class Remote:
        def options(self, **resources):
            return self

        def remote(self, module, entry, kwargs, workdir, keep):
            return Ref(kwargs["stage"])

    def get(ref):
        if ref.stage == "rebrac":
            raise RuntimeError("The worker died unexpectedly while executing this task.")
        return {"ok": True, "seconds": 1.0}

    def finish(self, node, out):  # a finished task's results are not what this test is about
        if out["ok"]:
            node.status, node.seconds = "done", out["seconds"]
        else:
            finish_as_is(self, node, out)

    finish_as_is = sweep.Sweep.finish
    monkeypatch.setattr(sweep.Sweep, "start_ray", lambda self: False)
    monkeypatch.setattr(sweep.Sweep, "prepare", lambda self, node: ("m", "e", {"stage": node.stage}, False))
    monkeypatch.setattr(sweep.Sweep, "finish", finish)
    monkeypatch.setattr(ray, "remote", lambda fn: Remote())
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 1})
    monkeypatch.setattr(ray, "wait", lambda refs, num_returns: (refs[:1], refs[1:]))
    monkeypatch.setattr(ray, "get", get)
    args = sweep.Args(preset="smoke", env_ids=["hopper-medium-replay"], root=str(tmp_path), report=False)
    s = sweep.Sweep(args, *sweep.resolve(args))
    s.run()
    status = {n.stage: n.status for n in s.nodes.values() if n.seed == 0}
    assert status["rebrac"] == "failed" and status["dynamics"] == status["reward"] == "done"
    assert status["meanflow"] == status["itpo-ddpm"] == "not run"  # both need ReBRAC
    rebrac = s.nodes[("hopper-medium-replay", 0, "rebrac")]
    assert math.isfinite(rebrac.seconds) and rebrac.seconds >= 0
    assert "worker died" in (tmp_path / "failures" / "hopper-medium-replay_seed0_rebrac.txt").read_text()
    line = next(x for x in capsys.readouterr().out.splitlines() if "seed 0 rebrac: failed" in x)
    assert re.search(r"failed in [0-9.]+s \(traceback in ", line), line


def test_a_sweep_with_no_finished_row_says_so_in_one_line(monkeypatch, tmp_path, capsys):
    """Where no evaluation has finished (every one waits on a failed stage), the report's one-line error is
    printed as one line, not as its traceback (seen after an AntMaze ReBRAC's worker died)."""
    monkeypatch.setattr(sweep.Sweep, "run", lambda self: None)  # nothing runs, nothing is summarised
    sweep.main(sweep.Args(preset="smoke", env_ids=["hopper-medium-replay"], root=str(tmp_path)))
    out = capsys.readouterr().out
    assert "[sweep] no report: no summaries in " in out and "Traceback" not in out, out[-1500:]


def test_overlapping_tuning_and_evaluation_seeds_are_refused():
    base = {"preset": "smoke", "env_ids": ["hopper-medium-replay"]}  # smoke: 2 tuning and 2 evaluation episodes
    sweep.resolve(sweep.Args(**base, eval_seed=1000, tune_seed=1002))  # 1000..1001 vs 1002..1003: disjoint
    for tune_seed in (1001, 999, 1000):
        with pytest.raises(SystemExit, match="overlap"):
            sweep.resolve(sweep.Args(**base, eval_seed=1000, tune_seed=tune_seed))
    with pytest.raises(SystemExit, match="overlap"):  # the preset's 10 evaluation episodes reach 1009
        sweep.resolve(sweep.Args(preset="cpu", env_ids=["hopper-medium-replay"], eval_seed=1000, tune_seed=1009))
    fixed = {"step_size": 5e-5, "temperature_grid": [0.5], "shooting_step_grid": [0.1]}
    sweep.resolve(sweep.Args(**base, eval_seed=1000, tune_seed=1000, **fixed))  # no tuning, no conflict
    with pytest.raises(SystemExit, match="overlap"):  # the planners' τ is tuned on those seeds too
        sweep.resolve(sweep.Args(**base, eval_seed=1000, tune_seed=1000, **{**fixed, "temperature_grid": [0.5, 5.0]}))
    with pytest.raises(SystemExit, match="overlap"):  # refused before any stage or Ray starts
        sweep.main(sweep.Args(**base, eval_seed=1000, tune_seed=1000, root="/nonexistent/never-created"))
    assert not os.path.exists("/nonexistent/never-created")


@pytest.mark.parametrize(
    "bad, expected",
    [
        ({"seeds": [-1]}, "--seed must be ≥ 0"),
        ({"runs": ["hopper-medium:-2"]}, "--seed must be ≥ 0"),
        ({"eval_seed": -10}, "--eval-seed must be ≥ 0"),
        ({"tilt_temperature": 0.0}, "--tilt-temperature must be positive"),
        ({"temperature_grid": [0.5, 0.0]}, "--temperature-grid needs finite values > 0"),
        ({"shooting_step_grid": [-0.1]}, "--shooting-step-grid needs finite values ≥ 0"),
        ({"tdmpc2_runs": ["hopper-expert:0"]}, "--tdmpc2-runs hopper-expert:0 is not in the grid"),
        ({"tdmpc2_runs": ["hopper-medium:0"], "world_models": ["ddpm"]}, "plans with MeanFlow"),
        ({"tdmpc2_runs": ["hopper-medium"]}, "--tdmpc2-runs takes env_id:seed"),
        ({"world_models": ["meanflow"]}, "--planner-world-model ddpm is not in --world-models"),
        ({"rebrac_actor_bc_coef": -0.1}, "--rebrac-actor-bc-coef must be finite and ≥ 0"),
    ],
)
def test_settings_a_stage_would_refuse_hours_in_are_refused_at_start(bad, expected):
    with pytest.raises(SystemExit, match=expected):
        sweep.resolve(sweep.Args(**{"env_ids": ["hopper-medium"], **bad}))


def test_presets_and_overrides():
    budgets, pairs, root = sweep.resolve(
        sweep.Args(
            preset="cpu",
            env_ids=["hopper-medium-replay", "hopper-medium"],
            seeds=[0, 1],
            runs=["hopper-medium-replay:2", "hopper-medium:1"],
            particles=64,
            root="x",
        )
    )
    assert budgets["rebrac_updates"] == 200_000 and budgets["rebrac_batch_size"] == 256
    assert budgets["dynamics_steps"] == 50_000 and budgets["reward_steps"] == 30_000
    assert budgets["meanflow_steps"] == 30_000 and budgets["particles"] == 64
    assert budgets["rebrac_curve"] == [25_000, 50_000, 100_000, 200_000]
    assert budgets["tune_max_steps"] == 0 and budgets["tune_episodes"] >= 3  # α on full episodes
    assert pairs == [
        ("hopper-medium-replay", 0),
        ("hopper-medium-replay", 1),
        ("hopper-medium", 0),
        ("hopper-medium", 1),
        ("hopper-medium-replay", 2),
    ]
    assert root == os.path.abspath("x")
    paper, _, _ = sweep.resolve(sweep.Args(preset="paper", runs=["hopper-medium:0"]))
    assert (paper["rebrac_updates"], paper["rebrac_batch_size"], paper["particles"]) == (1_000_000, 1024, 4096)
    with pytest.raises(SystemExit, match="env_id:seed"):
        sweep.resolve(sweep.Args(runs=["hopper-medium"]))
    # curve points must be snapshots that exist: multiples of the evaluation interval, within the budget
    for bad in ([30_000], [400_000], [0]):
        with pytest.raises(SystemExit, match="--rebrac-curve"):
            sweep.resolve(sweep.Args(env_ids=["hopper-medium"], rebrac_curve=bad))
    with pytest.raises(SystemExit, match="--dynamics-curve takes at least one step .*5000 15000 50000"):
        sweep.resolve(sweep.Args(env_ids=["hopper-medium"], dynamics_curve=[]))  # was the final step alone
    budgets, _, _ = sweep.resolve(sweep.Args(env_ids=["hopper-medium"], rebrac_curve=[50_000], rebrac_updates=100_000))
    assert budgets["rebrac_curve"] == [50_000, 100_000]  # the final checkpoint ends every curve
    s = sweep.Sweep(sweep.Args(env_ids=["hopper-medium"]), *sweep.resolve(sweep.Args(env_ids=["hopper-medium"])))
    assert s.snapshot_every("hopper-medium", "rebrac") == 25_000
    assert s.snapshot_every("hopper-medium", "dynamics") == 5_000
    assert s.snapshot_every("hopper-medium", "reward") == 0
    # ReBRAC's update is compiled in the cpu preset, not in smoke, and a flag turns it off (the eager rows)
    assert s.stage_kwargs("hopper-medium", 0, "rebrac")["compile"] is True
    for preset, flag, compiled in (("cpu", False, False), ("smoke", None, False), ("paper", None, True)):
        args = sweep.Args(preset=preset, env_ids=["hopper-medium"], rebrac_compile=flag)
        assert sweep.Sweep(args, *sweep.resolve(args)).stage_kwargs("hopper-medium", 0, "rebrac")["compile"] is compiled
    # fp32 unless asked: --rebrac-precision bf16 reaches rebrac.py's --precision
    assert s.stage_kwargs("hopper-medium", 0, "rebrac")["precision"] == "fp32"
    args = sweep.Args(env_ids=["hopper-medium"], rebrac_precision="bf16")
    assert sweep.Sweep(args, *sweep.resolve(args)).stage_kwargs("hopper-medium", 0, "rebrac")["precision"] == "bf16"


def test_rebrac_actor_bc_coef_reaches_rebrac_and_a_checkpoint_with_another_is_not_reused(tmp_path):
    """--rebrac-actor-bc-coef reaches rebrac.py's β_a (unset: its per-dataset table); a finished ReBRAC with
    another β_a is refused in one line instead of being skipped as done."""
    import rebrac

    def sweep_of(**flags):
        args = sweep.Args(preset="smoke", env_ids=["walker2d-expert"], seeds=[0], root=str(tmp_path), **flags)
        return sweep.Sweep(args, *sweep.resolve(args))

    default, raised = sweep_of(), sweep_of(rebrac_actor_bc_coef=1.0)
    for s, beta in ((default, 0.01), (raised, 1.0)):
        kwargs = s.stage_kwargs("walker2d-expert", 0, "rebrac")
        assert rebrac.resolve_args(rebrac.Args(**kwargs)).actor_bc_coef == beta
    path = default.ckpt("walker2d-expert", "rebrac", 0)
    os.makedirs(os.path.dirname(path))
    torch.save({"step": 20, "args": {"actor_bc_coef": 0.01}}, path)  # finished (smoke: 20 updates), table's β_a
    assert default.prepare(default.nodes[("walker2d-expert", 0, "rebrac")]) is None  # skipped: on record
    with pytest.raises(RuntimeError, match="trained with β_a 0.01, this sweep asks for 1.0"):
        raised.prepare(raised.nodes[("walker2d-expert", 0, "rebrac")])


def test_a_meanflow_tilted_by_another_rebrac_at_the_same_step_is_not_reused(tmp_path):
    """A finished MeanFlow records the actor that tilted its data; under another ReBRAC (e.g. one copied in,
    trained with another β_a) it is refused in one line, under its own it is skipped as done."""
    from common import weights_digest

    args = sweep.Args(preset="smoke", env_ids=["hopper-medium"], seeds=[0], root=str(tmp_path))
    s = sweep.Sweep(args, *sweep.resolve(args))
    actor = {"net.0.weight": torch.ones(2, 3)}
    os.makedirs(os.path.dirname(s.ckpt("hopper-medium", "rebrac", 0)))
    torch.save({"step": 20, "actor": actor}, s.ckpt("hopper-medium", "rebrac", 0))  # finished (smoke: 20)
    node = s.nodes[("hopper-medium", 0, "meanflow")]
    for tilted_by, refused in ((actor, False), ({"net.0.weight": torch.zeros(2, 3)}, True)):
        meanflow = {"step": 30, "tilt_rebrac_step": 20, "tilt_rebrac_digest": weights_digest(tilted_by)}
        torch.save(meanflow, s.ckpt("hopper-medium", "meanflow", 0))
        if refused:
            with pytest.raises(RuntimeError, match="tilted by another ReBRAC than this sweep's: delete it"):
                s.prepare(node)
        else:
            assert s.prepare(node) is None and node.status == "skipped"


def test_an_environment_gets_its_own_world_model_budgets(capsys):
    """The preset's per-environment table reaches that environment's stages and no other's; a flag overrides it."""
    args = sweep.Args(preset="smoke", runs=["hopper-medium-replay:0", "walker2d-medium-replay:0"], root="x")
    budgets, pairs, root = sweep.resolve(args)
    s = sweep.Sweep(args, budgets, pairs, root)
    hopper, walker = (s.stage_kwargs(e, 0, "dynamics") for e, _ in pairs)
    assert hopper["total_steps"] == sweep.PRESETS["smoke"]["dynamics_steps"] == 30 and walker["total_steps"] == 45
    assert hopper["snapshot_every"] == 15 and walker["snapshot_every"] == 15  # gcd of 15, 30 (walker: 45's curve)
    assert s.curve("walker2d-medium-replay", "dynamics") == [15, 30, 45]
    assert s.curve("hopper-medium-replay", "dynamics") == [15, 30]
    assert s.stage_kwargs(pairs[1][0], 0, "reward")["total_steps"] == hopper_reward(s)  # only the world model's
    nodes = {n.stage for n in s.nodes.values() if n.env_id == "walker2d-medium-replay"}
    assert {"curve-ddpm-dynamics15", "curve-ddpm-dynamics30"} <= nodes  # walker's curve points, not hopper's
    assert "curve-ddpm-dynamics30" not in {n.stage for n in s.nodes.values() if n.env_id == "hopper-medium-replay"}
    flagged, _, _ = sweep.resolve(sweep.Args(preset="smoke", runs=["walker2d-medium-replay:0"], dynamics_steps=60))
    assert flagged["dynamics_steps"] == 60 and "dynamics_steps" not in flagged["per_env"]["walker2d"]
    assert flagged["per_env"]["walker2d"]["dynamics_curve"] == [15, 30, 45, 60]
    with pytest.raises(SystemExit, match=r"the walker2d budgets"):  # the table's curve must fit the flag's budget
        sweep.resolve(sweep.Args(preset="smoke", runs=["walker2d-medium-replay:0"], dynamics_steps=40))
    # a walker2d-only grid's curve may reach walker2d's budget (45), past the preset's own (hopper's 30) ...
    walker_only = sweep.Args(preset="smoke", runs=["walker2d-medium-replay:0"], dynamics_curve=[15, 45], root="x")
    assert sweep.Sweep(walker_only, *sweep.resolve(walker_only)).curve("walker2d-medium-replay", "dynamics") == [15, 45]
    with pytest.raises(SystemExit, match=r"takes steps in \(0, 30\]"):  # ... not where hopper runs at the preset's
        sweep.resolve(sweep.Args(preset="smoke", env_ids=["hopper-medium-replay", "walker2d-medium-replay"],
                                 seeds=[0], dynamics_curve=[15, 45]))  # fmt: skip


def test_antmaze_rows_take_more_episodes():
    """AntMaze's score is a coin per episode: its row of the preset's table gives its runs 50 evaluation and 10
    tuning episodes where MuJoCo's keep 10 and 5 (and its DDPM 200k steps, hopper's 50k, MPPI's τ grid in its
    rewards' scale and shooting's steps 100× lower); the overlap check sees its longer range; a flag sets all."""
    args = sweep.Args(preset="cpu", runs=["hopper-medium:0", "antmaze-umaze:0"], root="x")
    s = sweep.Sweep(args, *sweep.resolve(args))
    assert [s.stage_kwargs(e, 0, "dynamics")["total_steps"] for e, _ in s.pairs] == [50_000, 200_000]
    # ReBRAC: CORL's 1M updates on AntMaze (the medium maze succeeds nowhere at 200k), its curve to match
    rebrac = [s.stage_kwargs(e, 0, "rebrac") for e, _ in s.pairs]
    assert [(k["total_updates"], k["snapshot_every"]) for k in rebrac] == [(200_000, 25_000), (1_000_000, 100_000)]
    assert s.curve("antmaze-umaze", "rebrac") == [200_000, 500_000, 1_000_000]
    flagged = sweep.Args(preset="cpu", runs=["antmaze-umaze:0"], rebrac_updates=200_000, rebrac_curve=[100_000])
    s_flagged = sweep.Sweep(flagged, *sweep.resolve(flagged))
    assert s_flagged.stage_kwargs("antmaze-umaze", 0, "rebrac")["total_updates"] == 200_000
    for env_id, n, n_tune in (("hopper-medium", 10, 5), ("antmaze-umaze", 50, 10)):
        paths = s.model_paths(env_id, 0, "ddpm")
        assert [s.run_kwargs(env_id, 0, "ddpm", t, paths, "x")["episodes"] for t in (False, True)] == [n, n_tune]
        assert s.tune_seeds(env_id) == list(range(2000, 2000 + n_tune))
    sweep.resolve(sweep.Args(preset="cpu", env_ids=["hopper-medium"], tune_seed=1040))
    with pytest.raises(SystemExit, match="overlap the evaluation seeds 1000..1049 of antmaze-umaze"):
        sweep.resolve(sweep.Args(preset="cpu", env_ids=["hopper-medium", "antmaze-umaze"], tune_seed=1040))

    def tuned(s, planner):
        nodes = s.nodes.values()
        return {e: sorted(n.context["value"] for n in nodes if n.env_id == e and f"tune-{planner}" in n.stage)
                for e in ("hopper-medium", "antmaze-umaze")}  # fmt: skip

    assert tuned(s, "mppi") == {"hopper-medium": [0.05, 0.5, 5.0, 50.0], "antmaze-umaze": [5.0, 50.0, 500.0, 5000.0]}
    assert tuned(s, "shooting") == {
        "hopper-medium": [0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
        "antmaze-umaze": [3e-5, 1e-4, 3e-4, 1e-3, 0.003, 0.01, 0.03],
    }
    # the paper preset: AntMaze's ReBRAC at CORL's batch 256 where MuJoCo's takes 1024; ITPO and the planners
    # compiled there (CUDA graphs), eager in the cpu preset, whose runs keep the keys they were made with
    paper = sweep.Args(preset="paper", runs=["hopper-medium:0", "antmaze-umaze:0"], root="x")
    p = sweep.Sweep(paper, *sweep.resolve(paper))
    assert [p.stage_kwargs(e, 0, "rebrac")["batch_size"] for e, _ in p.pairs] == [1024, 256]
    paths = p.model_paths("hopper-medium", 0, "ddpm")
    assert p.run_kwargs("hopper-medium", 0, "ddpm", False, paths, "x")["compile"] is True
    assert "compile" not in s.run_kwargs("hopper-medium", 0, "ddpm", False, paths, "x")
    flagged = sweep.Args(
        preset="cpu", runs=["hopper-medium:0", "antmaze-umaze:0"], episodes=20, root="x",
        temperature_grid=[0.5, 7.0], shooting_step_grid=[0.02, 0.2],
    )  # fmt: skip
    s = sweep.Sweep(flagged, *sweep.resolve(flagged))
    assert {s.budgets(e)["episodes"] for e in ("hopper-medium", "antmaze-umaze")} == {20}
    assert tuned(s, "mppi") == {"hopper-medium": [0.5, 7.0], "antmaze-umaze": [0.5, 7.0]}
    assert tuned(s, "shooting") == {"hopper-medium": [0.02, 0.2], "antmaze-umaze": [0.02, 0.2]}


def test_per_environment_budgets_reach_the_stages_checkpoints(pipeline, tmp_path):
    """Through the stage the sweep runs: smoke's walker2d row trains its DDPM to 45 steps, hopper's to 30."""
    import collect_dataset

    collect_dataset.main(
        collect_dataset.Args(
            env="walker2d",
            total_timesteps=300,
            snapshot_every=150,
            learning_starts=100,
            transitions=200,
            eval_episodes=1,
            work_dir=str(tmp_path / "collect"),
        )
    )
    args = sweep.Args(preset="smoke", runs=["hopper-medium-replay:0", "walker2d-medium-replay:0"], root=str(tmp_path))
    s = sweep.Sweep(args, *sweep.resolve(args))
    cwd, trained = os.getcwd(), {}
    try:
        for env_id in ("hopper-medium-replay", "walker2d-medium-replay"):
            kwargs = {**s.stage_kwargs(env_id, 0, "dynamics"), "device": "cpu", "holdout": 20}
            out = sweep.run_stage("train_dynamics", "main", kwargs, s.workdir, keep_result=False)
            assert out["ok"], out.get("traceback")
            ckpt = torch.load(s.ckpt(env_id, "dynamics", 0), map_location="cpu", weights_only=True)
            snapshots = sorted(p.name for p in (tmp_path / "checkpoints" / env_id).glob("dynamics_seed0_step*.pt"))
            trained[env_id] = (ckpt["step"], snapshots)
    finally:
        os.chdir(cwd)  # run_stage works in the sweep's root
    assert trained == {
        "hopper-medium-replay": (30, ["dynamics_seed0_step15.pt", "dynamics_seed0_step30.pt"]),
        "walker2d-medium-replay": (45, [f"dynamics_seed0_step{n}.pt" for n in (15, 30, 45)]),
    }


def hopper_reward(s) -> int:
    return s.stage_kwargs("hopper-medium-replay", 0, "reward")["total_steps"]


def test_alpha_ties_keep_the_smaller_step_size(tmp_path):
    grids = {"alpha_grid": [5e-4, 5e-6, 5e-5, 5e-7], "temperature_grid": [0.05, 0.5, 5.0]}
    args = sweep.Args(env_ids=["hopper-medium"], root=str(tmp_path), **grids)
    s = sweep.Sweep(args, *sweep.resolve(args))
    for alpha, score in ((5e-4, 30.0), (5e-6, 42.0), (5e-5, 42.0), (5e-7, 41.9)):
        sweep.write_json(s.tuning_path("hopper-medium", 0, "ddpm_alpha", alpha), {"score": score})
    record = s.alpha_record("hopper-medium", 0, "ddpm")
    assert record["chosen"] == 5e-6 and record["tuning_scores"]["5e-05"] == 42.0
    # the planners' parameters are chosen the same way, each from its own files
    for tau, score in ((0.05, 50.0), (0.5, 61.0), (5.0, 61.0)):
        sweep.write_json(s.tuning_path("hopper-medium", 0, "mppi_temperature", tau), {"score": score})
    assert s.planner_record("hopper-medium", 0, "mppi")["chosen"] == 0.5
    with pytest.raises(SystemExit, match="unknown dataset"):
        sweep.resolve(sweep.Args(env_ids=["hopper-mediocre"]))


def test_a_merged_table_says_which_sweep_root_made_each_row():
    def summary(root, env_id, seed):
        return {"models": {"rebrac": {"path": f"{root}/checkpoints/{env_id}/rebrac_seed{seed}.pt"}}}

    runs = {
        "hopper-medium": {
            0: {"ddpm": summary("/x/a", "hopper-medium", 0)},
            1: {"ddpm": summary("/x/b", "hopper-medium", 1)},
        },
        "walker2d-medium": {0: {"ddpm": summary("/x/a", "walker2d-medium", 0), "meanflow": {"models": {}}}},
    }
    line = report.row_roots(runs)
    a, b = (os.path.relpath(p, ROOT) for p in ("/x/a", "/x/b"))
    assert f"`{a}`: hopper-medium:0, walker2d-medium:0" in line and f"`{b}`: hopper-medium:1" in line
    assert "`?`: walker2d-medium:0" in line  # a summary without its checkpoints' paths is not given a root


# ---------------------------------------------------------------------------------------------
# Report statistics
# ---------------------------------------------------------------------------------------------
def test_paired_difference_is_paired():
    rng = np.random.default_rng(0)
    rebrac = rng.normal(50, 30, 20)  # large spread between episodes ...
    itpo = rebrac + 10 + rng.normal(0, 0.5, 20)  # ... but every episode gains 10
    mean, lo, hi = report.paired_difference(itpo, rebrac)
    assert 0 < lo < mean < hi and abs(mean - 10) < 0.5 and hi - lo < 1.0
    noise = rebrac + rng.normal(0, 5, 20)  # no gain
    mean, lo, hi = report.paired_difference(noise, rebrac)
    assert lo < 0 < hi
    # pairs given as dicts are matched by key, whatever their order
    keys = [(s, 1000 + e) for s in range(2) for e in range(10)]
    a = dict(zip(keys, itpo))
    b = dict(reversed(list(zip(keys, rebrac))))
    assert report.paired_difference(a, b) == report.paired_difference(itpo, rebrac)
    with pytest.raises(ValueError):
        report.paired_difference(a, dict(list(b.items())[1:]))
    with pytest.raises(ValueError):
        report.paired_difference(itpo, rebrac[1:])


def test_bootstrap_ci():
    assert report.bootstrap_ci([3.0] * 5) == (3.0, 3.0, 3.0)
    x = np.random.default_rng(1).normal(0, 1, 400)
    mean, lo, hi = report.bootstrap_ci(x)
    assert mean == pytest.approx(x.mean()) and lo < mean < hi
    assert hi - lo == pytest.approx(2 * 1.96 * x.std() / 20, rel=0.15)  # ≈ the normal interval
    assert report.bootstrap_ci(x) == (mean, lo, hi)  # fixed RNG seed


def test_seed_bootstrap_sees_the_spread_between_seeds():
    """Two seeds gaining 0 and 20 on every episode: pooled episodes say 10 ± a little, seeds resampled say 0 … 20."""
    rng = np.random.default_rng(0)
    groups = [rng.normal(0, 0.5, 10), rng.normal(20, 0.5, 10)]
    pooled = report.bootstrap_ci(np.concatenate(groups))
    mean, lo, hi = report.seed_bootstrap_ci(groups)
    assert mean == pytest.approx(pooled[0]) and pooled[2] - pooled[1] < 10
    assert lo < 1 and hi > 19  # a draw of seed 0 twice, or seed 1 twice
    agree = [rng.normal(10, 0.5, 10) for _ in range(3)]  # seeds that agree: about the pooled interval
    assert report.seed_bootstrap_ci(agree)[2] - report.seed_bootstrap_ci(agree)[1] < 1.0
    assert report.seed_bootstrap_ci(groups) == (mean, lo, hi)  # fixed RNG seed


def test_iqm_of_a_known_matrix():
    scores = np.array([[0.0, 1.0, 2.0, 3.0], [4.0, 10.0, 20.0, 100.0]])  # mean 17.5, median 3.5
    iqm = report.iqm_table({"a": scores, "b": scores + 1}, reps=200)
    assert iqm["a"][0] == pytest.approx((2 + 3 + 4 + 10) / 4)
    assert iqm["b"][0] == pytest.approx((2 + 3 + 4 + 10) / 4 + 1)
    assert iqm["a"][1] <= iqm["a"][0] <= iqm["a"][2]


def lockstep(seconds, n):
    """A run of n episodes in lockstep whose step costs `seconds` per episode, the last episode falling at step
    100 of 1000: per transition of the episodes run (what summaries used to hold) it would look dearer."""
    lengths = [1000] * (n - 1) + [100]
    return {
        "seconds_per_step": seconds * n,
        "lengths": lengths,
        "seconds_per_env_step": seconds * n * 1000 / sum(lengths),
    }


def fake_summary(env_id, seed, wm, itpo, rebrac, alpha, eval_seed=1000):
    return {
        "settings": {
            "env_id": env_id,
            "seed": seed,
            "world_model": wm,
            "eval_seed": eval_seed,
            "horizon": 5,
            "particles": 32,
            "inner_steps": 1,
            "max_episode_steps": None,
            "step_size": alpha,
        },
        "itpo": {"normalized_scores": list(itpo), "mean": float(np.mean(itpo)), **lockstep(0.05, len(itpo))},
        "rebrac": {"normalized_scores": list(rebrac), "mean": float(np.mean(rebrac)), **lockstep(0.001, len(rebrac))},
        "alpha": {"chosen": alpha, "tuning_scores": {}, "tune_seeds": [2000]},
        "budgets": {"preset": "cpu", "rebrac_updates": 25000},
    }


def test_report_on_hand_made_summaries(tmp_path):
    """DDPM gains 10 on every episode (interval excludes 0), MeanFlow gains nothing (interval
    includes 0); the aggregate uses as many seeds per dataset as the dataset with the fewest."""
    rng = np.random.default_rng(0)
    root, runs = tmp_path / "sweep", {"hopper-medium-replay": [0, 1, 2], "walker2d-medium": [0, 1]}
    os.makedirs(root / "summaries")
    per_run = {"rebrac": {}, "ddpm": {}, "meanflow": {}}
    for env_id, seeds in runs.items():
        for seed in seeds:
            rebrac = rng.normal(50, 30, 10)
            ddpm = rebrac + 10 + rng.normal(0, 0.5, 10)
            meanflow = rebrac + rng.normal(0, 3, 10)
            for wm, itpo, alpha in (("ddpm", ddpm, 5e-5), ("meanflow", meanflow, 5e-6 if seed else 5e-5)):
                s = fake_summary(env_id, seed, wm, itpo, rebrac, alpha)
                if env_id == "walker2d-medium":  # as the sweep records --rebrac-actor-bc-coef
                    s["rebrac_actor_bc_coef"] = 1.0
                (root / "summaries" / f"{env_id}_seed{seed}_{wm}.json").write_text(json.dumps(s))
            for algo, v in (("rebrac", rebrac), ("ddpm", ddpm), ("meanflow", meanflow)):
                per_run[algo][(env_id, seed)] = v.mean()
    out = report.main(report.Args(root=str(root), out=str(tmp_path / "results"), reps=2000))
    rows = {r["env_id"]: r for r in out["rows"]}
    for r in rows.values():
        assert r["diff"]["ddpm"][1] > 0
        assert r["diff"]["meanflow"][1] < 0 < r["diff"]["meanflow"][2]
        assert r["alpha"]["ddpm"] == "5e-05"
    assert rows["hopper-medium-replay"]["alpha"]["meanflow"] == "5e-05 (s0), 5e-06 (s1), 5e-06 (s2)"
    assert rows["hopper-medium-replay"]["n_episodes"]["rebrac"] == 30
    assert rows["hopper-medium-replay"]["ms"]["ddpm"] == pytest.approx(50.0)
    seeds_ddpm = rows["hopper-medium-replay"]["seed_diff"]["ddpm"]  # Δ per seed: each seed's own pairs
    assert seeds_ddpm["per_seed"] == pytest.approx({s: 10.0 for s in (0, 1, 2)}, abs=0.5)
    assert seeds_ddpm["ci"][1] > 0 and seeds_ddpm["ci"][0] == pytest.approx(
        rows["hopper-medium-replay"]["diff"]["ddpm"][0]
    )
    assert out["n_runs"] == 2 and out["datasets"] == ["hopper-medium-replay", "walker2d-medium"]
    for algo in ("rebrac", "ddpm", "meanflow"):  # runs = seeds 0 and 1 of each dataset
        matrix = [[per_run[algo][(e, s)] for e in out["datasets"]] for s in (0, 1)]
        assert out["iqm"][algo][0] == pytest.approx(trim_mean(np.ravel(matrix), 0.25))
    table = (tmp_path / "results" / "table.md").read_text()
    assert "the first 2 seed(s) that have every algorithm" in table and "hopper-medium-replay seeds [2])" in table
    assert "rebrac_updates=25000" in table and "ITPO-MeanFlow" in table
    assert "| hopper-medium-replay | ITPO-DDPM | " in table and "| walker2d-medium | ITPO-MeanFlow | " in table
    assert "| 95.8 | 103.1 |" in table  # the paper's hopper-medium-replay row, for orientation
    assert "| walker2d-medium (β_a 1.0) |" in table and "| hopper-medium-replay |" in table  # β_a set by a flag
    mean_ddpm = np.mean([r["diff"]["ddpm"][0] for r in rows.values()])
    assert f"Mean Δ ITPO-DDPM over these 2 dataset(s): {mean_ddpm:+.1f}" in table
    # the paper's gain over the same two datasets (its Table 1: 95.82 -> 103.14, 84.78 -> 88.91), then over its 18
    assert "(the paper's mean gain: +5.7 over the same 2; +3.8 over its 18 MuJoCo, 85.33 against 81.53)" in table
    by_env = ", ".join(f"{e.split('-')[0]} {rows[e]['diff']['ddpm'][0]:+.1f} (1)" for e in sorted(rows))
    assert f"per environment: {by_env}." in table
    lines = table.splitlines()  # the table in groups, each under its environment's name
    hopper, walker = lines.index("| **hopper** |" + " |" * 12), lines.index("| **walker2d** |" + " |" * 12)
    assert lines[hopper + 1].startswith("| hopper-medium-replay |") and lines[walker + 1].startswith(
        "| walker2d-medium (β_a 1.0) |"
    )
    figures = {p.name for p in (tmp_path / "results").glob("*.png")}  # one of each kind per environment
    assert figures == {"differences.png"} | {
        f"{k}_curves_{e}.png" for k in ("budget", "training") for e in ("hopper", "walker2d")
    }
    assert all((tmp_path / "results" / name).stat().st_size > 0 for name in figures)
    assert len(list((tmp_path / "results" / "summaries").glob("*.json"))) == 10


def test_mean_delta_per_family_beside_the_papers_over_the_same_datasets():
    """A table of MuJoCo and AntMaze rows gives each family's mean Δ with the paper's over the same datasets (its
    Tables: hopper-medium-replay 95.82 -> 103.14, walker2d-medium 84.78 -> 88.91, antmaze-umaze 99.0 -> 99.0)."""
    rows = [{"env_id": e, "diff": {"ddpm": (d, d - 1, d + 1)}} for e, d in
            (("hopper-medium-replay", 10.0), ("walker2d-medium", 2.0), ("antmaze-umaze", -4.0))]  # fmt: skip
    assert report.family_means(rows, "ddpm") == (
        "; per family: MuJoCo +6.0 over 2 (the paper's +5.7 over the same 2), AntMaze -4.0 over 1 (the paper's +0.0 "
        "over the same 1)"
    )
    # a random dataset, which the paper's tables do not hold, counts in ours and not in the paper's (it raised)
    random = rows + [{"env_id": "hopper-random", "diff": {"ddpm": (1.0, 0.0, 2.0)}}]
    assert "MuJoCo +4.3 over 3 (the paper's +5.7 over the same 2)" in report.family_means(random, "ddpm")
    assert report.family_means(rows[:2], "ddpm") == "" and report.family_means(rows, "meanflow") == ""


def test_a_world_model_run_on_fewer_seeds_names_them(tmp_path):
    """Seeds 0–1 with the DDPM, seed 1 alone with MeanFlow: the MeanFlow cells are seed 1's and say so."""
    rng = np.random.default_rng(1)
    os.makedirs(tmp_path / "summaries")
    rebrac = {s: rng.normal(50, 10, 10) for s in (0, 1)}
    for seed, wm in ((0, "ddpm"), (1, "ddpm"), (1, "meanflow")):
        s = fake_summary("walker2d-medium-replay", seed, wm, rebrac[seed] + 5 * (seed + 1), rebrac[seed], 5e-5)
        (tmp_path / "summaries" / f"walker2d-medium-replay_seed{seed}_{wm}.json").write_text(json.dumps(s))
    out = report.main(report.Args(root=str(tmp_path), out=str(tmp_path / "results"), reps=200))
    (row,) = out["rows"]
    assert row["alpha"] == {"ddpm": "5e-05", "meanflow": "5e-05 (s1)"}
    assert row["diff"]["meanflow"][0] == pytest.approx(10.0) and row["diff"]["ddpm"][0] == pytest.approx(7.5)
    # the aggregate is seed 1's (the one seed with every algorithm), and the table names seed 0 as left out
    assert out["iqm"]["rebrac"][0] == pytest.approx(rebrac[1].mean())
    assert "(left out: walker2d-medium-replay seeds [0])" in (tmp_path / "results" / "table.md").read_text()


def test_report_adds_a_sweep_to_an_earlier_report(tmp_path):
    """--include: a grid run in parts (its first sweep folder gone) makes one table; where both hold a run,
    the sweep's own summary wins; training histories travel in the report (no checkpoints needed)."""
    first, second, out = tmp_path / "first", tmp_path / "second", tmp_path / "results"
    for root in (first, second):
        os.makedirs(root / "summaries")
    ones, twos = np.full(10, 10.0), np.full(10, 20.0)
    (first / "summaries" / "hopper-medium-replay_seed0_ddpm.json").write_text(
        json.dumps(fake_summary("hopper-medium-replay", 0, "ddpm", ones, ones, 5e-5))
    )
    (first / "summaries" / "hopper-expert_seed0_ddpm.json").write_text(
        json.dumps(fake_summary("hopper-expert", 0, "ddpm", ones, ones, 5e-5))
    )
    os.makedirs(first / "checkpoints" / "hopper-medium-replay")
    history = [{"step": 5, "score": 12.5}, {"step": 10, "score": 30.0}]
    torch.save({"step": 10, "history": history}, first / "checkpoints" / "hopper-medium-replay" / "rebrac_seed0.pt")
    report.main(report.Args(root=str(first), out=str(out), reps=100))
    shutil.rmtree(first)  # the earlier sweep folder is gone; its report remains
    (second / "summaries" / "hopper-expert_seed0_ddpm.json").write_text(
        json.dumps(fake_summary("hopper-expert", 0, "ddpm", twos, ones, 5e-5))
    )
    (second / "summaries" / "hopper-medium_seed0_ddpm.json").write_text(
        json.dumps(fake_summary("hopper-medium", 0, "ddpm", twos, ones, 5e-5))
    )
    result = report.main(report.Args(root=str(second), include=[str(out)], out=str(out), reps=100))
    rows = {r["env_id"]: r for r in result["rows"]}
    assert sorted(rows) == ["hopper-expert", "hopper-medium", "hopper-medium-replay"]
    assert rows["hopper-expert"]["score"]["ddpm"][0] == 20.0  # the new sweep's run, not the earlier report's
    assert rows["hopper-medium-replay"]["score"]["ddpm"][0] == 10.0
    saved = json.loads((out / "histories" / "hopper-medium-replay_seed0_rebrac.json").read_text())
    assert saved["history"] == history and report.load_histories(str(second), [str(out)])["rebrac"]
    with pytest.raises(SystemExit, match="earlier report"):
        report.Args(include=[str(tmp_path / "nothing")])


def test_a_stage_still_training_does_not_replace_the_history_of_the_run_the_table_holds(tmp_path, capsys):
    """A root that continues a run (a MeanFlow taken on from 30k to 200k) holds its checkpoint mid-training: the
    included report's finished history stands until the checkpoint reaches its own budget; then it wins."""
    root, earlier = tmp_path / "root", tmp_path / "earlier"
    os.makedirs(earlier / "histories")
    finished = [{"step": 30, "one_step_rmse": 1.2}]
    record = {"env_id": "halfcheetah-medium-replay", "seed": 1, "stage": "meanflow", "history": finished}
    (earlier / "histories" / "halfcheetah-medium-replay_seed1_meanflow.json").write_text(json.dumps(record))
    path = root / "checkpoints" / "halfcheetah-medium-replay" / "meanflow_seed1.pt"
    os.makedirs(path.parent)
    partial = finished + [{"step": 50, "one_step_rmse": 1.1}]
    torch.save({"step": 50, "args": {"total_steps": 200}, "history": partial}, path)
    assert report.load_histories(str(root), [str(earlier)])["meanflow"][("halfcheetah-medium-replay", 1)] == finished
    assert "is at step 50 of 200: the included history stands" in capsys.readouterr().out
    assert report.load_histories(str(root))["meanflow"][("halfcheetah-medium-replay", 1)] == partial  # none else
    done = partial + [{"step": 200, "one_step_rmse": 0.8}]
    torch.save({"step": 200, "args": {"total_steps": 200}, "history": done}, path)
    assert report.load_histories(str(root), [str(earlier)])["meanflow"][("halfcheetah-medium-replay", 1)] == done


def test_budget_lines_name_the_rows_of_each_budget_and_what_it_sets_apart():
    """Budgets shared by every row are said once; each set names its rows and only what differs from the others."""
    hopper = {"preset": "cpu", "rebrac_updates": 200000, "dynamics_steps": 50000}
    walker = {"preset": "cpu", "rebrac_updates": 200000, "dynamics_steps": 200000, "rebrac_compile": True}
    lines = report.budget_lines([hopper, walker], [["hopper-medium:0", "hopper-expert:0"], ["walker2d-medium:1"]])
    assert lines == [
        "Budgets every row shares: preset=cpu, rebrac_updates=200000",
        "Budgets of hopper-medium:0, hopper-expert:0: dynamics_steps=50000 (not recorded: rebrac_compile)",
        "Budgets of walker2d-medium:1: dynamics_steps=200000, rebrac_compile=True",
    ]
    assert report.budget_lines([hopper], [["hopper-medium:0"]]) == [
        "Budgets (cpu): rebrac_updates=200000, dynamics_steps=50000"
    ]
    assert report.budget_lines([], []) == ["Budgets: not recorded in the summaries."]
    # through the table's header: a run whose world models recorded different budgets names each world model
    ones = np.ones(3)
    ddpm, meanflow = (fake_summary("hopper-medium", 0, wm, ones, ones, 5e-5) for wm in ("ddpm", "meanflow"))
    meanflow["budgets"] = {**meanflow["budgets"], "meanflow_steps": 30000}
    other = fake_summary("hopper-expert", 0, "ddpm", ones, ones, 5e-5)
    header = report.header_lines(
        {"hopper-medium": {0: {"ddpm": ddpm, "meanflow": meanflow}}, "hopper-expert": {0: {"ddpm": other}}}
    )
    assert (
        "Budgets of hopper-expert:0, hopper-medium:0 (ddpm): the shared ones (not recorded: meanflow_steps)" in header
    )
    assert "Budgets of hopper-medium:0 (meanflow): meanflow_steps=30000" in header


def test_report_pairs_each_planner_with_rebrac_and_with_itpo(tmp_path):
    """MPPI loses 4 to ReBRAC on every episode, ITPO gains 10: ITPO − MPPI is 14; a planner seed without
    an ITPO run still has its own row's score and Δ, and ITPO − planner uses the seeds both have."""
    rng = np.random.default_rng(1)
    root = tmp_path / "sweep"
    os.makedirs(root / "summaries")
    os.makedirs(root / "planners")
    for seed in (0, 1):
        rebrac = rng.normal(50, 20, 10)
        mppi = rebrac - 4
        if seed == 0:
            summary = fake_summary("hopper-medium", seed, "ddpm", rebrac + 10, rebrac, 5e-5)
            (root / "summaries" / f"hopper-medium_seed{seed}_ddpm.json").write_text(json.dumps(summary))
        settings = {"env_id": "hopper-medium", "seed": seed, "eval_seed": 1000, "planner": "mppi"}
        samples = 48 if seed == 0 else 39  # N is timed to ITPO's cost per seed
        settings.update(world_model="ddpm", iterations=2, samples=samples, policy_samples=8, elites=16, temperature=0.5)
        plan = {
            "settings": settings,
            "mppi": {"normalized_scores": list(mppi), **lockstep(0.04, len(mppi))},
            "rebrac": {"normalized_scores": list(rebrac), **lockstep(0.001, len(rebrac))},
            "tuned": {"chosen": 0.5, "fixed": False, "tuning_scores": {"0.05": 40.0, "0.5": 41.0}},
            "budget": "matched",
        }
        (root / "planners" / f"hopper-medium_seed{seed}_mppi.json").write_text(json.dumps(plan))
    out = report.main(report.Args(root=str(root), out=str(tmp_path / "results"), reps=500))
    (row,) = out["planners"]
    assert row["label"] == "mppi" and row["seeds"] == [0, 1]
    assert row["diff"][0] == pytest.approx(-4.0) and row["itpo_over"][0] == pytest.approx(14.0)
    assert row["ms"] == pytest.approx(40.0) and row["itpo_ms"] == pytest.approx(50.0)
    # across seeds: each seed's own Δ; ITPO − planner needs two seeds with both (ITPO ran on seed 0 only)
    assert row["seed_diff"]["per_seed"] == pytest.approx({0: -4.0, 1: -4.0}) and row["seed_itpo_over"] is None
    table = (tmp_path / "results" / "table.md").read_text()
    assert "| hopper-medium | mppi | -4.0 (s0), -4.0 (s1) | -4.0 [-4.0, -4.0] | — | — |" in table
    budgets = "I 2 × N 48, N_π 8, k 16, τ 0.5 (s0); I 2 × N 39, N_π 8, k 16, τ 0.5 (s1)"  # each seed's
    assert f"| hopper-medium | mppi | ddpm | {budgets} |" in table
    assert "0.05: 40.0, 0.5: 41.0 → 0.5" in table and "| 40.0 (0.80×) | 50.0 |" in table
    assert len(list((tmp_path / "results" / "planners").glob("*.json"))) == 2
