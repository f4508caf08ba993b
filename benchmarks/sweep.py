"""The whole pipeline on a grid of datasets × seeds, each stage a Ray task, then the report.

    python benchmarks/sweep.py --preset cpu --env-ids hopper-medium-replay hopper-medium --seeds 0 1 2
    python benchmarks/sweep.py --preset cpu --runs hopper-medium-replay:3 walker2d-medium:0   # extra pairs
    python benchmarks/sweep.py --preset paper --address auto --env-ids ...   # on a running Ray cluster

Per (dataset, seed) the stages form a graph:

    rebrac ───────┬──► meanflow (its policy tilt reads the ReBRAC actor)
    dynamics ─────┤
    reward ───────┴──► α tuning and itpo_eval, per world model
                       (ddpm: rebrac + dynamics + reward; meanflow: rebrac + meanflow + reward)
                  └──► τ / step-size tuning and plan_eval, per planner (MPPI, gradient shooting: the
                       action-space planners on ITPO-DDPM's models at its compute; `--tdmpc2-runs`: MPPI
                       also at TD-MPC2's own budget on MeanFlow)

Every stage runs in a Ray worker through the stage script's own entry point and Args (one CPU each,
and `--gpu-fraction` of a GPU where torch sees one), at most as many at once as Ray has CPUs, taken in the
graph's order: the training stages of every (dataset, seed), then their α tuning and final rows, then the
planners' TD-MPC2-budget runs and the budget curves. The sweep resumes: a checkpoint whose step has
reached the requested budget is skipped, a partial one is continued (`resume=True`), an α-tuning
run or an evaluation whose JSON exists with the same settings and the same checkpoints (by content
hash) is skipped. One failed stage is reported (traceback in `<root>/failures/`) and only the
stages downstream of it are not run.

Layout under `--root` (default `sweeps/<preset>`; all paths absolute, so the workers' cwd does not
matter; each stage runs in the root, so its tensorboard logs go to `<root>/runs/`):

    checkpoints/<env-id>/{rebrac,dynamics,reward,meanflow}_seed<S>.pt
    tuning/<env-id>_seed<S>_<wm>_alpha<α>.json   one α candidate on the tuning seeds
    tuning/<env-id>_seed<S>_<planner>_match.json  the planner's compute-matched N (MPPI) or M (shooting)
    summaries/<env-id>_seed<S>_<wm>.json         itpo_eval's summary + α record + budgets + seconds
    planners/<env-id>_seed<S>_<planner>.json      plan_eval's summary (mppi, shooting, mppi-tdmpc2) + its tuning
    stage_times/<env-id>_seed<S>.json             seconds spent in each stage (summed over reruns)
    failures/<env-id>_seed<S>_<stage>.txt         the traceback of a failed stage
    results/                                      benchmarks/report.py's table and figures

α is chosen per dataset, seed and world model from `--alpha-grid` by the mean normalised ITPO score
on the tuning seeds `--tune-seed ...`, which must not overlap the evaluation seeds `--eval-seed ...`;
`--step-size` fixes α instead. The planners' one parameter each (MPPI's τ, shooting's step size) is chosen
the same way from `--temperature-grid` and `--shooting-step-grid` (a grid of one value fixes it).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Literal

import tyro

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
if REPO not in sys.path:
    sys.path.insert(0, REPO)
from common import ENV_IDS, checkpoint_path, models_info  # noqa: E402

TRAIN_STAGES = ("rebrac", "dynamics", "reward", "meanflow")
STOP_WAIT_S = 120  # how long Ctrl-C waits for the stages in flight (a ReBRAC evaluation inside its loop included)
STAGE_ENTRY = {  # stage -> (module, entry point); each entry point takes the module's Args
    "rebrac": ("rebrac", "train"),
    "dynamics": ("train_dynamics", "main"),
    "reward": ("train_reward", "main"),
    "meanflow": ("meanflow_onestep", "main"),
    "itpo": ("itpo_eval", "main"),
    "plan": ("plan_eval", "main"),
}
PLANNER_PARAMETER = {"mppi": "temperature", "shooting": "step_size"}  # the one parameter each planner tunes
MATCHED_KNOB = {"mppi": "samples", "shooting": "particles"}  # plan_eval.MATCHED (the driver imports no torch)
WORLD_MODEL_STAGE = {"ddpm": "dynamics", "meanflow": "meanflow"}

# MPPI's τ, an inverse temperature on Ĵ (weights ∝ exp(τ (Ĵ − max Ĵ)), TD-MPC2's 0.5), chosen from a grid on the
# tuning seeds like α. Ĵ is in the env's reward units, so the grid follows the rewards' scale: AntMaze's 0/1
# rewards take the grid × 100, CORL's reward scale there (with the MuJoCo grid, τ ≤ 50 weighs umaze's samples
# almost alike: its Ĵ spread is hundredths; results/README.md: AntMaze).
MPPI_TEMPERATURES = [0.05, 0.5, 5.0, 50.0]
ANTMAZE_TEMPERATURES = [100 * t for t in MPPI_TEMPERATURES]
# Gradient shooting's step sizes, chosen like τ. ‖∇_a Ĵ‖ of the first action is 4–9 on the final models of
# hopper-medium-replay, walker2d- and halfcheetah-full-replay and antmaze-umaze, but 342 on antmaze-umaze-diverse's
# (medians over 64 dataset states; results/checks/antmaze_shooting_gradient.md), whose γ 0.999 critic falls to
# −9,000 where the DDPM leaves the data: there the grid's smallest step, 0.003, moved a first action by 0.38 and
# every step scored 0 %. AntMaze's grid reaches 100× lower and stops below where umaze's failed (0.1).
SHOOTING_STEPS = [0.003, 0.01, 0.03, 0.1, 0.3, 1.0]
ANTMAZE_SHOOTING_STEPS = [3e-5, 1e-4, 3e-4, 1e-3, 0.003, 0.01, 0.03]

# Budgets of each preset; every one is also a flag that overrides it. 0 steps per episode = the env's limit.
PRESETS = {
    "smoke": {
        "rebrac_updates": 20,
        "rebrac_batch_size": 64,
        "rebrac_eval_every": 10,
        "rebrac_eval_episodes": 2,
        "rebrac_hidden_dim": 32,
        "rebrac_compile": False,  # seconds of training: compiling would take longer
        "itpo_compile": False,
        "rebrac_precision": "fp32",
        "dynamics_steps": 30,
        "reward_steps": 30,
        "meanflow_steps": 30,
        "wm_eval_every": 15,
        "meanflow_eval_every": 15,
        "wm_hidden_dim": 32,
        "wm_num_layers": 2,
        "diffusion_steps": 3,
        "horizon": 2,
        "particles": 4,
        "inner_steps": 1,
        "mppi_iterations": 1,
        "mppi_samples": 4,
        "mppi_policy_samples": 2,
        "mppi_elites": 2,
        "episodes": 2,
        "tune_episodes": 2,
        "tune_max_steps": 10,
        "max_episode_steps": 10,
        "rebrac_curve": [10, 20],
        "dynamics_curve": [15, 30],
        "meanflow_curve": [15, 30],
        "temperature_grid": MPPI_TEMPERATURES,
        "shooting_step_grid": SHOOTING_STEPS,
    },
    # cpu: past the thresholds measured on hopper-medium-replay (ReBRAC ≥ 100k updates at batch 256, DDPM
    # held-out RMSE ≈ 0.1 at 50k steps), fp32 at batch 256 (per core-hour the fastest to a
    # score, README: Precision), one thread per stage.
    "cpu": {
        "rebrac_updates": 200_000,
        "rebrac_batch_size": 256,
        "rebrac_eval_every": 12_500,
        "rebrac_eval_episodes": 10,
        "rebrac_hidden_dim": 256,
        # torch.compile of the update: 1.11–1.20× steady on the two Intel Xeons, 1.02× on a Zen 4, repaid
        # after 0.5k–8.8k updates; its curve on hopper-medium-replay seed 0 lies within seeds 0–2's spread
        # (results/speed/rebrac_compiled_curve_zen4.txt). hopper's rows in results/ were trained eager:
        # --rebrac-compile False reproduces them bit for bit.
        "rebrac_compile": True,
        # bf16 autocast (--rebrac-precision bf16): compiled, 1.45× the fp32 compiled update and 1.61× the eager
        # one on the AMX Xeon, its curve on hopper-medium-replay seed 0 within seeds 0–2's spread
        # (results/speed/rebrac_bf16_curve_xeon_amx.txt); emulated, so slower, on CPUs without bf16 units
        "rebrac_precision": "fp32",
        # ITPO's and the planners' step eager: on a CPU compiling takes minutes per run (over 9 seen) and
        # gains less than it costs on 10-episode evaluations
        "itpo_compile": False,
        "dynamics_steps": 50_000,
        "reward_steps": 30_000,
        "meanflow_steps": 30_000,
        "wm_eval_every": 5_000,
        "meanflow_eval_every": 2_500,
        "wm_hidden_dim": 256,
        "wm_num_layers": 3,
        "diffusion_steps": 10,
        "horizon": 5,
        "particles": 32,
        "inner_steps": 1,
        # MPPI's I, N_π and k; its N (and shooting's M) are timed to ITPO-DDPM's cost per (dataset, seed)
        # (--match-planners); N 48 is the fallback of --no-match-planners (walker2d: 39.6 ms, ITPO 39.5)
        "mppi_iterations": 2,
        "mppi_samples": 48,
        "mppi_policy_samples": 8,
        "mppi_elites": 16,
        "episodes": 10,
        "tune_episodes": 5,  # 3 picked a poor α on medium-replay seed 1 (results/README.md: the 100k run)
        "tune_max_steps": 0,
        "max_episode_steps": 0,
        "rebrac_curve": [25_000, 50_000, 100_000, 200_000],
        "dynamics_curve": [5_000, 15_000, 50_000],
        "meanflow_curve": [2_500, 10_000, 30_000],
        "temperature_grid": MPPI_TEMPERATURES,
        "shooting_step_grid": SHOOTING_STEPS,
    },
    "paper": {
        "rebrac_updates": 1_000_000,
        "rebrac_batch_size": 1024,
        "rebrac_eval_every": 50_000,
        "rebrac_eval_episodes": 10,
        "rebrac_hidden_dim": 256,
        "rebrac_compile": True,  # CUDA graphs on a GPU: launch overhead decides a 3×256 update there
        "rebrac_precision": "fp32",
        # the whole adaptation step (and the planners') compiled, CUDA graphs on a GPU (DESIGN: speed from
        # removing launch overhead, not from a smaller M); not yet run on a GPU: --itpo-compile False if it fails
        "itpo_compile": True,
        "dynamics_steps": 200_000,
        "reward_steps": 100_000,
        "meanflow_steps": 200_000,
        "wm_eval_every": 10_000,
        "meanflow_eval_every": 10_000,
        "wm_hidden_dim": 256,
        "wm_num_layers": 3,
        "diffusion_steps": 10,
        "horizon": 5,
        "particles": 4096,
        "inner_steps": 1,
        "mppi_iterations": 2,  # the cpu preset's, × 128 like M: not measured on a GPU
        "mppi_samples": 6144,
        "mppi_policy_samples": 1024,
        "mppi_elites": 2048,
        "episodes": 10,
        "tune_episodes": 5,
        "tune_max_steps": 0,
        "max_episode_steps": 0,
        "rebrac_curve": [100_000, 200_000, 500_000, 1_000_000],
        "dynamics_curve": [20_000, 50_000, 200_000],
        "meanflow_curve": [20_000, 50_000, 200_000],
        "temperature_grid": MPPI_TEMPERATURES,
        "shooting_step_grid": SHOOTING_STEPS,
    },
}
# Per environment, where its curves demand other budgets than the preset's (one table, no
# per-env code paths; a flag given on the command line overrides it for every environment). walker2d and
# halfcheetah: the DDPM's held-out RMSE was still falling at 100k steps on walker2d-medium-replay (1.52;
# hopper's 0.1 came at 50k), so their DDPM trains to 200k with curve points up to it; provisional until
# those points show where Δ stops rising (README: Results). AntMaze's likewise (held-out RMSE 2.09 at 50k
# steps on antmaze-umaze, still falling; MeanFlow's 0.58 at 30k). AntMaze's score is a success rate, a coin
# per episode: 10 episodes say little, so its rows take 50 (the paper preset CORL's 100) and its tuning 10.
DDPM_200K = {"dynamics_steps": 200_000, "dynamics_curve": [5_000, 15_000, 50_000, 100_000, 200_000]}
# halfcheetah's MeanFlow trains to 200k too: continued from the sweep's 30k on halfcheetah-medium-replay seed 2, its
# held-out RMSE fell from 1.26 to 0.81 and ITPO-MeanFlow's Δ rose with it, −38.5 / −14.0 / +4.7 at 30k / 100k / 200k
# steps (α 5e-5, tuned on the 200k model; the 30k model at its own α 5e-6 gave −9.8) (results/README.md: HalfCheetah)
MEANFLOW_200K = {"meanflow_steps": 200_000, "meanflow_curve": [2_500, 10_000, 30_000, 100_000, 200_000]}
# AntMaze's ReBRAC trains CORL's 1M updates: at 200k the medium maze's actor succeeded in none of 16
# evaluations (umaze's rose from 100k); its first success came at 300k, 10–30 % from 375k (results/README.md: AntMaze).
ANTMAZE_REBRAC = {"rebrac_updates": 1_000_000, "rebrac_curve": [200_000, 500_000, 1_000_000]}
ANTMAZE_GRIDS = {"temperature_grid": ANTMAZE_TEMPERATURES, "shooting_step_grid": ANTMAZE_SHOOTING_STEPS}
ENV_BUDGETS = {
    "smoke": {"walker2d": {"dynamics_steps": 45, "dynamics_curve": [15, 30, 45]}},
    "cpu": {
        "walker2d": DDPM_200K,
        "halfcheetah": {**DDPM_200K, **MEANFLOW_200K},
        "antmaze": {**DDPM_200K, "episodes": 50, "tune_episodes": 10, **ANTMAZE_GRIDS, **ANTMAZE_REBRAC},
    },
    # AntMaze's ReBRAC at CORL's batch 256 (its MuJoCo recipe's is 1024)
    "paper": {"antmaze": {"rebrac_batch_size": 256, "episodes": 100, "tune_episodes": 10, **ANTMAZE_GRIDS}},
}
# what a row of ENV_BUDGETS may set: ReBRAC's and the world models' budgets, the episodes, the planners' grids
ENV_BUDGET_FIELDS = ("rebrac_updates", "rebrac_batch_size", "rebrac_curve", "dynamics_steps", "meanflow_steps")
ENV_BUDGET_FIELDS += ("wm_eval_every", "meanflow_eval_every", "dynamics_curve", "meanflow_curve", "episodes")
ENV_BUDGET_FIELDS += ("tune_episodes",)
ENV_BUDGET_FIELDS += ("temperature_grid", "shooting_step_grid")
assert all(set(row) <= set(ENV_BUDGET_FIELDS) for rows in ENV_BUDGETS.values() for row in rows.values())

# Budget curves: ITPO is paired against ReBRAC at each step of `rebrac_curve` (with the final world and
# reward models), and run with the world model's snapshot at each step of its curve (with the final
# ReBRAC). Curve field -> (stage, its budget field, its evaluation interval field).
CURVE_FIELDS = {
    "rebrac_curve": ("rebrac", "rebrac_updates", "rebrac_eval_every"),
    "dynamics_curve": ("dynamics", "dynamics_steps", "wm_eval_every"),
    "meanflow_curve": ("meanflow", "meanflow_steps", "meanflow_eval_every"),
}
# settings of the preset table, beside its integer budgets
SWITCH_FIELDS = ("rebrac_compile", "rebrac_precision", "itpo_compile")
GRID_FIELDS = ("temperature_grid", "shooting_step_grid")  # ... and lists of candidates to tune
BUDGET_FIELDS = tuple(k for k in PRESETS["cpu"] if k not in (*CURVE_FIELDS, *SWITCH_FIELDS, *GRID_FIELDS))

# What each stage costs, measured on this project's 2-core AMD EPYC machines (fp32, one thread per stage,
# two stages at once): the basis of the wall-time estimate printed at start. Other machines differ: the
# estimate says what the preset asks for, not what your machine will take.
RATES = {
    # batch -> updates/s, eager (256: 1.12× since 075b4fc); compiled (the cpu preset's) 1.02× on these
    # machines, 1.11–1.20× on the project's two Intel Xeons (80.9 eager at 256 there): not counted here
    "rebrac_updates_per_s": {256: 50.0, 1024: 17.0},
    "dynamics_steps_per_s": 125.0,  # DDPM, K = 10, batch 256
    "reward_steps_per_s": 300.0,
    "meanflow_steps_per_s": 60.0,  # JVP: about 2× a DDPM step
    "itpo_ms_per_env_step_m32": {"ddpm": 40.0, "meanflow": 13.0},  # 10 episodes in lockstep, H = 5, M = 32
    "mppi_tdmpc2_ms_per_env_step": 300.0,  # MeanFlow, I 6 × (N 512 + N_π 24)
    "env_steps_per_episode": 1000,  # an upper bound: episodes that fall end sooner
}


def estimate_seconds(
    b: dict, n_pairs: int, world_models: list[str], n_alphas: int, planners: dict | None = None, tdmpc2: int = 0
) -> dict:
    """CPU-seconds per stage for the whole sweep at `RATES` (ITPO cost grows linearly with M and H·K);
    `planners`: {planner: candidates tuned}, `tdmpc2`: runs at TD-MPC2's budget (not multiplied by n_pairs)."""
    per_batch = RATES["rebrac_updates_per_s"]
    rebrac_rate = per_batch.get(b["rebrac_batch_size"]) or per_batch[256] * 256 / b["rebrac_batch_size"]
    out = {
        "rebrac": b["rebrac_updates"] / rebrac_rate,
        "dynamics": b["dynamics_steps"] / RATES["dynamics_steps_per_s"] if "ddpm" in world_models else 0.0,
        "reward": b["reward_steps"] / RATES["reward_steps_per_s"],
        "meanflow": b["meanflow_steps"] / RATES["meanflow_steps_per_s"] if "meanflow" in world_models else 0.0,
        "alpha_tuning": 0.0,
        "evaluation": 0.0,
        "curves": 0.0,
        "planners": 0.0,
    }
    steps = lambda cut: cut or RATES["env_steps_per_episode"]  # noqa: E731
    for wm in world_models:
        ms = RATES["itpo_ms_per_env_step_m32"][wm] * b["particles"] / 32 * b["horizon"] / 5 * b["inner_steps"]
        ms *= b["diffusion_steps"] / 10 if wm == "ddpm" else 1
        episode = lambda n, cut: n * steps(cut) * ms / 1e3  # noqa: E731
        out["alpha_tuning"] += n_alphas * episode(b["tune_episodes"], b["tune_max_steps"])
        out["evaluation"] += episode(b["episodes"], b["max_episode_steps"])
        points = len(b["rebrac_curve"]) - 1 + len(b[f"{WORLD_MODEL_STAGE[wm]}_curve"]) - 1
        out["curves"] += points * episode(b["episodes"], b["max_episode_steps"])
    # the planners, matched: at ITPO-DDPM's cost by construction
    ms = RATES["itpo_ms_per_env_step_m32"]["ddpm"] * b["particles"] / 32 * b["horizon"] / 5 * b["inner_steps"]
    ms *= b["diffusion_steps"] / 10
    for n_tuned in (planners or {}).values():
        runs = n_tuned * b["tune_episodes"] * steps(b["tune_max_steps"]) + b["episodes"] * steps(b["max_episode_steps"])
        out["planners"] += runs * ms / 1e3
    out = {k: v * n_pairs for k, v in out.items()}
    tdmpc2_ms = RATES["mppi_tdmpc2_ms_per_env_step"] * b["horizon"] / 5
    out["planners"] += tdmpc2 * b["episodes"] * steps(b["max_episode_steps"]) * tdmpc2_ms / 1e3
    return out


STEPS_PER_EPISODE_FIELDS = ("tune_max_steps", "max_episode_steps")  # may be 0 (= the env's limit)


@dataclass
class Args:
    preset: Literal["smoke", "cpu", "paper"] = "cpu"
    """budget table: smoke (seconds, tiny networks), cpu (hours on a few cores), paper (the paper's, a GPU job)"""
    env_ids: list[str] = field(default_factory=list)
    """datasets of the grid (D4RL short names)"""
    seeds: list[int] = field(default_factory=lambda: [0])
    """seeds of the grid (each dataset × each seed)"""
    runs: list[str] = field(default_factory=list)
    """extra (dataset, seed) pairs as env_id:seed, e.g. hopper-medium-replay:3"""
    world_models: list[Literal["ddpm", "meanflow"]] = field(default_factory=lambda: ["ddpm", "meanflow"])
    """world models to evaluate ITPO with (meanflow is trained only when listed)"""
    root: str | None = None
    """sweep folder (default sweeps/<preset>)"""
    address: str | None = None
    """Ray cluster address ('auto', 'ray://host:10001'); None starts a local Ray"""
    num_cpus: int | None = None
    """CPUs of the local Ray (default: all); each stage takes one"""
    gpu_fraction: float = 0.25
    """share of a GPU each stage asks Ray for, where torch sees a GPU"""
    device: str | None = None
    """torch device of the stages (default: cuda in a worker that sees a GPU, else cpu)"""
    alpha_grid: list[float] = field(default_factory=lambda: [5e-7, 5e-6, 5e-5, 5e-4])
    """ITPO step sizes α to choose from on the tuning seeds (the paper's grid)"""
    step_size: float | None = None
    """fix α instead of tuning it"""
    tune_seed: int = 2000
    """first env seed of the α-tuning episodes (tune_seed .. tune_seed + tune_episodes − 1)"""
    eval_seed: int = 1000
    """first env seed of the evaluation episodes (eval_seed .. eval_seed + episodes − 1)"""
    tilt_temperature: float = 1.0
    """τ of MeanFlow's policy tilt (inf: untilted)"""
    planners: list[Literal["mppi", "shooting"]] = field(default_factory=lambda: ["mppi", "shooting"])
    """action-space planners (plan_eval.py) run on ITPO's models at ITPO's compute, paired on its episodes"""
    planner_world_model: Literal["ddpm", "meanflow"] = "ddpm"
    """the world model the planners use (its ITPO run is the one they are compute-matched to)"""
    match_planners: bool = True
    """choose MPPI's N and shooting's M per (dataset, seed) so that a step costs what ITPO's does, timed side
    by side (plan_eval --match-itpo); --no-match-planners: the preset's mppi_samples and ITPO's M"""
    temperature_grid: list[float] | None = None
    """MPPI's τ to choose from on the tuning seeds, like α (one value: fixed; TD-MPC2's is 0.5); None: the
    preset's, 0.05 0.5 5 50 (AntMaze × 100, its rewards' scale)"""
    shooting_step_grid: list[float] | None = None
    """gradient shooting's step sizes to choose from on the tuning seeds (one value: fixed); None: the
    preset's, 0.003 … 1 (AntMaze 3e-5 … 0.03: umaze-diverse's ∇_a Ĵ is 80× hopper's)"""
    tdmpc2_runs: list[str] = field(default_factory=list)
    """(dataset, seed) pairs of the grid, as env_id:seed, where MPPI also runs at TD-MPC2's own budget
    (I 6, N 512, N_π 24, k 64, τ 0.5) with MeanFlow, e.g. hopper-medium-replay:0"""
    report: bool = True
    """write the report (benchmarks/report.py) at the end"""
    out: str | None = None
    """report folder (default <root>/results)"""
    rebrac_updates: int | None = None
    """ReBRAC gradient updates (None: the preset's)"""
    rebrac_batch_size: int | None = None
    """ReBRAC batch size"""
    rebrac_eval_every: int | None = None
    """ReBRAC evaluates and checkpoints every this many updates"""
    rebrac_eval_episodes: int | None = None
    """episodes of each ReBRAC evaluation"""
    rebrac_hidden_dim: int | None = None
    """width of ReBRAC's actor and critics"""
    rebrac_compile: bool | None = None
    """torch.compile ReBRAC's update (None: the preset's, True in cpu and paper); False trains eager, as
    hopper's rows in results/ were"""
    itpo_compile: bool | None = None
    """torch.compile ITPO's adaptation step and the planners' (None: the preset's, True in paper only: CUDA graphs
    on a GPU; on a CPU compiling takes minutes per run)"""
    rebrac_precision: Literal["fp32", "bf16"] | None = None
    """ReBRAC's forward passes in fp32 or under bf16 autocast (None: the preset's, fp32); bf16 only pays on a GPU
    or a CPU with bf16 units (AMX, AVX512-BF16)"""
    rebrac_actor_bc_coef: float | None = None
    """ReBRAC's β_a for every dataset of this sweep (None: rebrac.py's per-dataset table, the paper's, tuned on
    D4RL's data; on this project's walker2d-expert its 0.01 never learns to walk, results/README.md: Walker2d)"""
    dynamics_steps: int | None = None
    """DDPM world model gradient steps"""
    reward_steps: int | None = None
    """reward model gradient steps"""
    meanflow_steps: int | None = None
    """MeanFlow world model gradient steps"""
    wm_eval_every: int | None = None
    """held-out RMSE (and checkpoint) of the DDPM and reward model every this many steps"""
    meanflow_eval_every: int | None = None
    """held-out RMSE (and checkpoint) of MeanFlow every this many steps"""
    wm_hidden_dim: int | None = None
    """width of the world models and the reward model"""
    wm_num_layers: int | None = None
    """hidden layers of the world models and the reward model"""
    diffusion_steps: int | None = None
    """K of the DDPM"""
    horizon: int | None = None
    """ITPO H"""
    particles: int | None = None
    """ITPO M"""
    inner_steps: int | None = None
    """ITPO E (and gradient shooting's ascent steps, with M as its noise draws)"""
    mppi_iterations: int | None = None
    """MPPI's I at the matched budget"""
    mppi_samples: int | None = None
    """MPPI's N, sampled action sequences per iteration, at the matched budget"""
    mppi_policy_samples: int | None = None
    """MPPI's N_π, rollouts of π among the candidates, at the matched budget"""
    mppi_elites: int | None = None
    """MPPI's k at the matched budget"""
    episodes: int | None = None
    """evaluation episodes per (dataset, seed, world model)"""
    tune_episodes: int | None = None
    """episodes per α candidate"""
    tune_max_steps: int | None = None
    """cut α-tuning episodes at this many steps (0: the env's limit)"""
    max_episode_steps: int | None = None
    """cut evaluation episodes at this many steps (0: the env's limit)"""
    rebrac_curve: list[int] | None = None
    """ReBRAC updates at which ITPO is paired against ReBRAC's snapshot (multiples of --rebrac-eval-every)"""
    dynamics_curve: list[int] | None = None
    """DDPM steps at which ITPO runs with the DDPM's snapshot (multiples of --wm-eval-every)"""
    meanflow_curve: list[int] | None = None
    """MeanFlow steps at which ITPO runs with MeanFlow's snapshot (multiples of --meanflow-eval-every)"""


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------
def resolve(args: Args) -> tuple[dict, list[tuple[str, int]], str]:
    """(budgets, [(env_id, seed)], absolute root); exits with a one-line error on bad input."""
    for k in CURVE_FIELDS:  # `--rebrac-curve` with no steps would silently mean the final one only
        if getattr(args, k) == []:
            preset = " ".join(map(str, PRESETS[args.preset][k]))
            sys.exit(
                f"error: --{k.replace('_', '-')} takes at least one step (the {args.preset} preset's: {preset}); "
                "for the final checkpoint alone, give its step"
            )
    budgets = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in PRESETS[args.preset].items()}
    pairs = list(dict.fromkeys([(e, s) for e in args.env_ids for s in args.seeds] + parse_pairs(args.runs, "runs")))
    unchecked = dict(budgets)  # the preset's with the flags, before its curves are completed
    error = budget_error(budgets, "")
    # the preset's own budgets bind only where an environment of the grid has no row of its own: a walker2d-only
    # grid may ask for DDPM curve points up to walker2d's 200k, past hopper's 50k
    if error and (not pairs or any(e.split("-", 1)[0] not in ENV_BUDGETS[args.preset] for e, _ in pairs)):
        sys.exit(error)
    # per environment: the preset's table, less what a flag sets for every environment; "per_env" keeps
    # where an environment's budgets differ from the others' (its curves end at its own budgets)
    budgets["per_env"] = {}
    for env, table in ENV_BUDGETS[args.preset].items():
        if any(e.split("-", 1)[0] == env for e, _ in pairs):
            mine = {**unchecked, **{k: v for k, v in table.items() if getattr(args, k) is None}}
            if error := budget_error(mine, f" (the {env} budgets)"):
                sys.exit(error)
            budgets["per_env"][env] = {k: v for k, v in mine.items() if v != budgets[k]}
    return budgets, pairs, validate(args, budgets, pairs)


def parse_pairs(values: list[str], flag: str) -> list[tuple[str, int]]:
    """env_id:seed strings -> [(env_id, seed)]; a one-line error names the flag."""
    pairs = []
    for run in values:
        env_id, _, seed = run.rpartition(":")
        if not env_id or not seed.lstrip("-").isdigit():
            sys.exit(
                f"error: --{flag.replace('_', '-')} takes env_id:seed pairs such as hopper-medium-replay:1, not {run!r}"
            )
        pairs.append((env_id, int(seed)))
    return pairs


def budget_error(budgets: dict, where: str) -> str | None:
    """The one-line error of budgets out of range (integers, curves of multiples of their stage's interval), or
    None; each valid curve is completed in place to end at its budget."""
    for k in BUDGET_FIELDS:
        low = 0 if k in STEPS_PER_EPISODE_FIELDS else 1
        if not isinstance(budgets[k], int) or budgets[k] < low:
            return f"error: --{k.replace('_', '-')} must be an integer ≥ {low}, not {budgets[k]!r}{where}"
    for k, (_, budget_field, every_field) in CURVE_FIELDS.items():
        budget, every = budgets[budget_field], budgets[every_field]
        if any(not isinstance(v, int) or v <= 0 or v > budget or v % every for v in budgets[k]):
            return (
                f"error: --{k.replace('_', '-')} takes steps in (0, {budget}] (--{budget_field.replace('_', '-')}) "
                f"that are multiples of --{every_field.replace('_', '-')} ({every}), not {budgets[k]}{where}"
            )
        budgets[k] = sorted(set(budgets[k]) | {budget})  # the final checkpoint is always the curve's last point
    return None


def planner_grid(budgets: dict, planner: str) -> list[float]:
    """The candidates of a planner's one parameter for a dataset (`budgets`: its own, with ENV_BUDGETS' row)."""
    return list(dict.fromkeys(budgets["temperature_grid" if planner == "mppi" else "shooting_step_grid"]))


def validate(args: Args, budgets: dict, pairs: list[tuple[str, int]]) -> str:
    """The checks on the grid and the evaluation settings; returns the sweep's absolute root."""
    for name, value in [("seed", s) for _, s in pairs] + [("tune-seed", args.tune_seed), ("eval-seed", args.eval_seed)]:
        if value < 0:  # else a stage fails hours in (numpy refuses negative seeds)
            sys.exit(f"error: --{name} must be ≥ 0, not {value}")
    if "meanflow" in args.world_models and not args.tilt_temperature > 0:  # else MeanFlow fails after ReBRAC
        sys.exit(f"error: --tilt-temperature must be positive (inf: no tilt), not {args.tilt_temperature}")
    beta = args.rebrac_actor_bc_coef
    if beta is not None and not (math.isfinite(beta) and beta >= 0):  # else ReBRAC fails (or diverges) in flight
        sys.exit(f"error: --rebrac-actor-bc-coef must be finite and ≥ 0, not {beta}")
    if not pairs:
        sys.exit("error: nothing to run: give --env-ids (with --seeds) or --runs env_id:seed")
    env_ids = ENV_IDS
    for env_id in dict.fromkeys(e for e, _ in pairs):
        if env_id not in env_ids:
            sys.exit(f"error: unknown dataset {env_id!r}. Valid names: {', '.join(env_ids)}")
    if not args.world_models:
        sys.exit("error: --world-models is empty")
    if args.planners and args.planner_world_model not in args.world_models:
        wm = args.planner_world_model
        sys.exit(f"error: --planner-world-model {wm} is not in --world-models: add it or choose one there")
    env_budgets = {env_id: Sweep.budgets_of(budgets, env_id) for env_id in dict.fromkeys(e for e, _ in pairs)}
    for flag, grid, positive in (
        *(("temperature", b["temperature_grid"], True) for b in env_budgets.values()),
        *(("shooting-step", b["shooting_step_grid"], False) for b in env_budgets.values()),
    ):
        if not grid or not all(math.isfinite(v) and (v > 0 if positive else v >= 0) for v in grid):
            sys.exit(f"error: --{flag}-grid needs finite values {'> 0' if positive else '≥ 0'}, not {grid}")
    for pair in parse_pairs(args.tdmpc2_runs, "tdmpc2_runs"):
        if pair not in pairs:
            sys.exit(
                f"error: --tdmpc2-runs {pair[0]}:{pair[1]} is not in the grid: add it to --env-ids/--seeds or --runs"
            )
        if "meanflow" not in args.world_models:
            sys.exit("error: --tdmpc2-runs plans with MeanFlow: keep meanflow in --world-models")
    if not 0 < args.gpu_fraction <= 1:
        sys.exit(f"error: --gpu-fraction must be in (0, 1], not {args.gpu_fraction}")
    if args.step_size is None and (
        not args.alpha_grid or not all(math.isfinite(a) and a >= 0 for a in args.alpha_grid)
    ):
        sys.exit(f"error: --alpha-grid needs finite step sizes ≥ 0, not {args.alpha_grid}")
    for env_id, b in env_budgets.items():  # each environment's episodes and grids (ENV_BUDGETS)
        if args.step_size is None or any(len(planner_grid(b, p)) > 1 for p in args.planners):  # tuned
            last_tune, last_eval = args.tune_seed + b["tune_episodes"] - 1, args.eval_seed + b["episodes"] - 1
            if args.tune_seed <= last_eval and args.eval_seed <= last_tune:
                sys.exit(
                    f"error: the α-tuning seeds {args.tune_seed}..{last_tune} overlap the evaluation seeds "
                    f"{args.eval_seed}..{last_eval} of {env_id}; α must be chosen on other episodes than those "
                    f"reported: move --tune-seed or --eval-seed"
                )
    if args.step_size is not None and not (math.isfinite(args.step_size) and args.step_size >= 0):
        sys.exit(f"error: --step-size must be a finite number ≥ 0, not {args.step_size}")
    return os.path.abspath(args.root or os.path.join("sweeps", args.preset))


# ---------------------------------------------------------------------------------------------
# Small file helpers (the driver is the only writer of everything but checkpoints)
# ---------------------------------------------------------------------------------------------
def write_json(path: str, obj) -> None:
    """Atomically: a crash never leaves half a file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def plain(obj):
    """The JSON form of obj (tuples -> lists, ...), so that settings compare equal after a round trip."""
    return json.loads(json.dumps(obj, default=str))


def read_checkpoint(path: str) -> dict | None:
    """A saved checkpoint (its "step" an int), or None where there is none (or it cannot be read)."""
    if not os.path.exists(path):
        return None
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        return {**ckpt, "step": int(ckpt["step"])}
    except Exception:  # noqa: BLE001 - unreadable: not complete; the stage runs and its resume names the file
        return None


def seconds(s: float) -> str:
    return f"{s:.1f}s" if s < 10 else f"{s:.0f}s"


def raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# The Ray task: one stage, in-process in the worker, through the stage script's own entry point
# ---------------------------------------------------------------------------------------------
def run_stage(module: str, entry: str, kwargs: dict, workdir: str, keep_result: bool = True) -> dict:
    """Call `module.entry(module.Args(**kwargs))`, or `module.entry(**kwargs)` where the module has no
    Args (common.load_dataset). Never raises: a failure comes back as its traceback."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    os.makedirs(workdir, exist_ok=True)
    os.chdir(workdir)  # the sweep's root: tensorboard logs and itpo_eval's runs/<name>/summary.json land there
    t0 = time.time()
    try:
        mod = importlib.import_module(module)
        if kwargs.get("device", "") is None:
            import torch

            kwargs = {**kwargs, "device": "cuda" if torch.cuda.is_available() else "cpu"}
        fn = getattr(mod, entry)
        result = fn(mod.Args(**kwargs)) if hasattr(mod, "Args") else fn(**kwargs)
        return {"ok": True, "result": plain(result) if keep_result else None, "seconds": time.time() - t0}
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: BLE001 - the stages exit with sys.exit("error: ...") on bad input: report it too
        return {"ok": False, "traceback": traceback.format_exc(), "seconds": time.time() - t0}


# ---------------------------------------------------------------------------------------------
# The graph
# ---------------------------------------------------------------------------------------------
@dataclass
class Node:
    env_id: str
    seed: int | None  # None: the per-dataset download node
    stage: str  # dataset | rebrac | dynamics | reward | meanflow | tune-<wm>-<α> | itpo-<wm>
    deps: list[tuple]
    status: str = "pending"  # pending | running | done | skipped | failed | not run
    detail: str = ""
    seconds: float = 0.0
    context: dict = field(default_factory=dict)  # what the driver needs once the task returns

    @property
    def id(self) -> tuple:
        return (self.env_id, self.seed, self.stage)

    @property
    def label(self) -> str:
        seed = "-" if self.seed is None else self.seed
        return f"{self.env_id} seed {seed} {self.stage}"


class Sweep:
    def __init__(self, args: Args, budgets: dict, pairs: list[tuple[str, int]], root: str):
        self.args, self.b, self.pairs, self.root = args, budgets, pairs, root
        self.workdir = root  # the stages' cwd: their tensorboard logs go to <root>/runs
        self.nodes: dict[tuple, Node] = {}
        self.late: list[str] = []  # stages that did not stop within STOP_WAIT_S of Ctrl-C
        self.alphas = [args.step_size] if args.step_size is not None else list(dict.fromkeys(args.alpha_grid))
        self.tdmpc2 = parse_pairs(args.tdmpc2_runs, "tdmpc2_runs")
        for env_id in dict.fromkeys(e for e, _ in pairs):
            self.add(Node(env_id, None, "dataset", []))
        # The order nodes are added in is the order ready ones run in: every pair's training stages (they
        # unblock the rest), then every pair's tuning and final rows, then the TD-MPC2-budget runs and curves.
        for env_id, seed in pairs:
            data = [(env_id, None, "dataset")]
            for stage in ("rebrac", "dynamics", "reward"):
                self.add(Node(env_id, seed, stage, data))
            if "meanflow" in args.world_models:
                self.add(Node(env_id, seed, "meanflow", [*data, (env_id, seed, "rebrac")]))
        later = []
        for env_id, seed in pairs:
            for wm in args.world_models:
                models = [(env_id, seed, s) for s in ("rebrac", WORLD_MODEL_STAGE[wm], "reward")]
                tunes = []
                if args.step_size is None:
                    for alpha in self.alphas:
                        tunes.append(
                            self.add(
                                Node(env_id, seed, f"tune-{wm}-{alpha!r}", models, context={"wm": wm, "alpha": alpha})
                            ).id
                        )
                final = self.add(Node(env_id, seed, f"itpo-{wm}", models + tunes, context={"wm": wm})).id
                # budget curves: one stage at an earlier snapshot, the others final, α as chosen for `final`
                for stage in (WORLD_MODEL_STAGE[wm], "rebrac"):  # the world model's first: the newer question
                    for step in self.curve(env_id, stage)[:-1]:
                        context = {"wm": wm, "vary": stage, "step": step}
                        later.append(Node(env_id, seed, f"curve-{wm}-{stage}{step}", [*models, final], context=context))
            # the planners, on the planner world model's models; each tunes its one parameter like α
            models = [(env_id, seed, s) for s in ("rebrac", WORLD_MODEL_STAGE[args.planner_world_model], "reward")]
            for planner in args.planners:
                grid = planner_grid(self.budgets(env_id), planner)
                budget = []  # the matched budget, timed before its tuning runs use it
                if args.match_planners:
                    context = {"planner": planner, "match": True}
                    budget = [self.add(Node(env_id, seed, f"match-{planner}", models, context=context)).id]
                tunes = []
                for value in grid if len(grid) > 1 else []:
                    context = {"planner": planner, "value": value}
                    node = Node(env_id, seed, f"tune-{planner}-{value!r}", models + budget, context=context)
                    tunes.append(self.add(node).id)
                self.add(Node(env_id, seed, f"plan-{planner}", models + budget + tunes, context={"planner": planner}))
            if (env_id, seed) in self.tdmpc2:
                models = [(env_id, seed, s) for s in ("rebrac", "meanflow", "reward")]
                context = {"planner": "mppi", "tdmpc2": True}
                later.insert(0, Node(env_id, seed, "plan-mppi-tdmpc2", models, context=context))
        for node in later:
            self.add(node)

    @staticmethod
    def budgets_of(budgets: dict, env_id: str) -> dict:
        """The budgets of a dataset: the preset's, with its environment's row of ENV_BUDGETS."""
        base = {k: v for k, v in budgets.items() if k != "per_env"}
        return {**base, **budgets.get("per_env", {}).get(env_id.split("-", 1)[0], {})}

    def budgets(self, env_id: str) -> dict:
        return self.budgets_of(self.b, env_id)

    def add(self, node: Node) -> Node:
        self.nodes[node.id] = node
        return node

    # -- paths -------------------------------------------------------------------------------
    def ckpt(self, env_id: str, stage: str, seed: int) -> str:
        return checkpoint_path(env_id, stage, seed, root=os.path.join(self.root, "checkpoints"))

    def tuning_path(self, env_id, seed, name, value) -> str:
        """One candidate's tuning score; `name`: <wm>_alpha (ITPO) or <planner>_<parameter>."""
        return os.path.join(self.root, "tuning", f"{env_id}_seed{seed}_{name}{value!r}.json")

    def summary_path(self, env_id, seed, wm) -> str:
        return os.path.join(self.root, "summaries", f"{env_id}_seed{seed}_{wm}.json")

    def match_path(self, env_id, seed, planner) -> str:
        return os.path.join(self.root, "tuning", f"{env_id}_seed{seed}_{planner}_match.json")

    def match_record(self, env_id: str, seed: int, planner: str) -> dict:
        rec = read_json(self.match_path(env_id, seed, planner))
        if rec is None:
            raise RuntimeError(f"no matched budget for {planner} ({self.match_path(env_id, seed, planner)})")
        return rec

    def plan_path(self, env_id, seed, label) -> str:
        return os.path.join(self.root, "planners", f"{env_id}_seed{seed}_{label}.json")

    def curve_path(self, env_id, seed, wm, stage, step) -> str:
        return os.path.join(self.root, "curves", f"{env_id}_seed{seed}_{wm}_{stage}{step}.json")

    def failure_path(self, node: Node) -> str:
        seed = "" if node.seed is None else f"_seed{node.seed}"
        return os.path.join(self.root, "failures", f"{node.env_id}{seed}_{node.stage}.txt")

    def times_path(self, env_id, seed) -> str:
        return os.path.join(self.root, "stage_times", f"{env_id}_seed{seed}.json")

    # -- what each stage asks for ------------------------------------------------------------
    def curve(self, env_id: str, stage: str) -> list[int]:
        """The steps of a stage's budget curve, ending at its budget ([budget] for the reward model)."""
        b = self.budgets(env_id)
        return b[f"{stage}_curve"] if f"{stage}_curve" in b else [self.budget(env_id, stage)]

    def snapshot_every(self, env_id: str, stage: str) -> int:
        """Keep a snapshot every gcd of the curve's earlier steps (0: no earlier step, no snapshot)."""
        curve = self.curve(env_id, stage)
        return math.gcd(*curve[:-1]) if len(curve) > 1 else 0

    def budget(self, env_id: str, stage: str) -> int:
        field_name = {"rebrac": "rebrac_updates", "dynamics": "dynamics_steps", "reward": "reward_steps"}
        return self.budgets(env_id)[field_name.get(stage, "meanflow_steps")]

    def stage_kwargs(self, env_id: str, seed: int, stage: str) -> dict:
        b = self.budgets(env_id)
        common = {
            "env_id": env_id,
            "seed": seed,
            "checkpoint": self.ckpt(env_id, stage, seed),
            "resume": True,
            "device": self.args.device,
        }
        if stage == "rebrac":
            return dict(
                common,
                total_updates=b["rebrac_updates"],
                batch_size=b["rebrac_batch_size"],
                hidden_dim=b["rebrac_hidden_dim"],
                compile=b["rebrac_compile"],
                precision=b["rebrac_precision"],
                eval_every=b["rebrac_eval_every"],
                eval_episodes=b["rebrac_eval_episodes"],
                checkpoint_every=b["rebrac_eval_every"],
                snapshot_every=self.snapshot_every(env_id, "rebrac"),
                **({} if self.args.rebrac_actor_bc_coef is None else {"actor_bc_coef": self.args.rebrac_actor_bc_coef}),
            )
        wm = dict(common, hidden_dim=b["wm_hidden_dim"], num_layers=b["wm_num_layers"])
        if stage == "dynamics":
            return dict(
                wm,
                total_steps=b["dynamics_steps"],
                eval_every=b["wm_eval_every"],
                diffusion_steps=b["diffusion_steps"],
                snapshot_every=self.snapshot_every(env_id, "dynamics"),
            )
        if stage == "reward":
            return dict(wm, total_steps=b["reward_steps"], eval_every=b["wm_eval_every"])
        return dict(
            wm,
            total_steps=b["meanflow_steps"],
            eval_every=b["meanflow_eval_every"],
            snapshot_every=self.snapshot_every(env_id, "meanflow"),
            rebrac_checkpoint=self.ckpt(env_id, "rebrac", seed),
            tilt_temperature=self.args.tilt_temperature,
        )

    def model_paths(self, env_id: str, seed: int, wm: str, vary: str | None = None, step: int | None = None) -> dict:
        """{stage: checkpoint} of an ITPO run with world model `wm`: the final checkpoints, except the
        `vary` stage's snapshot at `step` (a point of a budget curve)."""
        stages = ("rebrac", WORLD_MODEL_STAGE[wm], "reward")
        return {
            s: checkpoint_path(env_id, s, seed, os.path.join(self.root, "checkpoints"), step if s == vary else None)
            for s in stages
        }

    def run_kwargs(self, env_id: str, seed: int, wm: str, tuning: bool, paths: dict, name: str) -> dict:
        """What an ITPO run and a planner's share: the dataset, the models, the episodes and the run's name."""
        b = self.budgets(env_id)
        episodes, first = (b["tune_episodes"], self.args.tune_seed) if tuning else (b["episodes"], self.args.eval_seed)
        return {
            "env_id": env_id,
            "seed": seed,
            "horizon": b["horizon"],
            "episodes": episodes,
            "eval_seed": first,
            "max_episode_steps": (b["tune_max_steps"] if tuning else b["max_episode_steps"]) or None,
            "world_model": wm,
            "baseline": not tuning,
            "rebrac_checkpoint": paths["rebrac"],
            "dynamics_checkpoint": paths[WORLD_MODEL_STAGE[wm]],
            "reward_checkpoint": paths["reward"],
            "device": self.args.device,
            **({"compile": True} if b["itpo_compile"] else {}),  # eager runs keep the keys they were made with
            "run_name": f"sweep_{self.args.preset}_{env_id}_seed{seed}_{name}",
        }

    def itpo_kwargs(
        self, env_id: str, seed: int, wm: str, step_size: float, tuning: bool, paths: dict | None = None, tag: str = ""
    ) -> dict:
        b = self.budgets(env_id)
        paths = paths or self.model_paths(env_id, seed, wm)
        name = f"{wm}{tag}" + (f"_tune{step_size!r}" if tuning else "")
        itpo = {"particles": b["particles"], "inner_steps": b["inner_steps"], "step_size": step_size}
        return {**self.run_kwargs(env_id, seed, wm, tuning, paths, name), **itpo}

    def models_key(self, models: dict) -> dict:
        """Which checkpoints an evaluation uses: step and content hash of each (`models`: `models_info`'s,
        which the node keeps for its summary: each checkpoint is read once)."""
        return {s: {"step": info["step"], "sha256": file_digest(info["path"])} for s, info in models.items()}

    def eval_key(self, kwargs: dict, models: dict, alpha: dict | None = None, name: str = "itpo") -> dict:
        run = {k: v for k, v in kwargs.items() if k not in ("device", "run_name")}
        return plain({name: run, "checkpoints": models, **({"alpha": alpha} if alpha is not None else {})})

    def tune_seeds(self, env_id: str) -> list[int]:
        return list(range(self.args.tune_seed, self.args.tune_seed + self.budgets(env_id)["tune_episodes"]))

    def alpha_record(self, env_id: str, seed: int, wm: str) -> dict:
        return self.tuning_record(env_id, seed, f"{wm}_alpha", self.alphas, self.args.step_size)

    def planner_record(self, env_id: str, seed: int, planner: str) -> dict:
        grid = planner_grid(self.budgets(env_id), planner)
        name = f"{planner}_{PLANNER_PARAMETER[planner]}"
        return self.tuning_record(env_id, seed, name, grid, grid[0] if len(grid) == 1 else None)

    def tuning_record(self, env_id: str, seed: int, name: str, grid: list[float], fixed: float | None) -> dict:
        """The candidate of `grid` with the best mean tuning score (ties: the smaller), or `fixed`."""
        if fixed is not None:
            return {"chosen": fixed, "fixed": True, "tuning_scores": {}, "tune_seeds": []}
        scores = {repr(v): read_json(self.tuning_path(env_id, seed, name, v))["score"] for v in grid}
        finite = {v: s for v, s in zip(grid, scores.values()) if s is not None and math.isfinite(s)}
        best = max(finite.values()) if finite else None
        chosen = min(v for v, s in finite.items() if s == best) if finite else min(grid)
        return {
            "chosen": chosen,
            "fixed": False,
            "tuning_scores": scores,
            "tune_seeds": self.tune_seeds(env_id),
            "tune_max_steps": self.b["tune_max_steps"] or None,
            "grid": grid,
        }

    # -- deciding, submitting, collecting ------------------------------------------------------
    def prepare(self, node: Node) -> tuple | None:
        """Decide whether `node` can be skipped (returns None, status set) or what to submit:
        (module, entry, kwargs, keep_result)."""
        env_id, seed = node.env_id, node.seed
        if node.stage == "dataset":
            return self.prepare_dataset(node)
        if node.stage in TRAIN_STAGES:
            path, budget = self.ckpt(env_id, node.stage, seed), self.budget(env_id, node.stage)
            ckpt = read_checkpoint(path)
            step = None if ckpt is None else ckpt["step"]
            if ckpt is not None:
                self.check_tilt(node, ckpt, path)
                self.check_actor_bc_coef(node, ckpt, path)
            if step is not None and step >= budget:
                node.status, node.detail = "skipped", f"checkpoint at step {step} ≥ {budget}"
                return None
            node.detail = f"resuming at step {step}" if step is not None else ""
            return (*STAGE_ENTRY[node.stage], self.stage_kwargs(env_id, seed, node.stage), True)
        if "planner" in node.context:
            return self.prepare_plan(node)
        wm = node.context["wm"]
        if node.stage.startswith("curve-"):
            return self.prepare_curve(node)
        node.context["models"] = models_info(self.model_paths(env_id, seed, wm))
        models = self.models_key(node.context["models"])
        if node.stage.startswith("tune-"):
            kwargs = self.itpo_kwargs(env_id, seed, wm, node.context["alpha"], tuning=True)
            key = self.eval_key(kwargs, models)
            rec = read_json(self.tuning_path(env_id, seed, f"{wm}_alpha", node.context["alpha"]))
            node.context["key"] = key
            if rec is not None and rec.get("key") == key:
                node.status, node.detail = "skipped", f"tuning score {rec['score']:.1f} on record"
                return None
            return (*STAGE_ENTRY["itpo"], kwargs, True)
        alpha = self.alpha_record(env_id, seed, wm)
        kwargs = self.itpo_kwargs(env_id, seed, wm, alpha["chosen"], tuning=False)
        key = self.eval_key(kwargs, models, alpha)
        node.context.update(key=key, alpha=alpha)
        old = read_json(self.summary_path(env_id, seed, wm))
        if old is not None and old.get("sweep_key") == key:
            node.status, node.detail = "skipped", f"summary with the same settings (α={alpha['chosen']!r})"
            return None
        node.detail = f"α={alpha['chosen']!r}"
        return (*STAGE_ENTRY["itpo"], kwargs, True)

    def plan_kwargs(
        self,
        env_id: str,
        seed: int,
        planner: str,
        value: float | None,
        tuning: bool,
        tdmpc2: bool = False,
        match: dict | None = None,
    ) -> dict:
        """plan_eval.Args of a planner run: the matched budget (MPPI's I, N_π, k from the preset, shooting's E
        ITPO's; MPPI's N and shooting's M from the `match-` node's timing, or the preset's N and ITPO's M with
        --no-match-planners), or TD-MPC2's own (plan_eval's defaults) on MeanFlow; `value`: τ or the step size.
        `match`: {} for the `match-` node itself."""
        b = self.budgets(env_id)
        wm = "meanflow" if tdmpc2 else self.args.planner_world_model
        label = f"{planner}-tdmpc2" if tdmpc2 else planner
        name = label + (f"_tune{value!r}" if tuning else "")
        kwargs = {
            **self.run_kwargs(env_id, seed, wm, tuning, self.model_paths(env_id, seed, wm), name),
            "planner": planner,
        }
        if planner == "mppi" and not tdmpc2:
            kwargs.update({k: b[f"mppi_{k}"] for k in ("iterations", "samples", "policy_samples", "elites")})
            kwargs["temperature"] = value
        elif planner == "shooting":
            kwargs.update(particles=b["particles"], shooting_steps=b["inner_steps"], step_size=value)
        if match is not None:  # the matched budget's node: it times the planner against ITPO, evaluates nothing
            kwargs.update(match_itpo=(b["particles"], b["inner_steps"]), match_only=True, baseline=False)
            del kwargs[MATCHED_KNOB[planner]], kwargs[PLANNER_PARAMETER[planner]]
        elif self.args.match_planners and not tdmpc2:
            knob = MATCHED_KNOB[planner]
            kwargs[knob] = self.match_record(env_id, seed, planner)["match"][knob]
        return kwargs

    def prepare_plan(self, node: Node) -> tuple | None:
        """A planner's tuning candidate or its evaluation (the chosen value), skipped when on record."""
        env_id, seed, planner = node.env_id, node.seed, node.context["planner"]
        tdmpc2 = node.context.get("tdmpc2", False)
        node.context["models"] = models_info(
            self.model_paths(env_id, seed, "meanflow" if tdmpc2 else self.args.planner_world_model)
        )
        models = self.models_key(node.context["models"])
        if node.stage.startswith("match-"):
            kwargs = self.plan_kwargs(env_id, seed, planner, None, tuning=False, match={})
            node.context["key"] = self.eval_key(kwargs, models, name="match")
            rec = read_json(self.match_path(env_id, seed, planner))
            if rec is not None and rec.get("key") == node.context["key"]:
                knob = MATCHED_KNOB[planner]
                node.status, node.detail = "skipped", f"{knob} {rec['match'][knob]} on record"
                return None
            return (*STAGE_ENTRY["plan"], kwargs, True)
        if node.stage.startswith("tune-"):
            value = node.context["value"]
            kwargs = self.plan_kwargs(env_id, seed, planner, value, tuning=True)
            node.context["key"] = self.eval_key(kwargs, models, name="plan")
            rec = read_json(self.tuning_path(env_id, seed, f"{planner}_{PLANNER_PARAMETER[planner]}", value))
            if rec is not None and rec.get("key") == node.context["key"]:
                node.status, node.detail = "skipped", f"tuning score {rec['score']:.1f} on record"
                return None
            return (*STAGE_ENTRY["plan"], kwargs, True)
        record = None if tdmpc2 else self.planner_record(env_id, seed, planner)
        kwargs = self.plan_kwargs(env_id, seed, planner, record and record["chosen"], tuning=False, tdmpc2=tdmpc2)
        node.context.update(key=self.eval_key(kwargs, models, record, name="plan"), tuned=record)
        old = read_json(self.plan_path(env_id, seed, node.stage.removeprefix("plan-")))
        if old is not None and old.get("sweep_key") == node.context["key"]:
            node.status, node.detail = "skipped", "summary with the same settings"
            return None
        node.detail = f"{PLANNER_PARAMETER[planner]}={record['chosen']!r}" if record else "TD-MPC2's budget"
        return (*STAGE_ENTRY["plan"], kwargs, True)

    def check_tilt(self, node: Node, ckpt: dict, path: str) -> None:
        """A saved MeanFlow, finished or not, must have been tilted by the ReBRAC this sweep trains (not, say,
        by the 100k checkpoint of a ReBRAC since extended to 200k, or by another ReBRAC copied in): to be
        reused, or resumed. Checked by the ReBRAC's step and by its actor's weights (MeanFlows saved before the
        digest was recorded: by the step only)."""
        if node.stage != "meanflow":
            return
        tilted_by, budget = ckpt.get("tilt_rebrac_step"), self.budget(node.env_id, "rebrac")
        retrain = "delete it and its _step snapshots to retrain MeanFlow"
        if tilted_by is not None and tilted_by != budget:
            raise RuntimeError(
                f"{path} was tilted by ReBRAC at update {tilted_by}, this sweep's trains to {budget}: {retrain}"
            )
        if ckpt.get("tilt_rebrac_digest") is None:  # saved before the digest was recorded
            return
        rebrac = read_checkpoint(self.ckpt(node.env_id, "rebrac", node.seed))
        if rebrac is not None:
            from common import weights_digest

            if ckpt["tilt_rebrac_digest"] != weights_digest(rebrac["actor"]):
                raise RuntimeError(f"{path} was tilted by another ReBRAC than this sweep's: {retrain}")

    def made_with(self, env_id: str) -> dict:
        """What a summary records of how its models were made: the budgets, and β_a where a flag set it."""
        out = {"budgets": {"preset": self.args.preset, **self.budgets(env_id)}}
        if self.args.rebrac_actor_bc_coef is not None:  # the report marks the row
            out["rebrac_actor_bc_coef"] = self.args.rebrac_actor_bc_coef
        return out

    def check_actor_bc_coef(self, node: Node, ckpt: dict, path: str) -> None:
        """A saved ReBRAC, finished or not, must have the β_a this sweep asks for (a finished one is not rerun)."""
        if node.stage != "rebrac":
            return
        from rebrac import REBRAC_BETAS

        asked = self.args.rebrac_actor_bc_coef
        asked = REBRAC_BETAS[node.env_id][0] if asked is None else asked
        saved = ckpt.get("args", {}).get("actor_bc_coef", asked)
        if saved != asked:
            raise RuntimeError(
                f"{path} was trained with β_a {saved}, this sweep asks for {asked} (--rebrac-actor-bc-coef): "
                "give the sweep another --root, or delete it, its _step snapshots and the MeanFlow it tilted"
            )

    def prepare_curve(self, node: Node) -> tuple | None:
        """A point of a budget curve: ITPO with one stage's snapshot, α as chosen for the final models."""
        env_id, seed, (wm, vary, step) = node.env_id, node.seed, (node.context[k] for k in ("wm", "vary", "step"))
        paths = self.model_paths(env_id, seed, wm, vary, step)
        if not os.path.exists(paths[vary]):
            raise RuntimeError(
                f"no {vary} snapshot at step {step} ({paths[vary]}): its checkpoint was trained without "
                f"--snapshot-every {self.snapshot_every(env_id, vary)}; "
                f"delete {self.ckpt(env_id, vary, seed)} to retrain it"
            )
        alpha = self.alpha_record(env_id, seed, wm)
        kwargs = self.itpo_kwargs(env_id, seed, wm, alpha["chosen"], tuning=False, paths=paths, tag=f"_{vary}{step}")
        node.context["models"] = models_info(paths)
        key = self.eval_key(kwargs, self.models_key(node.context["models"]), alpha)
        node.context.update(key=key, alpha=alpha)
        old = read_json(self.curve_path(env_id, seed, wm, vary, step))
        if old is not None and old.get("sweep_key") == key:
            node.status, node.detail = "skipped", "curve point with the same settings on record"
            return None
        node.detail = f"α={alpha['chosen']!r}"
        return (*STAGE_ENTRY["itpo"], kwargs, True)

    def prepare_dataset(self, node: Node) -> tuple | None:
        """Resolve the dataset once in the driver; download it in one task (not in three racing ones)."""
        try:
            import minari

            from common import resolve_dataset
        except ImportError:
            node.status, node.detail = "skipped", "each stage resolves its dataset"
            return None
        try:
            ids, source = resolve_dataset(node.env_id)
        except SystemExit as err:  # no dataset: the message names the command that makes it
            raise RuntimeError(str(err)) from None
        local = set(minari.list_local_datasets())
        if all(i in local for i in ids):
            node.status, node.detail = "skipped", f"{' + '.join(ids)} ({source}) is local"
            return None
        node.detail = f"downloading {' + '.join(ids)}"
        return ("common", "load_dataset", {"env_id": node.env_id, "verbose": True}, False)

    def finish(self, node: Node, out: dict) -> None:
        """Record a finished task: its seconds, and what the driver writes for it."""
        node.seconds = out.get("seconds", float("nan"))
        if not out["ok"]:
            self.fail(node, out["traceback"])
            return
        if node.seed is not None:
            path = self.times_path(node.env_id, node.seed)
            times = read_json(path) or {}
            times[node.stage] = times.get(node.stage, 0.0) + node.seconds
            write_json(path, times)
        result, env_id, seed = out["result"], node.env_id, node.seed
        if "planner" in node.context:
            self.finish_plan(node, result)
        elif node.stage.startswith("tune-"):
            wm, alpha = node.context["wm"], node.context["alpha"]
            score = result["itpo"]["mean"]
            write_json(
                self.tuning_path(env_id, seed, f"{wm}_alpha", alpha),
                {"key": node.context["key"], "score": score, "step_size": alpha, "itpo": result["itpo"]},
            )
            node.detail = f"tuning score {score:.1f}"
        elif node.stage.startswith("curve-"):
            wm, vary, step = (node.context[k] for k in ("wm", "vary", "step"))
            summary = {
                **result,
                "alpha": node.context["alpha"],
                "curve": {"vary": vary, "step": step},
                "models": node.context["models"],
                **self.made_with(env_id),
                "seconds": node.seconds,
                "sweep_key": node.context["key"],
            }
            write_json(self.curve_path(env_id, seed, wm, vary, step), summary)
            d = result.get("paired_difference", {})
            node.detail = (
                f"ITPO {result['itpo']['mean']:.1f}, ReBRAC {result['rebrac']['mean']:.1f}, Δ {d['mean']:+.1f}"
            )
        elif node.stage.startswith("itpo-"):
            wm = node.context["wm"]
            times = read_json(self.times_path(env_id, seed)) or {}
            stages = ["rebrac", WORLD_MODEL_STAGE[wm], "reward"]
            tune = [
                n.stage for n in self.nodes.values() if n.id[:2] == node.id[:2] and n.stage.startswith(f"tune-{wm}-")
            ]
            summary = {
                **result,
                "alpha": node.context["alpha"],
                "models": node.context["models"],
                **self.made_with(env_id),
                "stage_seconds": {
                    **{s: times.get(s) for s in stages},
                    "alpha_tuning": sum(times.get(s, 0.0) for s in tune) if tune else None,
                    "evaluation": times.get(node.stage),
                },
                "sweep_key": node.context["key"],
            }
            write_json(self.summary_path(env_id, seed, wm), summary)
            d = result.get("paired_difference", {})
            node.detail = (
                f"α={node.context['alpha']['chosen']!r}: ITPO {result['itpo']['mean']:.1f}, "
                f"ReBRAC {result['rebrac']['mean']:.1f}, paired Δ {d.get('mean', math.nan):+.1f}"
            )
        node.status = "done"
        self.clear_failure(node)

    def finish_plan(self, node: Node, result: dict) -> None:
        env_id, seed, planner = node.env_id, node.seed, node.context["planner"]
        if node.stage.startswith("match-"):
            write_json(self.match_path(env_id, seed, planner), {"key": node.context["key"], "match": result["match"]})
            m = result["match"]
            node.detail = f"{MATCHED_KNOB[planner]} {m[MATCHED_KNOB[planner]]}: {m['ratio']:.2f}× ITPO's ms per step"
            return
        score = result[planner]["mean"]
        if node.stage.startswith("tune-"):
            value = node.context["value"]
            record = {
                "key": node.context["key"],
                "score": score,
                PLANNER_PARAMETER[planner]: value,
                planner: result[planner],
            }
            write_json(self.tuning_path(env_id, seed, f"{planner}_{PLANNER_PARAMETER[planner]}", value), record)
            node.detail = f"tuning score {score:.1f}"
            return
        times = read_json(self.times_path(env_id, seed)) or {}
        tune = [
            n.stage for n in self.nodes.values() if n.id[:2] == node.id[:2] and n.stage.startswith(f"tune-{planner}-")
        ]
        summary = {
            **result,
            "tuned": node.context["tuned"],
            "budget": "tdmpc2" if node.context.get("tdmpc2") else "matched",
            **(
                {"match": self.match_record(env_id, seed, planner)["match"]}
                if self.args.match_planners and not node.context.get("tdmpc2")
                else {}
            ),
            "models": node.context["models"],
            **self.made_with(env_id),
            "stage_seconds": {
                "tuning": sum(times.get(s, 0.0) for s in tune) if tune and node.context["tuned"] else None,
                "evaluation": times.get(node.stage),
            },
            "sweep_key": node.context["key"],
        }
        write_json(self.plan_path(env_id, seed, node.stage.removeprefix("plan-")), summary)
        d = result.get("paired_difference", {})
        node.detail = f"{planner} {score:.1f}, ReBRAC {result['rebrac']['mean']:.1f}, Δ {d.get('mean', math.nan):+.1f}"

    def fail(self, node: Node, text: str) -> None:
        node.status, node.context["traceback"] = "failed", text
        path = self.failure_path(node)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        node.detail = f"traceback in {path}"

    def clear_failure(self, node: Node) -> None:
        path = self.failure_path(node)
        if os.path.exists(path):
            os.remove(path)

    def run(self) -> None:
        import ray

        remote, started, running, capacity = None, False, {}, 0
        try:
            while True:
                progressed = True
                while progressed:  # settle every node whose dependencies are settled
                    progressed = False
                    for node in self.nodes.values():
                        if node.status != "pending":
                            continue
                        deps = [self.nodes[d] for d in node.deps]
                        if any(d.status in ("pending", "running") for d in deps):
                            continue
                        bad = [d for d in deps if d.status in ("failed", "not run")]
                        if bad:
                            cause = bad[0].detail if bad[0].status == "not run" else f"after {bad[0].stage} failed"
                            node.status, node.detail, progressed = "not run", cause, True
                            self.log(node)
                            continue
                        if remote is not None and len(running) >= capacity:
                            continue  # no free CPU: submitted later, in node order (final rows before curves)
                        progressed = True
                        try:
                            task = self.prepare(node)
                        except Exception as err:  # noqa: BLE001 - e.g. an unreadable checkpoint while hashing, no dataset
                            self.fail(node, "".join(traceback.format_exception(err)))
                            self.log(node)
                            continue
                        if task is None:
                            self.clear_failure(node)
                            self.log(node)
                            continue
                        if remote is None:
                            started = self.start_ray()
                            remote = ray.remote(run_stage)
                            capacity = max(1, int(ray.cluster_resources().get("CPU", 1)))
                        module, entry, kwargs, keep = task
                        ref = remote.options(**self.resources()).remote(module, entry, kwargs, self.workdir, keep)
                        node.status, running[ref], node.context["launched"] = "running", node, time.time()
                        self.log(node, "start" + (f" ({node.detail})" if node.detail else ""))
                if not running:
                    break
                ready, _ = ray.wait(list(running), num_returns=1)
                node = running.pop(ready[0])
                try:
                    out = ray.get(ready[0])
                except Exception as err:  # noqa: BLE001 - the worker died (OOM, segfault): Ray's error is all there is
                    took = time.time() - node.context["launched"]  # the task could not report its own time
                    out = {"ok": False, "traceback": f"{type(err).__name__}: {err}", "seconds": took}
                try:
                    self.finish(node, out)
                except Exception as err:  # noqa: BLE001 - one bad result fails its node, not the sweep
                    self.fail(node, "".join(traceback.format_exception(err)))
                self.log(node)
        except KeyboardInterrupt:
            self.stop_in_flight(running)
            raise
        finally:
            if started:
                ray.shutdown()

    def stop_in_flight(self, running: dict) -> None:
        """Ctrl-C reaches only the driver (Ray's workers sit in their own process group), and ray.shutdown()
        kills them: so pass it on first. Ray raises it in a training task as SIGINT, which the training loops'
        StopOnSignal turns into a checkpoint at the update they are on; an evaluation, which starts over
        anyway (and has no handler, so the signal would not reach it), is killed at once."""
        import ray

        training = [ref for ref, node in running.items() if node.stage in TRAIN_STAGES]
        for ref, node in running.items():
            ray.cancel(ref, force=node.stage not in TRAIN_STAGES)
        if not training:
            return
        print(
            f"[sweep] interrupted: stopping {len(training)} training stage(s) at their next update, waiting up to "
            f"{STOP_WAIT_S} s for their checkpoints (Ctrl-C again kills them)",
            flush=True,
        )
        _, late = ray.wait(training, num_returns=len(training), timeout=STOP_WAIT_S)
        self.late = [running[ref].label for ref in late]

    def start_ray(self) -> bool:
        """Connect to `--address` or start a local Ray; True when this sweep started it (and stops it)."""
        import ray

        if ray.is_initialized():
            return False
        env = {
            "OMP_NUM_THREADS": "1",
            "TQDM_DISABLE": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (REPO, BENCH, os.environ.get("PYTHONPATH")) if p),
        }
        if os.environ.get("MINARI_DATASETS_PATH"):
            env["MINARI_DATASETS_PATH"] = os.path.abspath(os.environ["MINARI_DATASETS_PATH"])
        runtime_env = {"env_vars": env}
        if self.args.address is not None:
            ray.init(address=self.args.address, runtime_env=runtime_env)
        else:
            # a local Ray starts its workers at nice 15 by default: beside any other job they would starve
            os.environ.setdefault("RAY_worker_niceness", "0")
            ray.init(num_cpus=self.args.num_cpus, include_dashboard=False, runtime_env=runtime_env)
        # ray.init's own SIGTERM handler exits at once, leaving the stages in flight to be killed: `kill` gets
        # what Ctrl-C gets (the handler is set after ray.init, which would replace it)
        signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
        return True

    def resources(self) -> dict:
        import torch

        gpus = self.args.gpu_fraction if torch.cuda.is_available() else 0
        return {"num_cpus": 1, "num_gpus": gpus, "max_retries": 0}

    def log(self, node: Node, what: str | None = None) -> None:
        if what is None:
            what = node.status + (f" in {seconds(node.seconds)}" if node.status in ("done", "failed") else "")
            what += f" ({node.detail})" if node.detail else ""
        print(f"[sweep] {node.label}: {what}", flush=True)


def main(args: Args) -> dict:
    """Run the sweep; returns {"statuses": {(env_id, seed, stage): status}, "failed": [...], "root", "seconds"}."""
    budgets, pairs, root = resolve(args)
    if os.environ.get("MINARI_DATASETS_PATH"):  # the stages run in the root: a relative path would move
        os.environ["MINARI_DATASETS_PATH"] = os.path.abspath(os.environ["MINARI_DATASETS_PATH"])
    t0 = time.time()
    print(
        f"[sweep] preset {args.preset}: {len(pairs)} (dataset, seed) runs under {root}\n[sweep] budgets: "
        + ", ".join(f"{k}={v}" for k, v in budgets.items() if k != "per_env"),
        flush=True,
    )
    for env, table in budgets["per_env"].items():
        print(f"[sweep] {env} instead: " + ", ".join(f"{k}={v}" for k, v in table.items()), flush=True)
    n_alphas = 1 if args.step_size is not None else len(args.alpha_grid)
    tdmpc2 = set(parse_pairs(args.tdmpc2_runs, "tdmpc2_runs"))
    per_pair = []
    for e, s in pairs:
        b = Sweep.budgets_of(budgets, e)
        tuned = {p: len(g) if len(g := planner_grid(b, p)) > 1 else 0 for p in args.planners}
        per_pair.append(estimate_seconds(b, 1, args.world_models, n_alphas, tuned, int((e, s) in tdmpc2)))
    cost = {k: sum(c[k] for c in per_pair) for k in per_pair[0]}
    cpus = args.num_cpus or os.cpu_count() or 1
    print(
        f"[sweep] expected cost from scratch: {sum(cost.values()) / 3600:.1f} CPU-hours, about "
        f"{sum(cost.values()) / 3600 / min(cpus, 2 * len(pairs)):.1f} h on {cpus} CPU(s) ("
        + ", ".join(f"{k} {v / 3600:.1f}" for k, v in cost.items())
        + " CPU-h; rates of a 2-core AMD EPYC, fp32, full-length episodes: an upper bound there)",
        flush=True,
    )
    sweep = Sweep(args, budgets, pairs, root)
    previous = signal.getsignal(signal.SIGTERM)  # start_ray() makes `kill` stop the sweep as Ctrl-C does
    try:
        sweep.run()
    except KeyboardInterrupt:  # what finished is on disk; one line, not Ray's traceback
        stopped = [n.label for n in sweep.nodes.values() if n.status == "running"]
        done = sum(n.status in ("done", "skipped") for n in sweep.nodes.values())
        late = ", ".join(sweep.late)
        late = f" ({late} did not stop within {STOP_WAIT_S} s: from its last periodic one)" if late else ""
        sys.exit(
            f"error: sweep interrupted: {done} stage(s) done or on record are kept under {root}; stopped "
            f"{len(stopped)} in flight ({', '.join(stopped) or 'none'}): rerun the same command to resume "
            f"(training stages continue from the checkpoint they wrote as they stopped{late}, "
            "evaluations start over)"
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    wall = time.time() - t0
    failed = [n for n in sweep.nodes.values() if n.status == "failed"]
    print(f"\n[sweep] wall time {wall:.0f}s ({wall / 3600:.2f} h)")
    for node in sweep.nodes.values():
        took = f" {seconds(node.seconds)}" if node.status in ("done", "failed") else ""
        print(
            f"  {node.env_id:<28} seed {'-' if node.seed is None else node.seed!s:<4} {node.stage:<26} "
            f"{node.status}{took}" + (f"  ({node.detail})" if node.detail else "")
        )
    for node in failed:
        print(f"\n[sweep] FAILED {node.label} — {sweep.failure_path(node)}:\n{node.context['traceback']}")
    if args.report:
        import report

        try:
            report.main(report.Args(root=root, out=args.out or os.path.join(root, "results")))
        except SystemExit as err:  # its one-line error, e.g. no row finished yet: the stages' results stand
            print(f"[sweep] no report: {str(err.code).removeprefix('error: ')}")
        except Exception:  # noqa: BLE001 - the stages' results stand without the report
            print(f"[sweep] the report failed:\n{traceback.format_exc(limit=-1)}")
    return {
        "statuses": {n.id: n.status for n in sweep.nodes.values()},
        "failed": [n.id for n in failed],
        "root": root,
        "seconds": wall,
        "budgets": budgets,
    }


if __name__ == "__main__":
    result = main(tyro.cli(Args))
    sys.exit(1 if result["failed"] else 0)
