"""benchmarks/frontier.py: the cost/gain grid on the tiny pipeline's checkpoints, resumed point by point."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import frontier  # noqa: E402


def tiny(pipeline, out, **grid):
    base = dict(
        env_id=pipeline["env_id"],
        checkpoints=str(pipeline["work"] / "checkpoints"),
        horizon=2,
        particles=4,
        particles_axis=[4],
        inner_steps_axis=[1],
        horizon_axis=[2],
        joint=[],
        mppi_budgets=[],
        shooting=False,
        episodes=2,
        max_episode_steps=5,
        out=str(out),
    )
    return frontier.Args(**{**base, **grid})


def test_two_points_then_a_third_resumed_from_their_json(pipeline, tmp_path):
    rows = frontier.main(tiny(pipeline, tmp_path))
    assert [r["point"]["method"] for r in sorted(rows, key=lambda r: r["name"])] == ["itpo-ddpm", "itpo-meanflow"]
    folder = tmp_path / f"{pipeline['env_id']}_seed0"
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json")}
    assert len(stamps) == 2
    rows = frontier.main(tiny(pipeline, tmp_path, particles_axis=[4, 8]))
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json") if p.name in stamps} == stamps  # not rerun
    by_name = {r["name"]: r for r in rows}
    assert len(by_name) == 4  # ITPO-DDPM at M 4 and 8, MeanFlow at M 4 and 8
    small, large = by_name["itpo-ddpm_K3_H2_M4_E1"], by_name["itpo-ddpm_K3_H2_M8_E1"]
    assert 1.5 < large["gflop"] / small["gflop"] < 2.5  # the FLOPs of a decision grow with M
    for r in rows:  # every point paired against the one ReBRAC run, on the same episodes
        assert r["diff"] is not None and r["rebrac"] == small["rebrac"] and r["ms"] > 0
    for path in folder.glob("*.json"):  # the cost × lockstep steps × episodes is the run's wall time (no probes)
        rec = frontier.json.loads(path.read_text())
        lockstep_ms = rec["ms_per_episode_step"] * max(rec["lengths"]) * len(rec["lengths"])
        assert len(rec["lengths"]) == 2 and lockstep_ms == pytest.approx(1e3 * rec["seconds"], rel=1e-6)
    runs = {p.name for p in (pipeline["work"] / "runs").glob(f"frontier_{pipeline['env_id']}_seed0_*")}
    assert runs == {f"frontier_{pipeline['env_id']}_seed0_{name}" for name in by_name}  # the FLOP counts' runs removed
    assert (tmp_path / f"frontier_{pipeline['env_id']}.png").stat().st_size > 0
    table = (tmp_path / f"frontier_{pipeline['env_id']}.md").read_text()
    assert "| ITPO-DDPM | K3 H2 M8 E1 |" in table and "Best Δ" in table
    # the same points with another α would replace results of other settings: refused in one line
    with pytest.raises(SystemExit, match="holds this point run with other settings or checkpoints"):
        frontier.main(tiny(pipeline, tmp_path, step_size=1e-3))
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json") if p.name in stamps} == stamps


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"particles_axis": []}, "--particles-axis needs positive integers"),
        ({"particles_axis": [4, 0]}, "--particles-axis needs positive integers"),
        ({"joint": ["H3,M0,E1"]}, "--joint takes points such as H3,M16,E1"),
        ({"mppi_budgets": ["2by48"]}, "--mppi-budgets takes I x N"),
    ],
)
def test_a_bad_grid_is_one_line(pipeline, tmp_path, bad, message):
    with pytest.raises(SystemExit, match=message):
        tiny(pipeline, tmp_path, **bad)


def record(folder, name, m, ms, scores, rebrac=None, **more):
    """A point's JSON as the tool writes it (ms_per_env_step alone: as written before it kept a step's time)."""
    point = {"name": name, "method": "itpo-ddpm", "H": 5, "M": m, "E": 1, "world": "dynamics.pt"}
    rec = {
        "point": point,
        "key": {"settings": {"eval_seed": 1000}},
        "scores": scores,
        "rebrac": rebrac,
        "ms_per_env_step": ms,
        "flops_per_env_step": 1e9,
        "device": "a CPU",
        **more,
    }
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.json").write_text(frontier.json.dumps(rec))


def test_a_point_on_fewer_seeds_is_marked_and_kept_off_the_front(tmp_path):
    """Merging two seeds' grids whose axes differ: a point that ran on one seed only (here cheaper and better than
    any other) must not pass as the dataset's frontier, whose other points average over both seeds."""
    env_id = "hopper-medium-replay"
    seed = lambda s: tmp_path / f"{env_id}_seed{s}"  # noqa: E731
    for s in (0, 1):
        record(seed(s), "itpo-ddpm_K10_H5_M32_E1", 32, 30.0, [60.0, 70.0, 80.0], rebrac=[40.0, 50.0, 60.0])
        record(seed(s), "itpo-ddpm_K10_H5_M8_E1", 8, 12.0, [50.0, 60.0, 70.0])
    record(seed(1), "itpo-ddpm_K10_H5_M2_E1", 2, 9.0, [90.0, 95.0, 99.0])  # on seed 1 only
    rows = frontier.frontier_rows(frontier.load_points(str(tmp_path), env_id))
    frontier.write_frontier(str(tmp_path), env_id, rows)
    table = (tmp_path / f"frontier_{env_id}.md").read_text()
    lines = {line.split("|")[2].strip(): line for line in table.splitlines() if line.startswith("| ITPO-DDPM")}
    assert set(lines) == {"K10 H5 M2 E1 (s1)", "K10 H5 M8 E1", "K10 H5 M32 E1"}
    assert not lines["K10 H5 M2 E1 (s1)"].rstrip().endswith("yes |")  # not on the front, though the best Δ
    assert lines["K10 H5 M8 E1"].rstrip().endswith("yes |") and lines["K10 H5 M32 E1"].rstrip().endswith("yes |")
    assert "Best Δ +20.0." in table and "Cheapest within 90 % of it: ITPO-DDPM K10 H5 M32 E1" in table


def test_the_cost_is_a_lockstep_step_per_episode_and_every_episode_is_paired(tmp_path):
    """Where episodes fell, the wall time per transition of the episodes run overstates a point's cost: the tool
    plots a lockstep step's time per episode, and marks (†) records that hold only the other; a point whose
    episodes lack some of their ReBRAC pairs gets no Δ (not one over a silent subset)."""
    env_id = "walker2d-medium-replay"
    seed0, seed1 = tmp_path / f"{env_id}_seed0", tmp_path / f"{env_id}_seed1"
    record(seed0, "itpo-ddpm_K10_H5_M32_E1", 32, 30.0, [60.0, 70.0], rebrac=[40.0, 50.0], ms_per_episode_step=30.0)
    record(seed0, "itpo-ddpm_K10_H5_M4_E1", 4, 20.0, [10.0, 70.0], ms_per_episode_step=11.0)  # one fell: 20 > 11
    record(seed0, "itpo-ddpm_K10_H5_M8_E1", 8, 25.0, [20.0, 70.0])  # an older record: per transition only
    record(seed1, "itpo-ddpm_K10_H5_M32_E1", 32, 30.0, [60.0, 70.0], ms_per_episode_step=30.0)  # no ReBRAC here
    rows = {r["name"]: r for r in frontier.frontier_rows(frontier.load_points(str(tmp_path), env_id))}
    assert rows["itpo-ddpm_K10_H5_M4_E1"]["ms"] == 11.0 and not rows["itpo-ddpm_K10_H5_M4_E1"]["per_transition"]
    assert rows["itpo-ddpm_K10_H5_M8_E1"]["ms"] == 25.0 and rows["itpo-ddpm_K10_H5_M8_E1"]["per_transition"]
    assert rows["itpo-ddpm_K10_H5_M4_E1"]["diff"] is not None
    assert rows["itpo-ddpm_K10_H5_M32_E1"]["diff"] is None  # seed 1's episodes have no ReBRAC to pair with
    frontier.write_frontier(str(tmp_path), env_id, list(rows.values()))
    table = (tmp_path / f"frontier_{env_id}.md").read_text()
    assert "| K10 H5 M8 E1 (s0) | 25.0† |" in table and "| K10 H5 M4 E1 (s0) | 11.0 |" in table
    assert "ms measured on: seed 0: a CPU; seed 1: a CPU." in table


def test_variants_that_would_share_a_name_or_lack_a_file_are_one_line(pipeline, tmp_path):
    dynamics = pipeline["work"] / "checkpoints" / pipeline["env_id"] / "dynamics_seed0.pt"
    copy = tmp_path / "dynamics_copy.pt"  # the same K as the base DDPM: its point would overwrite the base's
    copy.write_bytes(dynamics.read_bytes())
    with pytest.raises(SystemExit, match="would both be point itpo-ddpm_K3_H2_M4_E1"):
        frontier.main(tiny(pipeline, tmp_path, ddpm_variants=[str(copy)]))
    with pytest.raises(SystemExit, match="error: no checkpoint"):
        frontier.main(tiny(pipeline, tmp_path, ddpm_variants=[str(tmp_path / "missing.pt")]))
    assert not list(tmp_path.glob("*_seed0"))  # refused before any point ran


def test_labels_of_crowded_points_do_not_cover_each_other():
    """Points at nearly the same cost and Δ (M 128, E 4 and M 64 E 2 near 100 ms) keep their labels apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    points = [(100.0, 22.3, "M128"), (104.0, 21.9, "M64 E2"), (110.0, 21.9, "E4"), (10.0, 5.0, "H1")]
    ax.plot([p[0] for p in points], [p[1] for p in points], "o")
    ax.set_xscale("log")
    frontier.place_labels(fig, [(ax, text, x, y, "C0") for x, y, text in points])
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    plt.close(fig)
    assert len(boxes) == 4
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
