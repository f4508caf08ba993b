"""The table and figures of a sweep (benchmarks/sweep.py): ReBRAC against ITPO with each world model.

    python benchmarks/report.py --root sweeps/cpu --out results
    python benchmarks/report.py --root sweeps/cpu --include results --out results   # add to an earlier report

Reads every `<root>/summaries/*.json` (one per dataset, seed and world model), `<root>/curves/*.json`,
`<root>/planners/*.json` (plan_eval's runs) and the checkpoints' training histories under
`<root>/checkpoints/`, and writes into `--out`:

    table.md             a header with the budgets, seeds and the sweep root each row was made in; then
                         per dataset: mean normalised score with a 95 % percentile-bootstrap interval
                         over all episodes of all seeds; the paired ITPO − ReBRAC difference (paired by
                         (seed, episode)) with its interval; α; ms per env step; for datasets with several
                         seeds, Δ per seed and its two-level (seeds, then episodes) interval; the aggregate IQM
                         over (dataset, seed) runs with rliable's stratified-bootstrap interval
                         then the planners beside ITPO on the same models and episodes, the budget
                         curves and every α's tuning scores
    differences.png      the paired differences per dataset and the aggregate IQMs, with intervals
    budget_curves_<env>.png    per environment (hopper, walker2d, ...), per dataset: ReBRAC's score and
                         ITPO's paired Δ against ReBRAC's updates, and ITPO's Δ against the world
                         model's held-out one-step RMSE
    training_curves_<env>.png  per environment: ReBRAC's evaluation score and the models' held-out RMSE
                         against steps
    summaries/, curves/, planners/  copies of the summary JSONs, budget-curve points, planner summaries
    histories/           the training histories, as JSON (a report without the checkpoints still draws them)

`--include` folders are earlier reports (an `--out` of this script): their summaries, curves and histories
join the sweep's, so that a grid run in parts (sittings, machines whose sweep folders are gone) makes one
table. Where both hold the same run, the sweep's own files win.

The statistics are the small pure functions `bootstrap_ci`, `seed_bootstrap_ci`, `paired_difference` and `iqm_table`.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass, field

import numpy as np
import tyro

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORLD_MODELS = ("ddpm", "meanflow")
ALGOS = ("rebrac", "ddpm", "meanflow")
NAMES = {"rebrac": "ReBRAC", "ddpm": "ITPO-DDPM", "meanflow": "ITPO-MeanFlow"}
COLORS = {"rebrac": "tab:gray", "ddpm": "tab:blue", "meanflow": "tab:orange"}
# The paper's Tables 1 (MuJoCo) and 3 (AntMaze), ICML version (D4RL's datasets, 1M ReBRAC updates, ten seeds):
# (ReBRAC, ITPO) per dataset, for orientation only: this project's datasets are made locally the D4RL way.
PAPER_SCORES = {
    "halfcheetah-medium": (65.87, 70.05),
    "halfcheetah-expert": (105.22, 106.14),
    "halfcheetah-medium-expert": (100.29, 105.35),
    "halfcheetah-medium-replay": (50.21, 59.89),
    "halfcheetah-full-replay": (82.19, 85.149),
    "hopper-medium": (102.05, 103.38),
    "hopper-expert": (104.73, 105.06),
    "hopper-medium-expert": (105.70, 107.42),
    "hopper-medium-replay": (95.82, 103.14),
    "hopper-full-replay": (107.49, 108.77),
    "walker2d-medium": (84.78, 88.91),
    "walker2d-expert": (112.15, 116.65),
    "walker2d-medium-expert": (111.81, 115.76),
    "walker2d-medium-replay": (80.67, 95.87),
    "walker2d-full-replay": (100.16, 105.76),
    "antmaze-umaze": (99.0, 99.0),
    "antmaze-umaze-diverse": (89.0, 90.0),
    "antmaze-medium-play": (86.7, 94.4),
    "antmaze-medium-diverse": (83.0, 94.0),
    "antmaze-large-play": (59.0, 67.0),
    "antmaze-large-diverse": (51.0, 66.0),
}
# its mean gains: MuJoCo over 18 datasets (random ones included), AntMaze over 6
PAPER_MEAN_GAIN = {"mujoco": ("18 MuJoCo", 81.53, 85.33), "antmaze": ("6 AntMaze", 77.62, 85.07)}


@dataclass
class Args:
    root: str = "sweeps/cpu"
    """sweep folder (the one with summaries/ and checkpoints/)"""
    out: str = "results"
    """where the table, the figures and the summary copies go"""
    include: list[str] = field(default_factory=list)
    """earlier report folders (an --out of this script) whose runs join the sweep's (the sweep's win)"""
    reps: int = 10_000
    """bootstrap resamples (episode intervals and rliable's stratified bootstrap)"""
    confidence: float = 0.95
    """size of the intervals"""
    seed: int = 0
    """RNG seed of the bootstraps (fixed: the same summaries give the same table)"""

    def __post_init__(self):
        if self.reps < 1 or not 0 < self.confidence < 1:
            sys.exit(f"error: --reps must be ≥ 1 and --confidence in (0, 1), not {self.reps} and {self.confidence}")
        for folder in self.include:
            if not os.path.isdir(os.path.join(folder, "summaries")):
                sys.exit(f"error: --include {folder} holds no summaries/: it must be an earlier report's --out folder")


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------
def bootstrap_ci(values, reps: int = 10_000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean of `values` and its percentile-bootstrap interval (resampling the
    values with replacement, `reps` times, with a fixed RNG seed)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        return (math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(reps, x.size))].mean(1)
    lo, hi = np.percentile(means, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(x.mean()), float(lo), float(hi)


def seed_bootstrap_ci(
    groups: list, reps: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high) over groups of values, one group per training seed: each resample draws the seeds with
    replacement, then each drawn seed's values with replacement (a two-level bootstrap). Where the seeds differ
    more than their episodes do, this interval is the wider one: it asks how the mean would move with other
    training runs, not only with other episodes of these."""
    groups = [np.asarray(g, dtype=np.float64).ravel() for g in groups if len(g)]
    if not groups:
        return (math.nan, math.nan, math.nan)
    rng, n = np.random.default_rng(seed), len(groups)
    means = np.empty(reps)
    for r, picks in enumerate(rng.integers(0, n, size=(reps, n))):
        means[r] = np.concatenate([groups[i][rng.integers(0, groups[i].size, groups[i].size)] for i in picks]).mean()
    lo, hi = np.percentile(means, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(np.concatenate(groups).mean()), float(lo), float(hi)


def ms_per_env_step(result: dict) -> float:
    """A run's cost per env step: its lockstep step (all episodes planned at once, ended ones too) per episode.
    Summaries written before itpo_eval.py measured it that way hold the time per transition of the episodes
    run under "seconds_per_env_step", dearer where episodes ended early: this reads both the same way."""
    return 1e3 * result["seconds_per_step"] / len(result["lengths"])


def paired_difference(a, b, reps: int = 10_000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of a − b over pairs, with the bootstrap resampling whole pairs.

    `a` and `b` are either dicts keyed by the pair (e.g. (seed, episode seed)), which must hold the
    same keys, or sequences of the same length, aligned."""
    if isinstance(a, dict) or isinstance(b, dict):
        if not (isinstance(a, dict) and isinstance(b, dict)) or set(a) != set(b):
            raise ValueError("paired_difference: a and b must be dicts over the same pairs")
        keys = sorted(a)
        a, b = [a[k] for k in keys], [b[k] for k in keys]
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference: {a.shape} vs {b.shape} values, not pairs")
    return bootstrap_ci(a - b, reps, confidence, seed)


def seed_differences(a: dict, b: dict, reps: int, confidence: float, seed: int) -> dict | None:
    """a − b per training seed over the (seed, episode) pairs both hold, and its interval with the seeds resampled
    too (`seed_bootstrap_ci`); None where the pairs come from fewer than two seeds."""
    shared = sorted(set(a) & set(b))
    by_seed: dict[int, list[float]] = {}
    for k in shared:
        by_seed.setdefault(k[0], []).append(a[k] - b[k])
    if len(by_seed) < 2:
        return None
    return {
        "per_seed": {s: float(np.mean(d)) for s, d in by_seed.items()},
        "ci": seed_bootstrap_ci(list(by_seed.values()), reps, confidence, seed),
    }


def iqm_table(
    score_dict: dict[str, np.ndarray], reps: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> dict[str, tuple[float, float, float]]:
    """{algo: (IQM, low, high)} from rliable: the interquartile mean over all runs × tasks of each
    algo's score matrix [num_runs, num_tasks], and its stratified-bootstrap interval (runs are
    resampled within each task)."""
    from rliable import library as rly
    from rliable import metrics

    scores = {k: np.asarray(v, dtype=np.float64) for k, v in score_dict.items()}
    with warnings.catch_warnings():  # rliable hands arch a RandomState, which arch deprecates
        warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
        points, intervals = rly.get_interval_estimates(
            scores,
            lambda x: np.array([metrics.aggregate_iqm(x)]),
            reps=reps,
            confidence_interval_size=confidence,
            random_state=np.random.RandomState(seed),
        )
    return {k: (float(points[k][0]), float(intervals[k][0][0]), float(intervals[k][1][0])) for k in scores}


# ---------------------------------------------------------------------------------------------
# Reading a sweep
# ---------------------------------------------------------------------------------------------
def json_files(folders: list[str], sub: str) -> list[str]:
    """<folder>/<sub>/*.json of each folder in turn: a later folder's file of a run replaces an earlier one's."""
    return [path for folder in folders for path in sorted(glob.glob(os.path.join(folder, sub, "*.json")))]


def load_summaries(root: str, include: list[str] = ()) -> dict[str, dict[int, dict[str, dict]]]:
    """{env_id: {seed: {world model: summary}}} from <root>/summaries/*.json (and the --include folders')."""
    runs: dict = {}
    for path in json_files([*include, root], "summaries"):
        try:
            with open(path) as f:
                summary = json.load(f)
            s = summary["settings"]
            env_id, seed, wm = s["env_id"], int(s["seed"]), s["world_model"]
        except (OSError, ValueError, KeyError, TypeError) as err:  # half-written, foreign or hand-edited
            sys.exit(f"error: {path} is not an itpo_eval.py summary ({type(err).__name__}: {err}); move it away")
        summary["_path"] = path
        runs.setdefault(env_id, {}).setdefault(seed, {})[wm] = summary
    return runs


def load_planners(root: str, include: list[str] = ()) -> dict[str, dict[int, dict[str, dict]]]:
    """{env_id: {seed: {label: summary}}} from <root>/planners/*.json (and the --include folders'); label:
    the planner, or mppi-tdmpc2 for MPPI at TD-MPC2's budget."""
    out: dict = {}
    for path in json_files([*include, root], "planners"):
        try:
            with open(path) as f:
                summary = json.load(f)
            s = summary["settings"]
            label = s["planner"] + ("-tdmpc2" if summary.get("budget") == "tdmpc2" else "")
            env_id, seed = s["env_id"], int(s["seed"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            sys.exit(f"error: {path} is not a sweep's plan_eval.py summary ({type(err).__name__}: {err}); move it away")
        summary["_path"] = path
        out.setdefault(env_id, {}).setdefault(seed, {})[label] = summary
    return out


def planner_rows(planners: dict, runs: dict, reps: int, confidence: float, seed: int) -> list[dict]:
    """Per (dataset, planner): its score, its paired Δ against ReBRAC, ITPO's paired Δ over it (ITPO with
    the planner's world model, on the same (seed, episode)), both costs in ms per env step, its tuning."""
    rows = []
    for env_id in sorted(planners):
        labels = sorted({label for by_label in planners[env_id].values() for label in by_label})
        for label in labels:
            runs_here = {s: by[label] for s, by in sorted(planners[env_id].items()) if label in by}
            planner = next(iter(runs_here.values()))["settings"]["planner"]
            wm = next(iter(runs_here.values()))["settings"]["world_model"]
            mine, base, itpo, itpo_ms = {}, {}, {}, []
            for s, summary in runs_here.items():
                mine.update(episode_scores(summary, planner))
                base.update(episode_scores(summary, "rebrac") if "rebrac" in summary else {})
                with_itpo = runs.get(env_id, {}).get(s, {}).get(wm)
                if with_itpo is not None:
                    itpo.update(episode_scores(with_itpo, "itpo"))
                    itpo_ms.append(ms_per_env_step(with_itpo["itpo"]))
            shared = {k: v for k, v in itpo.items() if k in mine}
            tuned = [summary.get("tuned") for summary in runs_here.values()]
            rows.append(
                {
                    "env_id": env_id,
                    "label": label,
                    "wm": wm,
                    # N and M are timed per (dataset, seed): each seed's budget where they differ
                    "budget": per_seed({s: planner_budget(r["settings"]) for s, r in runs_here.items()}, "; "),
                    "seeds": sorted(runs_here),
                    "score": bootstrap_ci(list(mine.values()), reps, confidence, seed),
                    "diff": paired_difference(mine, base, reps, confidence, seed) if base else None,
                    "itpo_over": (
                        paired_difference(shared, {k: mine[k] for k in shared}, reps, confidence, seed)
                        if shared
                        else None
                    ),
                    # with several training seeds: each one's Δ and the interval with the seeds resampled
                    "seed_diff": seed_differences(mine, base, reps, confidence, seed),
                    "seed_itpo_over": seed_differences(shared, mine, reps, confidence, seed),
                    "ms": float(np.mean([ms_per_env_step(r[planner]) for r in runs_here.values()])),
                    "itpo_ms": float(np.mean(itpo_ms)) if itpo_ms else None,
                    # the planner's lockstep step over ITPO's, timed side by side (plan_eval --match-itpo)
                    "side_by_side": [r["match"]["ratio"] for r in runs_here.values() if "match" in r] or None,
                    "tuned": tuned,
                }
            )
    return rows


def planner_budget(settings: dict) -> str:
    if settings["planner"] == "mppi":
        return (
            f"I {settings['iterations']} × N {settings['samples']}, N_π {settings['policy_samples']}, "
            f"k {settings['elites']}, τ {settings['temperature']!r}"
        )
    return f"M {settings['particles']}, E {settings['shooting_steps']}, step {settings['step_size']!r}"


def per_seed(texts: dict[int, str], sep: str, seeds: list[int] | None = None) -> str:
    """A row's cell: the one text its seeds share (all of `seeds`, if given), else each seed's as `text (sN)`."""
    if len(set(texts.values())) == 1 and (seeds is None or len(texts) == len(seeds)):
        return next(iter(texts.values()))
    return sep.join(f"{t} (s{s})" for s, t in texts.items())


def tuning_text(tuned: list[dict | None]) -> str:
    """Each seed's tuning scores per candidate, or 'fixed'."""
    parts = []
    for record in tuned:
        if not record or record.get("fixed") or not record.get("tuning_scores"):
            parts.append("fixed")
            continue
        scores = ", ".join(f"{v}: {x:.1f}" if x is not None else f"{v}: —" for v, x in record["tuning_scores"].items())
        parts.append(f"{scores} → {record['chosen']!r}")
    return "; ".join(dict.fromkeys(parts))


def load_curves(
    root: str, runs: dict, include: list[str] = ()
) -> dict[tuple[str, str, str], dict[int, dict[int, dict]]]:
    """Budget curves: {(env_id, world model, varied stage): {step: {seed: summary}}} from
    <root>/curves/*.json (and the --include folders'), with each run's final summary as the last point of
    both of its curves."""
    curves: dict = {}
    for path in json_files([*include, root], "curves"):
        with open(path) as f:
            point = json.load(f)
        point["_path"] = path
        s, c = point["settings"], point["curve"]
        curves.setdefault((s["env_id"], s["world_model"], c["vary"]), {}).setdefault(c["step"], {})[int(s["seed"])] = (
            point
        )
    for env_id, by_seed in runs.items():
        for seed, by_wm in by_seed.items():
            for wm, summary in by_wm.items():
                models = summary.get("models")
                if models is None:  # made before the sweep recorded its models: no curve point
                    continue
                for stage, info in models.items():
                    key = (env_id, wm, stage)
                    if stage != "reward" and key in curves:
                        curves[key].setdefault(info["step"], {})[seed] = summary
    return curves


def curve_rows(curves: dict, reps: int, confidence: float, seed: int) -> list[dict]:
    """One row per curve point, seeds pooled: the step, the varied model's held-out RMSE (world models) or
    ReBRAC's own evaluation at that snapshot, ReBRAC's and ITPO's scores on the ITPO run's episodes, and the
    paired Δ, each with its bootstrap interval."""
    rows = []
    for (env_id, wm, vary), points in sorted(curves.items()):
        for step, by_seed in sorted(points.items()):
            itpo, base, rmse = {}, {}, []
            for summary in by_seed.values():
                itpo.update(episode_scores(summary, "itpo"))
                base.update(episode_scores(summary, "rebrac"))
                metrics = summary["models"][vary]["metrics"]
                if "one_step_rmse" in metrics:
                    rmse.append(metrics["one_step_rmse"])
            rows.append(
                {
                    "env_id": env_id,
                    "wm": wm,
                    "vary": vary,
                    "step": step,
                    "seeds": sorted(by_seed),
                    "rmse": float(np.mean(rmse)) if rmse else None,
                    "rebrac": bootstrap_ci(list(base.values()), reps, confidence, seed),
                    "itpo": bootstrap_ci(list(itpo.values()), reps, confidence, seed),
                    "diff": paired_difference(itpo, base, reps, confidence, seed),
                }
            )
    return rows


def alpha_rows(runs: dict) -> list[str]:
    """Every α's tuning score, per (dataset, seed, world model), as Markdown table rows."""
    out = []
    for env_id, by_seed in sorted(runs.items()):
        for seed, by_wm in sorted(by_seed.items()):
            for wm, summary in sorted(by_wm.items()):
                alpha = summary.get("alpha", {})
                scores = alpha.get("tuning_scores") or {}
                cut = alpha.get("tune_max_steps")
                tuned = ", ".join(f"{a}: {v:.1f}" if v is not None else f"{a}: —" for a, v in scores.items())
                out.append(
                    f"| {env_id} | {seed} | {NAMES[wm]} | {tuned or 'fixed'} | {alpha.get('chosen')!r} | "
                    f"{len(alpha.get('tune_seeds', []))} | {cut or 'full length'} |"
                )
    return out


def episode_scores(summary: dict, which: str) -> dict[tuple[int, int], float]:
    """{(seed, episode env seed): normalised score} of summary[which] ('itpo' or 'rebrac')."""
    s = summary["settings"]
    return {
        (int(s["seed"]), int(s["eval_seed"]) + i): float(v) for i, v in enumerate(summary[which]["normalized_scores"])
    }


def algo_scores(by_wm: dict[str, dict], algo: str) -> dict[tuple[int, int], float] | None:
    """The episodes of one (dataset, seed) run for 'rebrac' (the baseline of the DDPM summary, or of
    the MeanFlow one where there is none) or for ITPO with a world model."""
    if algo == "rebrac":
        for wm in WORLD_MODELS:
            if wm in by_wm and "rebrac" in by_wm[wm]:
                return episode_scores(by_wm[wm], "rebrac")
        return None
    return episode_scores(by_wm[algo], "itpo") if algo in by_wm else None


def dataset_rows(runs: dict, reps: int, confidence: float, seed: int) -> list[dict]:
    """One row per dataset: pooled-episode intervals per algo, paired differences per world model,
    α per world model, ms per env step, seeds."""
    rows = []
    for env_id in sorted(runs):
        seeds = sorted(runs[env_id])
        row = {"env_id": env_id, "seeds": seeds, "score": {}, "diff": {}, "seed_diff": {}, "alpha": {}, "ms": {}}
        row["n_episodes"] = {}
        # ReBRAC's β_a where the sweep's --rebrac-actor-bc-coef replaced rebrac.py's per-dataset table
        set_betas = {
            summary.get("rebrac_actor_bc_coef") for by_wm in runs[env_id].values() for summary in by_wm.values()
        }
        row["actor_bc_coef"] = sorted(set_betas - {None})
        for algo in ALGOS:
            pooled = {}
            for s in seeds:
                pooled.update(algo_scores(runs[env_id][s], algo) or {})
            if pooled:
                row["score"][algo] = bootstrap_ci(list(pooled.values()), reps, confidence, seed)
                row["n_episodes"][algo] = len(pooled)
        for wm in WORLD_MODELS:
            with_wm = [s for s in seeds if wm in runs[env_id][s] and "rebrac" in runs[env_id][s][wm]]
            if not with_wm:
                continue
            itpo, base = {}, {}
            for s in with_wm:  # each ITPO episode against ReBRAC on the same seed and env seed
                itpo.update(episode_scores(runs[env_id][s][wm], "itpo"))
                base.update(episode_scores(runs[env_id][s][wm], "rebrac"))
            row["diff"][wm] = paired_difference(itpo, base, reps, confidence, seed)
            across = seed_differences(itpo, base, reps, confidence, seed)  # Δ per training seed, seeds resampled
            if across:
                row["seed_diff"][wm] = across
            alphas = {s: repr(runs[env_id][s][wm].get("alpha", {}).get("chosen")) for s in with_wm}
            row["alpha"][wm] = per_seed(alphas, ", ", seeds)  # seeds named where they differ or some lack wm
            row["ms"][wm] = float(np.mean([ms_per_env_step(runs[env_id][s][wm]["itpo"]) for s in with_wm]))
        rows.append(row)
    return rows


def aggregate_matrices(runs: dict) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """Score matrices [num_runs, num_tasks] for rliable: entry (i, j) is the mean normalised score of
    the i-th seed on dataset j. Only algos with a run on every dataset enter, and only seeds that
    have every entering algo; each dataset keeps its first (lowest) n such seeds, n the smallest
    count; the notes name every seed left out. Returns (matrices, datasets, notes)."""
    datasets = sorted(runs)
    notes = []
    if not datasets:
        return {}, datasets, ["no summaries"]
    algos = [a for a in ALGOS if all(any(algo_scores(runs[e][s], a) for s in runs[e]) for e in datasets)]
    for a in ALGOS:
        if a not in algos and any(algo_scores(runs[e][s], a) for e in datasets for s in runs[e]):
            notes.append(f"{NAMES[a]} is left out of the aggregate: it has no run on some dataset.")
    if not algos:
        return {}, datasets, notes
    seeds = {e: [s for s in sorted(runs[e]) if all(algo_scores(runs[e][s], a) for a in algos)] for e in datasets}
    n = min(len(v) for v in seeds.values())
    if n == 0:
        return {}, datasets, notes + ["no seed has every algo on every dataset: no aggregate."]
    dropped = {e: [s for s in sorted(runs[e]) if s not in seeds[e][:n]] for e in datasets}
    if any(dropped.values()):  # a seed that lacks an algo is left out too, and named
        notes.append(
            f"The aggregate uses, per dataset, the first {n} seed(s) that have every algorithm "
            f"(left out: " + "; ".join(f"{e} seeds {v}" for e, v in dropped.items() if v) + ")."
        )
    matrices = {
        a: np.array(
            [[np.mean(list(algo_scores(runs[e][seeds[e][i]], a).values())) for e in datasets] for i in range(n)]
        )
        for a in algos
    }
    return matrices, datasets, notes


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def paper_gains(env_ids: list[str]) -> str:
    """The paper's mean gain over the same datasets (from its tables), then over each family it averaged
    (MuJoCo's 18 hold its random datasets, which this project does not run)."""
    same = paper_gain(env_ids)
    families = dict.fromkeys("antmaze" if e.startswith("antmaze") else "mujoco" for e in env_ids)
    gains = [PAPER_MEAN_GAIN[f] for f in families]
    return "; ".join(
        ([f"{np.mean(same):+.1f} over the same {len(same)}"] if same else [])
        + [f"{new - old:+.1f} over its {what}, {new:.2f} against {old:.2f}" for what, old, new in gains]
    )


def paper_gain(env_ids: list[str]) -> list[float]:
    """The paper's ITPO − ReBRAC on each of these datasets that its tables hold (not the random ones)."""
    return [PAPER_SCORES[e][1] - PAPER_SCORES[e][0] for e in env_ids if e in PAPER_SCORES]


def family_means(rows: list[dict], wm: str) -> str:
    """Where the rows hold MuJoCo and AntMaze: the mean Δ of each family beside the paper's over the same datasets
    (a success rate and a return do not average into one figure)."""
    families = {}
    for r in rows:
        if wm in r["diff"]:
            families.setdefault("AntMaze" if r["env_id"].startswith("antmaze") else "MuJoCo", []).append(r)
    if len(families) < 2:
        return ""
    parts = []
    for f, rs in families.items():
        paper = paper_gain([r["env_id"] for r in rs])
        theirs = f" (the paper's {np.mean(paper):+.1f} over the same {len(paper)})" if paper else ""
        parts.append(f"{f} {np.mean([r['diff'][wm][0] for r in rs]):+.1f} over {len(rs)}{theirs}")
    return "; per family: " + ", ".join(parts)


def environment(env_id: str) -> str:
    """hopper-medium-replay -> hopper: the table's groups and the figures' files."""
    return env_id.split("-", 1)[0]


def fmt(ci: tuple[float, float, float] | None, sign: bool = False) -> str:
    if ci is None:
        return "—"
    m, lo, hi = ci
    return f"{m:+.1f} [{lo:+.1f}, {hi:+.1f}]" if sign else f"{m:.1f} [{lo:.1f}, {hi:.1f}]"


def seed_deltas(d: dict) -> str:
    """A `seed_differences` record's Δ per seed, as `+1.5 (s0), -0.6 (s1)`."""
    return ", ".join(f"{v:+.1f} (s{s})" for s, v in d["per_seed"].items())


def header_lines(runs: dict) -> list[str]:
    """The budgets, seeds and ITPO settings the summaries were made with."""
    budgets, settings, seeds = {}, {}, {}
    for env_id, by_seed in sorted(runs.items()):
        seeds[env_id] = sorted(by_seed)
        for seed, by_wm in sorted(by_seed.items()):
            # a run whose world models recorded different budgets (one rerun later) names each world model
            keys = {wm: json.dumps(r.get("budgets"), sort_keys=True) for wm, r in by_wm.items()}
            split = len(set(keys.values())) > 1
            for wm, summary in by_wm.items():
                b = summary.get("budgets")
                if b is not None:
                    name = f"{env_id}:{seed}" + (f" ({wm})" if split else "")
                    budgets.setdefault(keys[wm], (b, {}))[1][name] = None
                st = summary["settings"]
                n = len(summary["itpo"]["normalized_scores"])
                key = (
                    st["horizon"],
                    st["particles"],
                    st["inner_steps"],
                    n,
                    st["eval_seed"],
                    st.get("max_episode_steps"),
                )
                settings.setdefault(key, None)
    lines = budget_lines([b for b, _ in budgets.values()], [list(rows) for _, rows in budgets.values()])
    for h, m, e, n, first, cut in settings:
        lines.append(
            f"ITPO: H={h}, M={m}, E={e}; {n} evaluation episodes per run on env seeds {first}..{first + n - 1}"
            + (f", cut at {cut} steps" if cut else ", full length")
        )
    lines.append("Training seeds: " + "; ".join(f"{e}: {v}" for e, v in seeds.items()))
    lines.append(row_roots(runs))
    return lines


def budget_lines(budgets: list[dict], rows: list[list[str]]) -> list[str]:
    """The budgets the summaries record: one line where all rows share them; else one line of what every set
    shares, then per set the rows that ran at it and what it sets differently (absent: not recorded then)."""
    if not budgets:
        return ["Budgets: not recorded in the summaries."]

    def text(b: dict) -> str:
        return ", ".join(f"{k}={v}" for k, v in b.items())

    if len(budgets) == 1:
        return [
            f"Budgets ({budgets[0].get('preset', '?')}): "
            + text({k: v for k, v in budgets[0].items() if k != "preset"})
        ]
    first = budgets[0]
    common = {k: v for k, v in first.items() if all(k in b and b[k] == v for b in budgets[1:])}
    lines = [f"Budgets every row shares: {text(common)}"]
    for b, names in zip(budgets, rows):
        own = text({k: v for k, v in b.items() if k not in common})
        unrecorded = sorted({k for other in budgets for k in other} - set(b))
        lines.append(
            f"Budgets of {', '.join(names)}: {own or 'the shared ones'}"
            + (f" (not recorded: {', '.join(unrecorded)})" if unrecorded else "")
        )
    return lines


def row_roots(runs: dict) -> str:
    """Which sweep root made each row: the folder its ReBRAC checkpoint lay under (<root>/checkpoints/<env>/...),
    relative to the repository, so that a table merged from several sweeps still says where each row came from."""
    roots: dict[str, dict[str, None]] = {}
    for env_id, by_seed in sorted(runs.items()):
        for seed, by_wm in sorted(by_seed.items()):
            for summary in by_wm.values():
                path = summary.get("models", {}).get("rebrac", {}).get("path")
                root = os.path.relpath(os.path.dirname(os.path.dirname(os.path.dirname(path))), REPO) if path else "?"
                roots.setdefault(root, {})[f"{env_id}:{seed}"] = None
    return "Rows by sweep root (relative to the repository): " + "; ".join(
        f"`{root}`: {', '.join(rows)}" for root, rows in sorted(roots.items())
    )


def write_table(
    path: str,
    root: str,
    rows: list[dict],
    iqm: dict,
    n_runs: int,
    datasets: list[str],
    notes: list[str],
    header: list[str],
    confidence: float,
    curves: list[dict] | None = None,
    alphas: list[str] | None = None,
    plans: list[dict] | None = None,
    rebrac_evals: list[str] | None = None,
) -> None:
    pct = f"{100 * confidence:g} %"
    out = (
        ["# ITPO against ReBRAC", "", f"Read from: `{root}`", ""]
        + [f"- {h}" for h in header]
        + ["", "## Per dataset", ""]
    )
    out += [
        (
            f"Normalised score, mean [{pct} percentile-bootstrap interval over all episodes of all seeds]; "
            f"Δ = ITPO − ReBRAC paired by (seed, episode), with its {pct} bootstrap interval over the pairs. "
            "An α column names the seeds (α (sN)) where their α differ or where that world model ran on only "
            "some of the row's seeds: its score and Δ are then over those seeds."
        ),
        "",
    ]
    out.append(
        "| dataset | ReBRAC | ITPO-DDPM | ITPO-MeanFlow | Δ DDPM | Δ MeanFlow | α DDPM | α MeanFlow "
        "| ms/step DDPM | ms/step MeanFlow | seeds | paper ReBRAC | paper ITPO |"
    )
    out.append("|" + "---|" * 13)
    for i, r in enumerate(rows):  # sorted by name: grouped by environment, each group under its name
        if i == 0 or environment(r["env_id"]) != environment(rows[i - 1]["env_id"]):
            out.append(f"| **{environment(r['env_id'])}** |" + " |" * 12)
        ms = [f"{r['ms'][wm]:.1f}" if wm in r["ms"] else "—" for wm in WORLD_MODELS]
        paper = [f"{v:.1f}" for v in PAPER_SCORES.get(r["env_id"], ())] or ["—", "—"]
        name = r["env_id"] + (f" (β_a {', '.join(map(str, r['actor_bc_coef']))})" if r["actor_bc_coef"] else "")
        out.append(
            f"| {name} | {fmt(r['score'].get('rebrac'))} | {fmt(r['score'].get('ddpm'))} | "
            f"{fmt(r['score'].get('meanflow'))} | {fmt(r['diff'].get('ddpm'), True)} | "
            f"{fmt(r['diff'].get('meanflow'), True)} | {r['alpha'].get('ddpm', '—')} | "
            f"{r['alpha'].get('meanflow', '—')} | {ms[0]} | {ms[1]} | {len(r['seeds'])} | {paper[0]} | {paper[1]} |"
        )
    for wm in WORLD_MODELS:
        per_env, env_ids = {}, [r["env_id"] for r in rows if wm in r["diff"]]
        for r in rows:
            if wm in r["diff"]:
                per_env.setdefault(environment(r["env_id"]), []).append(r["diff"][wm][0])
        gains = [g for by_env in per_env.values() for g in by_env]
        if gains:
            out.append(
                f"\nMean Δ {NAMES[wm]} over these {len(gains)} dataset(s): {np.mean(gains):+.1f} "
                f"(the paper's mean gain: {paper_gains(env_ids)})"
                + (
                    "; per environment: " + ", ".join(f"{e} {np.mean(g):+.1f} ({len(g)})" for e, g in per_env.items())
                    if len(per_env) > 1
                    else ""
                )
                + family_means(rows, wm)
                + "."
            )
    seeded = [r for r in rows if r["seed_diff"]]
    if seeded:
        out += [
            "",
            f"Across training seeds (datasets with several): Δ per seed, and Δ with its {pct} interval from a "
            "two-level bootstrap (the seeds resampled, then each one's episodes) — wider than the table's where the "
            "seeds disagree more than their episodes do; with two or three seeds it is coarse.",
            "",
            "| dataset | world model | Δ per seed | Δ, seeds resampled |",
            "|---|---|---|---|",
        ]
        for r in seeded:
            for wm, d in r["seed_diff"].items():
                out.append(f"| {r['env_id']} | {NAMES[wm]} | {seed_deltas(d)} | {fmt(d['ci'], True)} |")
    out += [
        "",
        "The paper's columns (its Tables 1 and 3: D4RL's datasets, 1M ReBRAC updates, ten seeds) are for "
        "orientation only: these datasets are made locally the D4RL way (`collect_dataset.py`) from weaker "
        "behaviour policies, so the scores do not compare.",
    ]
    if any(r["actor_bc_coef"] for r in rows):
        out += [
            "",
            "(β_a …): ReBRAC's actor BC weight set by the sweep's `--rebrac-actor-bc-coef` for that dataset instead "
            "of `rebrac.py`'s per-dataset table (the paper's, tuned on D4RL's data).",
        ]
    out += ["", "## Aggregate (rliable)", ""]
    if iqm:
        out += [
            (
                f"Interquartile mean over {n_runs} run(s) × {len(datasets)} dataset(s) of the per-run mean score, "
                f"with rliable's {pct} stratified-bootstrap interval."
            ),
            "",
            "| algorithm | IQM | interval |",
            "|---|---|---|",
        ]
        out += [f"| {NAMES[a]} | {m:.1f} | [{lo:.1f}, {hi:.1f}] |" for a, (m, lo, hi) in iqm.items()]
    else:
        out.append("No aggregate.")
    if n_runs == 1 and iqm:
        notes = [
            *notes,
            ("With one run per dataset the stratified bootstrap has nothing to resample: the interval is the point."),
        ]
    if notes:
        out += [""] + [f"Note: {n}" for n in notes]
    if rebrac_evals:
        out += [
            "",
            "## ReBRAC's own evaluation along training",
            "",
            "`rebrac.py`'s evaluation (the same env seeds as the table, acted without the batched parameters: "
            "single episodes can differ from the table's ReBRAC column, `benchmarks/evaluation_noise.py`).",
            "",
            "| dataset | seed | last | best | |",
            "|---|---|---|---|---|",
            *rebrac_evals,
        ]
    if plans:
        out += [
            "",
            "## Planning in action space on the same models",
            "",
            (
                "MPPI (TD-MPC2's planner) and gradient shooting score action sequences with the same imagined "
                "return as ITPO (world model, reward model, terminal value of the frozen actor); ITPO adapts the "
                "actor's parameters instead. Δ vs ReBRAC: planner − ReBRAC; ITPO − planner: ITPO with the same "
                f"world model on the same (seed, episode); paired, with {pct} bootstrap intervals. "
                "Budget 'matched': MPPI's I × N chosen to cost what ITPO costs per env step; 'tdmpc2': TD-MPC2's "
                "own (I 6 × N 512, N_π 24, k 64, τ 0.5). ms per env step: a run's lockstep step (its episodes "
                "planned at once, ended ones too) per episode, a cost that does not move with how long the "
                "episodes last; 'side by side': the planner's lockstep step over ITPO's, timed in one "
                "process before the runs (`plan_eval.py --match-itpo`), the ratio the matched budget equalises "
                "(rows without it: N fixed by the preset)."
            ),
            "",
            "| dataset | planner | world model | budget | score | Δ vs ReBRAC | ITPO − planner "
            "| ms/step planner (× ITPO's) | ms/step ITPO | tuning (score per value → chosen) | seeds |",
            "|" + "---|" * 11,
        ]
        for r in plans:
            itpo_ms = f"{r['itpo_ms']:.1f}" if r["itpo_ms"] is not None else "—"
            ratio = f"{r['ms'] / r['itpo_ms']:.2f}×" if r["itpo_ms"] else ""
            if r["side_by_side"]:
                ratio += ("; " if ratio else "") + "side by side " + ", ".join(f"{x:.2f}×" for x in r["side_by_side"])
            ratio = f" ({ratio})" if ratio else ""
            out.append(
                f"| {r['env_id']} | {r['label']} | {r['wm']} | {r['budget']} | {fmt(r['score'])} | "
                f"{fmt(r['diff'], True)} | {fmt(r['itpo_over'], True)} | {r['ms']:.1f}{ratio} | {itpo_ms} | "
                f"{tuning_text(r['tuned'])} | {len(r['seeds'])} |"
            )
        seeded = [r for r in plans if r["seed_diff"] or r["seed_itpo_over"]]
        if seeded:
            out += [
                "",
                "Across training seeds (rows with several): each seed's paired Δ, and the interval with the seeds "
                "resampled, then each one's episodes (as in the per-dataset table's).",
                "",
                "| dataset | planner | Δ vs ReBRAC per seed | seeds resampled | ITPO − planner per seed "
                "| seeds resampled |",
                "|---|---|---|---|---|---|",
            ]
            for r in seeded:
                cells = []
                for d in (r["seed_diff"], r["seed_itpo_over"]):
                    cells += [seed_deltas(d), fmt(d["ci"], True)] if d else ["—", "—"]
                out.append(f"| {r['env_id']} | {r['label']} | " + " | ".join(cells) + " |")
    if curves:
        out += [
            "",
            "## Budget curves",
            "",
            (
                "ITPO with one stage's snapshot (the others final; α as chosen for the final models), paired "
                f"against ReBRAC on the same episodes; {pct} bootstrap intervals. ReBRAC rows: its snapshot at "
                "that many updates, so the ReBRAC column moves. World-model rows: the final ReBRAC, the world "
                "model's snapshot with its held-out one-step RMSE."
            ),
            "",
            "| dataset | world model | stage varied | step | held-out RMSE | ReBRAC | ITPO | Δ | seeds |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in curves:
            rmse = f"{r['rmse']:.3f}" if r["rmse"] is not None else "—"
            out.append(
                f"| {r['env_id']} | {NAMES[r['wm']]} | {r['vary']} | {r['step']} | {rmse} | {fmt(r['rebrac'])} | "
                f"{fmt(r['itpo'])} | {fmt(r['diff'], True)} | {len(r['seeds'])} |"
            )
    if alphas:
        out += [
            "",
            "## α tuning",
            "",
            "Mean normalised ITPO score on the tuning episodes for each α of the grid; ties keep the smaller α.",
            "",
            "| dataset | seed | world model | score per α | chosen | tuning episodes | cut |",
            "|---|---|---|---|---|---|---|",
            *alphas,
        ]
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def plot_differences(path: str, rows: list[dict], iqm: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = max(12.0, 4.0 + 0.75 * len(rows))  # 15 datasets' labels need room
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(width, 5.0), gridspec_kw={"width_ratios": [2, 1]})
    x = np.arange(len(rows))
    for k, wm in enumerate(WORLD_MODELS):
        pts = [(i, r["diff"][wm]) for i, r in enumerate(rows) if wm in r["diff"]]
        if not pts:
            continue
        xs = np.array([p[0] for p in pts]) + (k - 0.5) * 0.25
        m = np.array([p[1][0] for p in pts])
        err = np.array([[p[1][0] - p[1][1] for p in pts], [p[1][2] - p[1][0] for p in pts]])
        ax1.errorbar(xs, m, yerr=err, fmt="o", capsize=4, color=COLORS[wm], label=NAMES[wm])
    ax1.axhline(0, color="grey", lw=1)
    for i in range(1, len(rows)):  # a line between environments: the rows come grouped
        if environment(rows[i]["env_id"]) != environment(rows[i - 1]["env_id"]):
            ax1.axvline(i - 0.5, color="lightgrey", lw=1)
    ax1.set_xticks(x, [r["env_id"] for r in rows], rotation=35, ha="right")
    ax1.set_ylabel("ITPO − ReBRAC (normalised score)")
    ax1.set_title("Paired difference per dataset (95 % bootstrap interval)")
    if ax1.get_legend_handles_labels()[0]:  # no paired difference (no baseline): no legend to draw
        ax1.legend()
    algos = list(iqm)
    for i, a in enumerate(algos):
        m, lo, hi = iqm[a]
        ax2.errorbar([m], [i], xerr=[[m - lo], [hi - m]], fmt="o", capsize=4, color=COLORS[a])
    ax1.ticklabel_format(axis="y", useOffset=False)
    ax2.ticklabel_format(axis="x", useOffset=False)
    ax2.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=4))  # close IQMs: long labels, few of them
    ax2.set_yticks(range(len(algos)), [NAMES[a] for a in algos])
    ax2.set_xlabel("IQM normalised score")
    ax2.set_title("Aggregate IQM (stratified bootstrap)")
    if not algos:
        ax2.text(0.5, 0.5, "no aggregate", ha="center", transform=ax2.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_budget_curves(path: str, curves: list[dict]) -> None:
    """Per dataset: (left) ReBRAC's score and ITPO's paired Δ against ReBRAC's updates; (right) ITPO's Δ
    against the world model's held-out one-step RMSE. Intervals are the table's bootstrap intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["env_id"] for r in curves}) or ["no budget curves"]
    fig, axes = plt.subplots(len(datasets), 2, figsize=(12, 3.6 * len(datasets)), squeeze=False)
    errbar = lambda ci: [[ci[0] - ci[1]], [ci[2] - ci[0]]]  # noqa: E731
    for row, env_id in zip(axes, datasets):
        left, right = row
        mine = [r for r in curves if r["env_id"] == env_id]
        rebrac_pts = sorted(
            {r["step"]: r["rebrac"] for r in mine if r["vary"] == "rebrac" and r["wm"] == "ddpm"}.items()
        ) or sorted({r["step"]: r["rebrac"] for r in mine if r["vary"] == "rebrac"}.items())
        if rebrac_pts:
            xs, cis = zip(*rebrac_pts)
            left.plot(xs, [c[0] for c in cis], "-", color=COLORS["rebrac"], label="ReBRAC score")
            left.fill_between(xs, [c[1] for c in cis], [c[2] for c in cis], color=COLORS["rebrac"], alpha=0.2)
        for k, wm in enumerate(WORLD_MODELS):
            label = f"Δ {NAMES[wm]} − ReBRAC"
            for r in (r for r in mine if r["wm"] == wm and r["vary"] == "rebrac"):
                x = r["step"] * (1 + 0.04 * (k - 0.5))
                ci = r["diff"]
                left.errorbar([x], [ci[0]], yerr=errbar(ci), fmt="o", capsize=3, color=COLORS[wm], label=label)
                label = None
            pts = sorted((r["rmse"], r["diff"]) for r in mine if r["vary"] != "rebrac" and r["wm"] == wm and r["rmse"])
            for x, ci in pts:
                right.errorbar([x], [ci[0]], yerr=errbar(ci), fmt="o", capsize=3, color=COLORS[wm])
            if pts:
                right.plot([p[0] for p in pts], [p[1][0] for p in pts], "-", color=COLORS[wm], label=NAMES[wm])
        for ax in row:
            ax.axhline(0, color="grey", lw=1)
        left.set(title=f"{env_id}: ReBRAC's budget", xlabel="ReBRAC updates", ylabel="normalised score / Δ")
        right.set(title=f"{env_id}: world model's accuracy", xlabel="held-out one-step RMSE", ylabel="Δ ITPO − ReBRAC")
        steps = sorted({r["step"] for r in mine if r["vary"] == "rebrac"})
        for ax in row:
            if ax.get_legend_handles_labels()[0]:  # points to draw on a log axis
                ax.set_xscale("log")
                ax.legend(fontsize=7)
                # ticks at 1, 2, 5 × 10^k, written plainly; no labels on the minor ticks (they crowd)
                ax.xaxis.set_major_locator(  # ReBRAC's axis: a tick at each curve point (25k has none of 1-2-5)
                    matplotlib.ticker.FixedLocator(steps)
                    if ax is left
                    else matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0))
                )
                ax.xaxis.set_major_formatter(
                    matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1000:g}k" if x >= 1000 else f"{x:g}")
                )
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            else:
                ax.text(0.5, 0.5, "no points", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_histories(root: str, include: list[str] = ()) -> dict[str, dict[tuple[str, int], list[dict]]]:
    """{stage: {(env_id, seed): history}} from the --include folders' histories/*.json, then from the
    checkpoints under <root>/checkpoints/ (which win, unless still short of their own budget: a stage the
    sweep is training does not replace the finished history of the run the table holds)."""
    import torch

    out: dict = {}
    for path in json_files(list(include), "histories"):
        with open(path) as f:
            record = json.load(f)
        out.setdefault(record["stage"], {})[(record["env_id"], int(record["seed"]))] = record["history"]
    for path in sorted(glob.glob(os.path.join(root, "checkpoints", "*", "*_seed*.pt"))):
        match = re.fullmatch(r"(rebrac|dynamics|reward|meanflow)_seed(-?\d+)\.pt", os.path.basename(path))
        if match is None:
            continue
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - a half-written or foreign file: no curve, not no report
            print(f"[report] cannot read {path} ({type(err).__name__}); no curve for it")
            continue
        run, stage = (os.path.basename(os.path.dirname(path)), int(match.group(2))), match.group(1)
        budget = ckpt.get("args", {}).get("total_updates" if stage == "rebrac" else "total_steps")
        if run in out.get(stage, {}) and budget is not None and ckpt.get("step", budget) < budget:
            print(f"[report] {path} is at step {ckpt['step']} of {budget}: the included history stands")
            continue
        out.setdefault(stage, {})[run] = ckpt.get("history", [])
    return out


def rebrac_evaluation_rows(histories: dict, runs: dict) -> list[str]:
    """Per (dataset, seed) of the table: ReBRAC's own evaluation at its last update and at its best, and
    whether it fell from that best (by more than 10 points) as training went on: Markdown rows."""
    out = []
    for (env_id, seed), history in sorted(histories.get("rebrac", {}).items()):
        scored = [h for h in history if h.get("score") is not None and math.isfinite(h["score"])]
        if env_id not in runs or seed not in runs[env_id] or not scored:
            continue
        last, best = scored[-1], max(scored, key=lambda h: h["score"])
        fell = last["score"] < best["score"] - 10
        out.append(
            f"| {env_id} | {seed} | {last['score']:.1f} at {last['step']} | {best['score']:.1f} at {best['step']} | "
            f"{'falls with training' if fell else ''} |"
        )
    return out


def plot_training_curves(path: str, histories: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted({run for h in histories.values() for run in h})
    colors = {run: plt.cm.tab10(i % 10) for i, run in enumerate(runs)}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax in axes:  # steps as 5k, 10k, ... (full numbers overlap), few ticks; below 1000 as they are
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=5, integer=True))
        ax.xaxis.set_major_formatter(
            matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1000:g}k" if abs(x) >= 1000 else f"{x:g}")
        )
    panels = [
        (axes[0], [("rebrac", "score", "-")], "ReBRAC evaluation", "updates", "normalised score"),
        (
            axes[1],
            [("dynamics", "one_step_rmse", "-"), ("meanflow", "one_step_rmse", "--")],
            "World models (— DDPM, - - MeanFlow)",
            "steps",
            "held-out one-step RMSE",
        ),
        (axes[2], [("reward", "reward_rmse", "-")], "Reward model", "steps", "held-out reward RMSE"),
    ]
    for ax, lines, title, xlabel, ylabel in panels:
        drawn = False
        for stage, metric, style in lines:
            for run, history in sorted(histories.get(stage, {}).items()):
                pts = [(h["step"], h[metric]) for h in history if metric in h]
                if pts:
                    xs, ys = zip(*pts)
                    ax.plot(
                        xs,
                        ys,
                        style,
                        marker="o",
                        ms=3,
                        color=colors[run],
                        label=f"{run[0]} s{run[1]}"
                        if style == "-" or run not in histories.get("dynamics", {})
                        else None,
                    )
                    drawn = True
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        if "RMSE" in ylabel and drawn:
            ax.set_yscale("log")
        if not drawn:
            ax.text(0.5, 0.5, "no history", ha="center", transform=ax.transAxes)
    # one legend for the three panels (a colour is a run in all of them), beside them: it covers no curve
    legend = {label: handle for ax in axes for handle, label in zip(*ax.get_legend_handles_labels())}
    fig.tight_layout()
    if legend:
        fig.legend(legend.values(), legend.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main(args: Args) -> dict:
    """Write the report; returns {"rows", "iqm", "n_runs", "datasets", "notes", "out"}.

    Everything is written into a temporary folder inside --out first and moved over the old files
    (os.replace) only once all of it is complete: a failed report leaves --out as it was."""
    runs = load_summaries(args.root, args.include)
    if not runs:
        sys.exit(
            f"error: no summaries in {os.path.join(args.root, 'summaries')}/*.json: --root must be a sweep "
            f"folder (benchmarks/sweep.py writes one); nothing written to {args.out}"
        )
    rows = dataset_rows(runs, args.reps, args.confidence, args.seed)
    matrices, datasets, notes = aggregate_matrices(runs)
    curves = load_curves(args.root, runs, args.include)
    histories = load_histories(args.root, args.include)
    points = curve_rows(curves, args.reps, args.confidence, args.seed)
    planners = load_planners(args.root, args.include)
    plans = planner_rows(planners, runs, args.reps, args.confidence, args.seed)
    iqm = iqm_table(matrices, args.reps, args.confidence, args.seed) if matrices else {}
    n_runs = next(iter(matrices.values())).shape[0] if matrices else 0
    os.makedirs(args.out, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".report-", dir=args.out)  # same file system: os.replace is atomic
    try:
        write_table(
            os.path.join(staging, "table.md"),
            # relative to the repository (the table names no machine's paths), each folder once
            "` + `".join(dict.fromkeys(os.path.relpath(os.path.abspath(f), REPO) for f in [args.root, *args.include])),
            rows,
            iqm,
            n_runs,
            datasets,
            notes,
            header_lines(runs),
            args.confidence,
            points,
            alpha_rows(runs),
            plans,
            rebrac_evaluation_rows(histories, runs),
        )
        plot_differences(os.path.join(staging, "differences.png"), rows, iqm)
        figures = ["differences.png"]
        for env in sorted({environment(e) for e in runs}):  # one figure of each kind per environment
            figures += [f"budget_curves_{env}.png", f"training_curves_{env}.png"]
            plot_budget_curves(
                os.path.join(staging, figures[-2]), [p for p in points if environment(p["env_id"]) == env]
            )
            plot_training_curves(
                os.path.join(staging, figures[-1]),
                {
                    stage: {r: h for r, h in by_run.items() if environment(r[0]) == env}
                    for stage, by_run in histories.items()
                },
            )
        os.makedirs(os.path.join(staging, "histories"))
        for stage, by_run in histories.items():
            for (env_id, seed), history in by_run.items():
                record = {"env_id": env_id, "seed": seed, "stage": stage, "history": history}
                with open(os.path.join(staging, "histories", f"{env_id}_seed{seed}_{stage}.json"), "w") as f:
                    json.dump(record, f, indent=1, default=float)
        copies = {
            "summaries": [
                s["_path"] for by_seed in runs.values() for by_wm in by_seed.values() for s in by_wm.values()
            ],
            "histories": [],  # written into the staging folder above
            "planners": [s["_path"] for by_seed in planners.values() for by in by_seed.values() for s in by.values()],
        }
        copies["curves"] = [
            p["_path"]
            for by_step in curves.values()
            for by_seed in by_step.values()
            for p in by_seed.values()
            if "curve" in p
        ]
        for folder, paths in copies.items():
            os.makedirs(os.path.join(staging, folder), exist_ok=True)
            for path in paths:
                shutil.copy2(path, os.path.join(staging, folder))
            if os.listdir(os.path.join(staging, folder)):
                os.makedirs(os.path.join(args.out, folder), exist_ok=True)
            for name in sorted(os.listdir(os.path.join(staging, folder))):
                os.replace(os.path.join(staging, folder, name), os.path.join(args.out, folder, name))
        for name in ["table.md", *figures]:
            os.replace(os.path.join(staging, name), os.path.join(args.out, name))
        for kind in ("budget_curves", "training_curves"):  # this script's figures of an environment it no
            for path in glob.glob(os.path.join(args.out, f"{kind}*.png")):  # longer draws (or of its one-figure
                if os.path.basename(path) not in figures:  # layout) are stale
                    os.remove(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"[report] {len(rows)} dataset(s) -> {os.path.join(args.out, 'table.md')}, " + ", ".join(figures))
    return {
        "rows": rows,
        "iqm": iqm,
        "n_runs": n_runs,
        "datasets": datasets,
        "notes": notes,
        "curves": points,
        "planners": plans,
        "out": args.out,
    }


if __name__ == "__main__":
    main(tyro.cli(Args))
