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


def test_a_point_on_fewer_seeds_is_marked_and_kept_off_the_front(tmp_path):
    """Merging two seeds' grids whose axes differ: a point that ran on one seed only (here cheaper and better than
    any other) must not pass as the dataset's frontier, whose other points average over both seeds."""
    env_id = "hopper-medium-replay"

    def record(seed, name, m, ms, scores, rebrac=None):
        point = {"name": name, "method": "itpo-ddpm", "H": 5, "M": m, "E": 1, "world": "dynamics.pt"}
        rec = {
            "point": point,
            "key": {"settings": {"eval_seed": 1000}},
            "scores": scores,
            "rebrac": rebrac,
            "ms_per_env_step": ms,
            "flops_per_env_step": 1e9,
        }
        folder = tmp_path / f"{env_id}_seed{seed}"
        folder.mkdir(exist_ok=True)
        (folder / f"{name}.json").write_text(frontier.json.dumps(rec))

    for seed in (0, 1):
        record(seed, "itpo-ddpm_K10_H5_M32_E1", 32, 30.0, [60.0, 70.0, 80.0], rebrac=[40.0, 50.0, 60.0])
        record(seed, "itpo-ddpm_K10_H5_M8_E1", 8, 12.0, [50.0, 60.0, 70.0])
    record(1, "itpo-ddpm_K10_H5_M2_E1", 2, 9.0, [90.0, 95.0, 99.0])  # on seed 1 only
    rows = frontier.frontier_rows(frontier.load_points(str(tmp_path), env_id))
    frontier.write_frontier(str(tmp_path), env_id, rows)
    table = (tmp_path / f"frontier_{env_id}.md").read_text()
    lines = {line.split("|")[2].strip(): line for line in table.splitlines() if line.startswith("| ITPO-DDPM")}
    assert set(lines) == {"K10 H5 M2 E1 (s1)", "K10 H5 M8 E1", "K10 H5 M32 E1"}
    assert not lines["K10 H5 M2 E1 (s1)"].rstrip().endswith("yes |")  # not on the front, though the best Δ
    assert lines["K10 H5 M8 E1"].rstrip().endswith("yes |") and lines["K10 H5 M32 E1"].rstrip().endswith("yes |")
    assert "Best Δ +20.0." in table and "Cheapest within 90 % of it: ITPO-DDPM K10 H5 M32 E1" in table
