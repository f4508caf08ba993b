"""benchmarks/report.py never leaves --out worse than it found it: a root without summaries is a
one-line error that writes nothing, and a report that fails half-way replaces nothing."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import report  # noqa: E402


def snapshot(folder) -> dict[str, bytes]:
    """{relative path: bytes} of every file under `folder`."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


@pytest.fixture
def results_copy(tmp_path):
    """A copy of the committed results/ folder, and its byte snapshot."""
    out = tmp_path / "results"
    shutil.copytree(os.path.join(ROOT, "results", "cpu-25k"), out)
    return out, snapshot(out)


@pytest.fixture
def sweep_root(tmp_path):
    """A sweep root holding the committed hopper summaries (no checkpoints: no curves)."""
    root = tmp_path / "sweep"
    shutil.copytree(os.path.join(ROOT, "results", "cpu-25k", "summaries"), root / "summaries")
    return root


@pytest.mark.parametrize("make_summaries_dir", [False, True])
def test_empty_root_is_a_one_line_error_and_writes_nothing(tmp_path, results_copy, make_summaries_dir):
    out, before = results_copy
    empty = tmp_path / "fresh-clone-sweeps"
    if make_summaries_dir:
        os.makedirs(empty / "summaries")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "report.py"), "--root", str(empty), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no summaries"), proc.stderr
    assert snapshot(out) == before
    # a new --out is not even created
    fresh = tmp_path / "new-results"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "report.py"), "--root", str(empty), "--out", str(fresh)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and not fresh.exists()


def test_a_report_that_fails_half_way_replaces_nothing(sweep_root, results_copy, monkeypatch):
    out, before = results_copy

    def broken(path, histories):
        raise RuntimeError("planted: the last figure fails")

    monkeypatch.setattr(report, "plot_training_curves", broken)
    with pytest.raises(RuntimeError, match="planted"):
        report.main(report.Args(root=str(sweep_root), out=str(out), reps=200))
    assert snapshot(out) == before  # table.md and differences.png were written, but only to the staging folder
    assert sorted(os.listdir(out)) == sorted(os.listdir(os.path.join(ROOT, "results", "cpu-25k")))  # no staging left


def test_a_complete_report_replaces_the_files(sweep_root, results_copy):
    out, before = results_copy
    (sweep_root / "summaries" / "hopper-expert_seed0_meanflow.json").unlink()  # a different table
    report.main(report.Args(root=str(sweep_root), out=str(out), reps=200))
    after = snapshot(out)
    assert after["table.md"] != before["table.md"] and after["differences.png"] != before["differences.png"]
    # the same files, replaced in place; the one-figure layout's curves (results/cpu-25k predates the
    # figures per environment) give way to one figure of each kind per environment; no staging left
    old = {"budget_curves.png", "training_curves.png"}
    assert set(after) == set(before) - old | {"budget_curves_hopper.png", "training_curves_hopper.png"}
    assert not [name for name in os.listdir(out) if name.startswith(".report-")]


def test_a_broken_summary_is_one_line_and_writes_nothing(sweep_root, results_copy):
    """A half-written summary (a sweep still running) is named, not a traceback, and not skipped."""
    out, before = results_copy
    (sweep_root / "summaries" / "hopper-expert_seed0_ddpm.json").write_text('{"settings": {"env_id": "hop')
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "report.py"), "--root", str(sweep_root), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and "hopper-expert_seed0_ddpm.json is not an itpo_eval.py summary" in line
    assert snapshot(out) == before


@pytest.mark.parametrize("flags", [["--reps", "0"], ["--confidence", "95"]])
def test_meaningless_interval_settings_are_refused(flags):
    with pytest.raises(SystemExit, match="error: --reps must be ≥ 1 and --confidence in"):
        report.tyro.cli(report.Args, args=flags)
