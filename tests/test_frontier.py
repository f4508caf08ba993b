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
