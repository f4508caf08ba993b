"""What each millisecond buys: ITPO's and the planners' paired Δ over ReBRAC against their cost per env step,
on one (dataset, seed)'s final checkpoints, one budget axis at a time around the preset's point.

    python benchmarks/frontier.py --env-id hopper-medium-replay --checkpoints sweeps/cpu/checkpoints \
        --step-size 5e-5 --ddpm-variants dynamics_k2_seed0.pt dynamics_k5_seed0.pt \
        --untilted-meanflow meanflow_untilted_seed0.pt

The points: ITPO-DDPM along M, E and H (and the joint points of `--joint`), at each further DDPM of
`--ddpm-variants` (another number of reverse steps K: `train_dynamics.py --diffusion-steps 2`), ITPO with
the tilted MeanFlow along M and, given `--untilted-meanflow` (`meanflow_onestep.py --tilt-temperature inf`),
with the untilted one along M; MPPI along I × N and gradient shooting along E (plan_eval.py). Each point is
one run of `itpo_eval.py` or `plan_eval.py` on the same evaluation episodes; ReBRAC is evaluated once, with
the first point, and every point is paired against it. α (and the planners' τ and step size) stay as given:
the values tuned at the preset's point (the sweep's summaries record them).

Resumable: one JSON per point under `<out>/<env-id>_seed<S>/` (a point whose settings and checkpoints are on
record is not run again; one on record with others stops the tool: a grid is of one set of models). Each run
of the tool then draws every seed found under `<out>` for its dataset (a point that ran on only some of them is
drawn hollow, marked `(sN)` and left out of the Pareto front and the 90 % line: its Δ is over other episodes):

    <out>/frontier_<env-id>.png   x: ms per env step (log), y: paired Δ with its 95 % interval, one colour per
                                  method, the Pareto front over all points dashed
    <out>/frontier_<env-id>.md    the same as a table, with GFLOP per env step (torch's FLOP counter, one
                                  step of one episode: scale by the episodes a batch holds) and the
                                  cheapest point within 90 % of the best Δ
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import re
import shutil
import sys
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import tyro

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path[:0] = [p for p in (REPO, BENCH) if p not in sys.path]
from report import bootstrap_ci, ms_per_env_step, paired_difference  # noqa: E402

METHODS = {  # method -> (label in the figure, colour)
    "itpo-ddpm": ("ITPO-DDPM", "tab:blue"),
    "itpo-meanflow": ("ITPO-MeanFlow (tilted)", "tab:orange"),
    "itpo-meanflow-untilted": ("ITPO-MeanFlow (untilted)", "tab:brown"),
    "mppi": ("MPPI (DDPM)", "tab:green"),
    "shooting": ("gradient shooting (DDPM)", "tab:purple"),
}


@dataclass
class Args:
    env_id: str = "hopper-medium-replay"
    """D4RL short name"""
    seed: int = 0
    """seed of the checkpoints"""
    checkpoints: str = "checkpoints"
    """folder holding <env-id>/{rebrac,dynamics,reward,meanflow}_seed<S>.pt (a sweep's <root>/checkpoints)"""
    ddpm_variants: list[str] = field(default_factory=list)
    """further DDPM checkpoints (e.g. trained with another --diffusion-steps), each run at the base point"""
    untilted_meanflow: str | None = None
    """a MeanFlow trained with --tilt-temperature inf: ITPO with it along M, beside the tilted one"""
    step_size: float = 5e-5
    """ITPO's α with the DDPM, as tuned at the base point (kept for every point)"""
    meanflow_step_size: float | None = None
    """ITPO's α with MeanFlow (default: --step-size)"""
    horizon: int = 5
    """the base point's H"""
    particles: int = 32
    """the base point's M"""
    inner_steps: int = 1
    """the base point's E"""
    particles_axis: list[int] = field(default_factory=lambda: [4, 8, 16, 32, 64, 128])
    """M of ITPO's points (and of MeanFlow's)"""
    inner_steps_axis: list[int] = field(default_factory=lambda: [1, 2, 4])
    """E of ITPO-DDPM's points (and the shooting's ascent steps)"""
    horizon_axis: list[int] = field(default_factory=lambda: [1, 3, 5, 10])
    """H of ITPO-DDPM's points"""
    joint: list[str] = field(default_factory=lambda: ["H3,M16,E1", "H5,M64,E2"])
    """ITPO-DDPM points off the axes, as H<h>,M<m>,E<e>"""
    mppi_budgets: list[str] = field(default_factory=lambda: ["1x24", "2x48", "4x96"])
    """MPPI's points as I x N (N_π = N/6 and k = N/3, the cpu preset's proportions); empty: no MPPI"""
    temperature: float = 0.5
    """MPPI's τ"""
    shooting_step_size: float = 0.1
    """gradient shooting's step size; its points run along --inner-steps-axis at the base M"""
    shooting: bool = True
    """include gradient shooting"""
    episodes: int = 10
    """evaluation episodes per point"""
    eval_seed: int = 1000
    """episode i uses env seed eval_seed + i"""
    max_episode_steps: int | None = None
    """cut episodes at this many steps (default: the env's limit)"""
    out: str = "results/frontier"
    """points, figure and table go here"""
    device: str = "cpu"
    """torch device"""

    def __post_init__(self):
        for name in ("particles_axis", "inner_steps_axis", "horizon_axis"):
            values = getattr(self, name)
            if not values or any(v < 1 for v in values):
                sys.exit(f"error: --{name.replace('_', '-')} needs positive integers, not {values}")
        for name in ("horizon", "particles", "inner_steps", "episodes"):
            if getattr(self, name) < 1:
                sys.exit(f"error: --{name.replace('_', '-')} must be ≥ 1, not {getattr(self, name)}")
        for text in self.joint:
            parse_joint(text)
        for text in self.mppi_budgets:
            parse_mppi(text)


def parse_joint(text: str) -> tuple[int, int, int]:
    match = re.fullmatch(r"H(\d+),M(\d+),E(\d+)", text.replace(" ", ""))
    if match is None or min(int(v) for v in match.groups()) < 1:
        sys.exit(f"error: --joint takes points such as H3,M16,E1 (positive integers), not {text!r}")
    return tuple(int(v) for v in match.groups())


def parse_mppi(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.lower().split("x"))
        assert i >= 1 and n >= 6
    except (ValueError, AssertionError):
        sys.exit(f"error: --mppi-budgets takes I x N such as 2x48 (I ≥ 1, N ≥ 6), not {text!r}")
    return i, n


# ---------------------------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------------------------
def require_checkpoint(path: str) -> None:
    if not os.path.exists(path):
        sys.exit(f"error: no checkpoint {path}: train it (README: Pipeline) or point --checkpoints at a sweep's")


def ddpm_steps(path: str) -> int:
    import torch

    require_checkpoint(path)
    return int(torch.load(path, map_location="cpu", weights_only=True)["config"]["diffusion_steps"])


def grid(args: Args) -> list[dict]:
    """The points, each {name, method, H, ... , world-model checkpoint}, in the order they run (the base first)."""
    ckpt = lambda stage: os.path.join(args.checkpoints, args.env_id, f"{stage}_seed{args.seed}.pt")  # noqa: E731
    H, M, E = args.horizon, args.particles, args.inner_steps
    points = []

    def itpo(method, world, h, m, e):
        k = f"K{ddpm_steps(world)}_" if method == "itpo-ddpm" else ""
        points.append({"name": f"{method}_{k}H{h}_M{m}_E{e}", "method": method, "H": h, "M": m, "E": e, "world": world})

    ddpm = ckpt("dynamics")
    itpo("itpo-ddpm", ddpm, H, M, E)
    for m in args.particles_axis:
        itpo("itpo-ddpm", ddpm, H, m, E)
    for e in args.inner_steps_axis:
        itpo("itpo-ddpm", ddpm, H, M, e)
    for h in args.horizon_axis:
        itpo("itpo-ddpm", ddpm, h, M, E)
    for text in args.joint:
        itpo("itpo-ddpm", ddpm, *parse_joint(text))
    for path in args.ddpm_variants:
        itpo("itpo-ddpm", path, H, M, E)
    for m in args.particles_axis:
        itpo("itpo-meanflow", ckpt("meanflow"), H, m, E)
        if args.untilted_meanflow:
            itpo("itpo-meanflow-untilted", args.untilted_meanflow, H, m, E)
    for text in args.mppi_budgets:
        i, n = parse_mppi(text)
        point = {"method": "mppi", "H": H, "I": i, "N": n, "N_pi": n // 6, "k": n // 3, "world": ddpm}
        points.append({"name": f"mppi_H{H}_I{i}_N{n}", **point})
    for e in args.inner_steps_axis if args.shooting else []:
        points.append({"name": f"shooting_H{H}_M{M}_E{e}", "method": "shooting", "H": H, "M": M, "E": e, "world": ddpm})
    unique = {}
    for p in points:  # the axes cross at the base point: once each
        if unique.setdefault(p["name"], p)["world"] != p["world"]:
            sys.exit(
                f"error: {unique[p['name']]['world']} and {p['world']} would both be point {p['name']}: give "
                "--ddpm-variants only DDPMs with another number of reverse steps than the base and each other"
            )
    return list(unique.values())


def run_args(args: Args, point: dict, baseline: bool):
    """The itpo_eval.Args or plan_eval.Args of a point."""
    import itpo_eval
    import plan_eval

    method, c = point["method"], os.path.join(args.checkpoints, args.env_id)
    common = dict(
        env_id=args.env_id,
        seed=args.seed,
        horizon=point["H"],
        world_model="meanflow" if method.startswith("itpo-meanflow") else "ddpm",
        episodes=args.episodes,
        eval_seed=args.eval_seed,
        max_episode_steps=args.max_episode_steps,
        baseline=baseline,
        rebrac_checkpoint=os.path.join(c, f"rebrac_seed{args.seed}.pt"),
        dynamics_checkpoint=point["world"],
        reward_checkpoint=os.path.join(c, f"reward_seed{args.seed}.pt"),
        device=args.device,
        run_name=f"frontier_{args.env_id}_seed{args.seed}_{point['name']}",
    )
    if method.startswith("itpo"):
        alpha = args.step_size if method == "itpo-ddpm" or args.meanflow_step_size is None else args.meanflow_step_size
        return itpo_eval, itpo_eval.Args(**common, particles=point["M"], inner_steps=point["E"], step_size=alpha)
    if method == "mppi":
        budget = dict(iterations=point["I"], samples=point["N"], policy_samples=point["N_pi"], elites=point["k"])
        return plan_eval, plan_eval.Args(**common, planner="mppi", temperature=args.temperature, **budget)
    budget = dict(particles=point["M"], shooting_steps=point["E"], step_size=args.shooting_step_size)
    return plan_eval, plan_eval.Args(**common, planner="shooting", **budget)


def digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def flops_per_env_step(module, run) -> float:
    """FLOPs of one real step of one episode (torch's FLOP counter over the whole decision); the counting run's
    folder under runs/ is removed after, so that runs/ holds the points' own runs only."""
    from torch.utils.flop_counter import FlopCounterMode

    one = replace(run, episodes=1, max_episode_steps=1, baseline=False, run_name=f"{run.run_name}_flops")
    counter = FlopCounterMode(display=False)
    with counter, open(os.devnull, "w") as quiet:
        stdout, sys.stdout = sys.stdout, quiet
        try:
            module.main(one)
        finally:
            sys.stdout = stdout
            shutil.rmtree(os.path.join("runs", one.run_name), ignore_errors=True)
    return float(counter.get_total_flops())


def evaluate_point(args: Args, point: dict, baseline: bool) -> dict:
    """Run one point (skipped where its JSON holds the same settings and checkpoints); returns the record."""
    from common import device_name

    module, run = run_args(args, point, baseline)
    settings = {k: v for k, v in asdict(run).items() if k not in ("run_name", "device")}
    paths = [run.rebrac_checkpoint, run.dynamics_checkpoint, run.reward_checkpoint]
    key = {"settings": settings, "checkpoints": [digest(p) for p in paths]}
    path = os.path.join(args.out, f"{args.env_id}_seed{args.seed}", f"{point['name']}.json")
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        if old.get("key") == key:
            return old
        # whether the point was run with ReBRAC beside it may differ (another base point); anything else would
        # silently replace a result of other models or settings, and mix them into one frontier
        loose = lambda k: {**k, "settings": {**k["settings"], "baseline": None}}  # noqa: E731
        if "key" not in old or loose(old["key"]) != loose(key):
            sys.exit(
                f"error: {path} holds this point run with other settings or checkpoints: give another --out, "
                "or move that folder away to rerun the grid on these"
            )
    summary = module.main(run)
    which = "itpo" if point["method"].startswith("itpo") else point["method"]
    record = {
        "point": point,
        "key": key,
        "scores": summary[which]["normalized_scores"],
        "rebrac": summary["rebrac"]["normalized_scores"] if baseline else None,
        # the cost: a lockstep step plans all N episodes, ended ones too; per episode it does not move with scores
        # (records written before it was kept hold ms_per_env_step instead, per transition of the episodes run)
        "ms_per_episode_step": ms_per_env_step(summary[which]),
        "lengths": summary[which]["lengths"],
        "flops_per_env_step": flops_per_env_step(module, run),
        "device": device_name(args.device),
        "seconds": summary[which]["wall_seconds"],
    }
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(f"{path}.tmp", "w") as f:  # then renamed: never half a point
        json.dump(record, f, indent=1)
    os.replace(f"{path}.tmp", path)
    return record


# ---------------------------------------------------------------------------------------------
# The frontier of a dataset, over every seed on record
# ---------------------------------------------------------------------------------------------
def load_points(out: str, env_id: str) -> dict[str, dict]:
    """{point name: {point, ms, per_transition, gflop, scores {(seed, episode): v}, rebrac {(seed, episode): v},
    seeds, devices {seed: CPU or GPU}}}. ms: a lockstep step's wall time per episode; records written before
    the tool kept it hold only the wall time per transition of the episodes run (per_transition: true), which
    is the same where no episode ended early and dearer where some did."""
    by_name, rebrac, devices = {}, {}, {}
    for folder in sorted(glob.glob(os.path.join(out, f"{env_id}_seed*"))):
        seed = int(folder.rsplit("_seed", 1)[1])
        for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
            with open(path) as f:
                rec = json.load(f)
            first = rec["key"]["settings"]["eval_seed"]
            scores = {(seed, first + i): v for i, v in enumerate(rec["scores"])}
            if rec["rebrac"] is not None:
                rebrac.update({(seed, first + i): v for i, v in enumerate(rec["rebrac"])})
            entry = by_name.setdefault(
                rec["point"]["name"],
                {"point": rec["point"], "ms": [], "per_transition": False, "gflop": [], "scores": {}},
            )
            entry["base"] = entry.get("base", False) or rec["rebrac"] is not None  # the grid's first point
            old = "ms_per_episode_step" not in rec
            entry["ms"].append(rec["ms_per_env_step"] if old else rec["ms_per_episode_step"])
            entry["per_transition"] |= old
            devices.setdefault(seed, set()).add(rec["device"])
            entry["gflop"].append(rec["flops_per_env_step"] / 1e9)
            entry["scores"].update(scores)
    for entry in by_name.values():
        entry["rebrac"] = {k: rebrac[k] for k in entry["scores"] if k in rebrac}
        entry["seeds"] = sorted({s for s, _ in entry["scores"]})
        entry["devices"] = {s: ", ".join(sorted(devices[s])) for s in entry["seeds"]}
    return by_name


def frontier_rows(points: dict[str, dict]) -> list[dict]:
    rows = []
    for name, e in points.items():
        # Δ only where every episode of the point has its ReBRAC pair: never over a silent subset
        diff = (
            paired_difference(e["scores"], e["rebrac"])
            if e["rebrac"] and len(e["rebrac"]) == len(e["scores"])
            else None
        )
        rows.append(
            {
                "name": name,
                "point": e["point"],
                "base": e["base"],
                "ms": float(np.mean(e["ms"])),
                "per_transition": e["per_transition"],
                "devices": e["devices"],
                "gflop": float(np.mean(e["gflop"])),
                "score": bootstrap_ci(list(e["scores"].values())),
                "rebrac": bootstrap_ci(list(e["rebrac"].values())) if e["rebrac"] else None,
                "diff": diff,
                "seeds": e["seeds"],
            }
        )
    return sorted(rows, key=lambda r: (r["ms"], -(r["diff"] or [0])[0]))  # at equal cost the higher Δ first


def pareto(rows: list[dict]) -> list[dict]:
    """The points no other point beats on both cost and Δ (cheapest first)."""
    front, best = [], -math.inf
    for r in rows:  # sorted by ms
        if r["diff"] is not None and r["diff"][0] > best:
            front.append(r)
            best = r["diff"][0]
    return front


def config(point: dict) -> str:
    if point["method"] == "mppi":
        return f"H{point['H']} I{point['I']}×N{point['N']}"
    k = point["name"].split("_")[1] + " " if point["method"] == "itpo-ddpm" else ""
    return f"{k}H{point['H']} M{point['M']} E{point['E']}"


def short_label(point: dict, base: dict | None) -> str:
    """What an ITPO-DDPM point changes from the base point's configuration; the others' own budget."""
    if point["method"] == "mppi":
        return f"I{point['I']}×N{point['N']}"
    if point["method"] == "shooting":
        return f"E{point['E']}"
    if point["method"] != "itpo-ddpm":
        return f"M{point['M']}"
    if base is None:
        return config(point)
    parts, ref = config(point).split(), config(base).split()
    return " ".join(p for p, b in zip(parts, ref) if p != b) or "base"


def place_labels(fig, labels: list[tuple]) -> None:
    """Annotate each point beside it, raising a label by a line while its drawn box would cover one already placed
    on its axes (points of a grid crowd where costs are close: M 128, E 4 and M 64 E 2 all near 100 ms)."""
    size, line = 8, 10  # font size and line height in points
    renderer = fig.canvas.get_renderer()
    placed = []  # (axes, the label's box in pixels)
    for ax, text, x, y, colour in sorted(labels, key=lambda lab: (lab[2], lab[3])):
        rise = 2
        note = ax.annotate(text, (x, y), fontsize=size, xytext=(4, rise), textcoords="offset points", color=colour)
        while any(a is ax and note.get_window_extent(renderer).overlaps(box) for a, box in placed):
            rise += line
            note.set_position((4, rise))
        placed.append((ax, note.get_window_extent(renderer)))


def write_frontier(out: str, env_id: str, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Points are compared over the same episodes only: one that ran on some of the dataset's seeds (a grid's
    # axis extended on a later seed) is drawn hollow and marked in the table, but is left out of the Pareto
    # front and of the 90 % line, whose Δ are means over every seed.
    seeds = sorted({s for r in rows for s in r["seeds"]})
    complete = [r for r in rows if r["seeds"] == seeds]
    front = pareto(complete)
    # Two panels on shared axes, so that the labels stay apart: ITPO-DDPM along its axes (left), and MeanFlow
    # and the planners beside ITPO-DDPM's base point (right). Each label names what differs from the base.
    base = next((r for r in rows if r["base"]), None)
    some_per_transition = any(r["per_transition"] for r in rows)
    fig, axes = plt.subplots(1, 2, figsize=(13, 7), sharex=True, sharey=True)
    labels = []  # (axes, text, ms, Δ, colour), placed once the axes are laid out
    dagger = lambda r: "†" if r["per_transition"] else ""  # noqa: E731  (figure labels and table alike)
    panels = (["itpo-ddpm"], ["itpo-meanflow", "itpo-meanflow-untilted", "mppi", "shooting"])
    for ax, methods in zip(axes, panels):
        for method in methods:
            label, colour = METHODS[method]
            mine = [r for r in rows if r["point"]["method"] == method and r["diff"] is not None]
            if not mine:
                continue
            for some, face in ((False, colour), (True, "white")):
                drawn = [r for r in mine if (r["seeds"] != seeds) == some]
                if drawn:
                    d = np.array([r["diff"] for r in drawn])
                    ax.errorbar(
                        [r["ms"] for r in drawn],
                        d[:, 0],
                        yerr=[d[:, 0] - d[:, 1], d[:, 2] - d[:, 0]],
                        fmt="o",
                        color=colour,
                        mfc=face,
                        label=label + (" (some seeds)" if some else ""),
                    )
            if method.startswith("itpo-meanflow"):  # the M axis as a line: tilted against untilted at equal M
                along = sorted(mine, key=lambda r: r["point"]["M"])
                ax.plot([r["ms"] for r in along], [r["diff"][0] for r in along], color=colour, lw=0.8)
            for r in mine:
                text = short_label(r["point"], base and base["point"]) + dagger(r)
                labels.append((ax, text, r["ms"], r["diff"][0], colour))
        if ax is axes[1] and base is not None and base["diff"] is not None:
            label = f"{METHODS[base['point']['method']][0]} {config(base['point'])} (base)"
            ax.plot(base["ms"], base["diff"][0], "*", ms=12, color=METHODS[base["point"]["method"]][1], label=label)
        if front:
            ax.plot(
                [r["ms"] for r in front],
                [r["diff"][0] for r in front],
                "k--",
                lw=1,
                label=f"Pareto front ({'all points' if len(complete) == len(rows) else 'points on every seed'})",
            )
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel(
            "ms per env step (log scale)" + (" († per transition of the episodes run)" if some_per_transition else "")
        )
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)  # below: off the points
    axes[0].set_ylabel("paired Δ over ReBRAC (normalised score)")
    where = f" from {config(base['point'])}" if base else ""
    axes[0].set_title(f"ITPO-DDPM: each label names what differs{where}", fontsize=10)
    axes[1].set_title("MeanFlow along M (tilted, untilted) and the planners", fontsize=10)
    fig.suptitle(f"{env_id}: what each millisecond buys (seeds {seeds}, 95 % intervals)")
    lo, hi = axes[0].get_xlim()
    axes[0].set_xlim(lo, hi * 1.3)  # room for the labels of the dearest points (shared by both panels)
    fig.tight_layout()
    place_labels(fig, labels)
    fig.savefig(os.path.join(out, f"frontier_{env_id}.png"), dpi=120)
    plt.close(fig)

    only = lambda r: "" if r["seeds"] == seeds else " (" + ", ".join(f"s{s}" for s in r["seeds"]) + ")"  # noqa: E731
    fmt = lambda ci, sign="": "—" if ci is None else f"{ci[0]:{sign}.1f} [{ci[1]:{sign}.1f}, {ci[2]:{sign}.1f}]"  # noqa: E731
    machines = {s: d for r in rows for s, d in r["devices"].items()}
    lines = [
        f"# What each millisecond buys: {env_id}",
        "",
        f"Seeds {seeds}; every point paired against ReBRAC on the same (seed, episode); 95 % bootstrap intervals; "
        "ms per env step as measured in each point's run: the wall time of a lockstep step (all episodes planned "
        "at once, ended ones too) per episode, the mean over seeds; GFLOP per env step of one episode (torch's "
        "counter). A configuration marked (sN) ran on those seeds only: its Δ is over their episodes, so it stays "
        "out of the Pareto front and the 90 % line.",
        "",
        "ms measured on: " + "; ".join(f"seed {s}: {machines[s]}" for s in sorted(machines)) + ".",
        "",
        "| method | configuration | ms/step | GFLOP/step | score | Δ over ReBRAC | on the Pareto front |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {METHODS[r['point']['method']][0]} | {config(r['point']) + only(r)} | {r['ms']:.1f}{dagger(r)} | "
            f"{r['gflop']:.3g} | {fmt(r['score'])} | {fmt(r['diff'], '+')} | {'yes' if r in front else ''} |"
        )
    if some_per_transition:
        lines += [
            "",
            "†: on some seed recorded before the tool kept a lockstep step's time: the wall time per transition of "
            "the episodes run, the same where every episode ran to the end, dearer by up to the share of "
            "episode-steps after a fall.",
        ]
    ranked = [r for r in complete if r["diff"] is not None]
    if ranked:
        best = max(r["diff"][0] for r in ranked)
        cheap = next(r for r in ranked if r["diff"][0] >= 0.9 * best) if best > 0 else None
        lines += ["", f"Best Δ {best:+.1f}."]
        if cheap is not None:
            lines.append(
                f"Cheapest within 90 % of it: {METHODS[cheap['point']['method']][0]} {config(cheap['point'])}, "
                f"{cheap['ms']:.1f} ms per env step, Δ {cheap['diff'][0]:+.1f}."
            )
    with open(os.path.join(out, f"frontier_{env_id}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main(args: Args) -> list[dict]:
    from tqdm import tqdm

    points = grid(args)
    for path in [p["world"] for p in points]:
        require_checkpoint(path)
    print(f"[frontier] {args.env_id} seed {args.seed}: {len(points)} points, α {args.step_size!r} kept throughout")
    for i, point in enumerate(tqdm(points, desc="points")):
        evaluate_point(args, point, baseline=i == 0)
    rows = frontier_rows(load_points(args.out, args.env_id))
    write_frontier(args.out, args.env_id, rows)
    print(f"[frontier] {os.path.join(args.out, f'frontier_{args.env_id}.png')} and .md")
    return rows


if __name__ == "__main__":
    main(tyro.cli(Args))
