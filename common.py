"""What every stage shares: D4RL names and envs, dataset resolution and loading, checkpoints,
seeding, evaluation episodes and the supervised training loop.

One definition of each: the stage scripts import from here, and nothing imports the stages'
dataset-making code (`collect_dataset.py`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import math
import os
import platform
import random
import shlex
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
from torch.func import functional_call, vmap
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

# A small machine shared by several torch processes slows down 30–70× when each one starts a thread
# per core; one thread each cannot oversubscribe. OMP_NUM_THREADS raises it.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)

# ---------------------------------------------------------------------------------------------
# Names, environments, reference scores
# ---------------------------------------------------------------------------------------------
MUJOCO_ENVS = {"halfcheetah": "HalfCheetah-v5", "hopper": "Hopper-v5", "walker2d": "Walker2d-v5"}
MUJOCO_KINDS = ["random", "medium", "expert", "medium-expert", "medium-replay", "full-replay"]
ANTMAZE_KINDS = ["umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse"]
ENV_IDS = [f"{e}-{k}" for e in MUJOCO_ENVS for k in MUJOCO_KINDS] + [f"antmaze-{k}" for k in ANTMAZE_KINDS]

# D4RL v2 reference returns (random policy, expert policy) for the normalised score.
REF_SCORES = {
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "antmaze": (0.0, 1.0),  # success rate
}

# AntMaze evaluation mazes, as Minari's D4RL AntMaze datasets declare them in their eval_env_spec
# (minari-dataset-generation-scripts, scripts/D4RL/antmaze/create_antmaze_dataset.py, EVAL_ENV_MAPS):
# start cell r, goal cell g. Minari's umaze evaluation maze is the mirror image of the maze its umaze
# data were collected in (Minari issue #304); the published sets are evaluated in it all the same.
_r, _g = "r", "g"
ANTMAZE_MAPS = {
    "umaze": [[1, 1, 1, 1, 1], [1, 0, 0, _r, 1], [1, 0, 1, 1, 1], [1, 0, 0, _g, 1], [1, 1, 1, 1, 1]],
    "medium": [
        [1, 1, 1, 1, 1, 1, 1, 1],
        [1, _r, 0, 1, 1, 0, 0, 1],
        [1, 0, 0, 1, 0, 0, 0, 1],
        [1, 1, 0, 0, 0, 1, 1, 1],
        [1, 0, 0, 1, 0, 0, 0, 1],
        [1, 0, 1, 0, 0, 1, 0, 1],
        [1, 0, 0, 0, 1, 0, _g, 1],
        [1, 1, 1, 1, 1, 1, 1, 1],
    ],
    "large": [
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        [1, _r, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
        [1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1],
        [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1],
        [1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1],
        [1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1],
        [1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 1],
        [1, 0, 0, 1, 0, 0, 0, 1, 0, _g, 0, 1],
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    ],
}
# D4RL's episode limits (and gymnasium-robotics' registered ones): 700 steps in the umaze, 1000 otherwise.
ANTMAZE_MAX_EPISODE_STEPS = {"umaze": 700, "medium": 1000, "large": 1000}
ANTMAZE_GYM_IDS = {"umaze": "AntMaze_UMaze-v5", "medium": "AntMaze_Medium-v5", "large": "AntMaze_Large-v5"}


def require(condition: bool, message: str) -> None:
    """Refuse bad input with a one-line error and a non-zero exit (tyro calls Args.__post_init__ at parse time)."""
    if not condition:
        sys.exit(f"error: {message}")


def require_positive(args, *fields: str) -> None:
    """Each named field of `args` must be a finite number above zero (None means "the default")."""
    for name in fields:
        value = getattr(args, name)
        require(
            value is None or (value > 0 and math.isfinite(value)),
            f"--{name.replace('_', '-')} must be a positive number, not {value}",
        )


def require_device(args) -> None:
    """--device cuda only where torch sees a CUDA device (else torch fails deep inside, with a traceback)."""
    require(
        not str(args.device).startswith("cuda") or torch.cuda.is_available(),
        f"--device {args.device}: torch sees no CUDA device here; use --device cpu",
    )


def require_snapshot_every(args) -> None:
    """--snapshot-every: 0 (none) or a multiple of --eval-every, so that every snapshot records its evaluation."""
    n = args.snapshot_every
    require(
        n == 0 or (n > 0 and n % args.eval_every == 0),
        f"--snapshot-every must be 0 or a positive multiple of --eval-every ({args.eval_every}), not {n}",
    )


def parse_env_id(env_id: str) -> tuple[str, str]:
    """'hopper-medium-replay' -> ('hopper', 'medium-replay'); exits with the valid names if unknown."""
    if env_id not in ENV_IDS:
        sys.exit(f"error: unknown --env-id {env_id!r}; valid names: {', '.join(ENV_IDS)}")
    env, kind = env_id.split("-", 1)
    return env, kind


def make_env(env_id: str, flatten: bool = True, **kwargs) -> gym.Env:
    """The gymnasium env of a D4RL name (AntMaze: our hand-written evaluation maze, its dict observations
    flattened unless flatten=False). Evaluation goes through `make_eval_env_fn`, which prefers the
    dataset's own eval_env_spec for AntMaze."""
    env, kind = parse_env_id(env_id)
    if env in MUJOCO_ENVS:
        return gym.make(MUJOCO_ENVS[env], **kwargs)
    import gymnasium_robotics

    gym.register_envs(gymnasium_robotics)
    size = antmaze_size(env_id)
    maze_env = gym.make(
        ANTMAZE_GYM_IDS[size],
        maze_map=ANTMAZE_MAPS[size],
        continuing_task=True,
        reset_target=False,
        max_episode_steps=ANTMAZE_MAX_EPISODE_STEPS[size],
        include_cfrc_ext_in_observation=False,  # 27-d ant observation, as D4RL's and Minari's datasets
        **kwargs,
    )
    return gym.wrappers.FlattenObservation(maze_env) if flatten else maze_env


def antmaze_size(env_id: str) -> str:
    """'antmaze-medium-play' -> 'medium'."""
    return parse_env_id(env_id)[1].split("-")[0]


def make_eval_env_fn(env_id: str, dataset_id: str | None = None, dataset=None, verbose: bool = True):
    """The one rule for the evaluation env: returns `make(**kwargs) -> env`.

    AntMaze: the env the dataset declares for evaluation (its eval_env_spec, else its env_spec), so a
    published dataset is evaluated in the benchmark's maze, start, goal and episode limit, and a local
    one in the spec collect_dataset.py wrote; D4RL's limit (700 umaze, 1000 otherwise) where the spec
    has none; observations flattened. `dataset` is the loaded MinariDataset, else it is resolved from
    (env_id, dataset_id). MuJoCo: `make_env(env_id)`."""
    env, _ = parse_env_id(env_id)
    if env in MUJOCO_ENVS:
        return lambda **kw: make_env(env_id, **kw)
    if dataset is None:
        ids, source = resolve_dataset(env_id, dataset_id)
        dataset = open_dataset(ids[0], env_id, source)
    import gymnasium_robotics

    gym.register_envs(gymnasium_robotics)
    limit = ANTMAZE_MAX_EPISODE_STEPS[antmaze_size(env_id)]

    def make(flatten: bool = True, **kwargs) -> gym.Env:
        maze_env = dataset.recover_environment(eval_env=True, **kwargs)  # its eval_env_spec, else its env_spec
        if maze_env.spec is None or maze_env.spec.max_episode_steps is None:
            maze_env = gym.wrappers.TimeLimit(maze_env, limit)
        return gym.wrappers.FlattenObservation(maze_env) if flatten else maze_env

    if verbose:
        probe = make()
        info = describe_env(probe)
        probe.close()
        cells = f", start {info.get('reset_cells')}, goal {info.get('goal_cells')}" if "maze_map" in info else ""
        print(
            f"[eval] {env_id}: {info['id']} from the eval_env_spec of {dataset.id}, "
            f"{info['max_episode_steps']} steps{cells}"
        )
    return make


def describe_env(env: gym.Env) -> dict:
    """What an evaluation env is, read from the env itself: gymnasium id, episode limit and, for a maze,
    the map it built with its start (r) and goal (g) cells."""
    spec = env.spec
    info = {
        "id": spec.id if spec else type(env.unwrapped).__name__,
        "max_episode_steps": spec.max_episode_steps if spec else None,
    }
    maze = getattr(env.unwrapped, "maze", None)
    if maze is not None:
        maze_map = [[c if isinstance(c, str) else int(c) for c in row] for row in maze.maze_map]
        cells = lambda mark: [[i, j] for i, row in enumerate(maze_map) for j, c in enumerate(row) if c in mark]  # noqa: E731
        info.update(
            maze_map=maze_map,
            reset_cells=cells(("r", "c")),
            goal_cells=cells(("g", "c")),
            continuing_task=bool(env.unwrapped.continuing_task),
            reset_target=bool(env.unwrapped.reset_target),
        )
    return info


def flatten_observations(observations, observation_space: gym.Space) -> np.ndarray:
    """Batched version of `gym.spaces.flatten`: AntMaze dicts become one vector in the space's key
    order (achieved_goal 2, desired_goal 2, observation 27), as `FlattenObservation` does."""
    if isinstance(observation_space, gym.spaces.Dict):
        return np.concatenate([np.asarray(observations[k]) for k in observation_space.spaces], axis=-1)
    return np.asarray(observations)


def normalized_score(env_id: str, episode_returns) -> np.ndarray:
    """100 · (R − min) / (max − min) with D4RL's reference returns (AntMaze: R is 1 for a success)."""
    lo, hi = REF_SCORES[parse_env_id(env_id)[0]]
    return 100.0 * (np.asarray(episode_returns, dtype=np.float64) - lo) / (hi - lo)


def episode_outcome(env_id: str, episode_return: float, success: bool) -> float:
    """The quantity the normalised score is computed from: the return, or AntMaze's success (0/1)."""
    return float(success) if env_id.startswith("antmaze") else float(episode_return)


# ---------------------------------------------------------------------------------------------
# Dataset resolution and loading
# ---------------------------------------------------------------------------------------------
def datasets_root() -> str:
    """Where Minari keeps datasets (it reads MINARI_DATASETS_PATH on every call, so do we)."""
    return os.environ.get("MINARI_DATASETS_PATH", os.path.join(os.path.expanduser("~"), ".minari", "datasets"))


def local_dataset_id(env_id: str) -> str:
    env, kind = parse_env_id(env_id)
    return f"local/{env}/{kind}-v0"


def published_dataset_ids(env_id: str) -> list[str]:
    """Minari's published ids for a D4RL name ([] where Minari publishes none)."""
    env, kind = parse_env_id(env_id)
    if env == "antmaze":
        return [f"D4RL/antmaze/{kind}-v1"]
    if kind in ("medium", "expert"):
        return [f"mujoco/{env}/{kind}-v0"]
    if kind == "medium-expert":  # the union of the two published sets
        return [f"mujoco/{env}/medium-v0", f"mujoco/{env}/expert-v0"]
    return []


def collect_command(env_id: str) -> str:
    """The command that makes the local dataset of a D4RL name (AntMaze: the maze's two sets)."""
    env, _ = parse_env_id(env_id)
    return f"python collect_dataset.py --env {env if env != 'antmaze' else 'antmaze-' + antmaze_size(env_id)}"


def resolve_dataset(env_id: str, dataset_id: str | None = None) -> tuple[list[str], str]:
    """The Minari ids to load for `env_id` and where they come from ('explicit', 'local', 'download')."""
    import minari

    parse_env_id(env_id)
    if dataset_id:
        return [dataset_id], "explicit"
    local_id = local_dataset_id(env_id)
    if local_id in minari.list_local_datasets():
        return [local_id], "local"
    remote = published_dataset_ids(env_id)
    if remote:
        return remote, "download"
    sys.exit(
        f"error: no dataset for {env_id}: {local_id} is not under MINARI_DATASETS_PATH={datasets_root()} "
        f"and Minari publishes none; make it with: {collect_command(env_id)} "
        f"(or point MINARI_DATASETS_PATH to the folder where you made it)"
    )


def download_errors() -> tuple[type[Exception], ...]:
    """What a failed download raises, and only that (a bug elsewhere keeps its traceback): ImportError
    (huggingface_hub, minari[hf], missing), ValueError (Minari: no such dataset or version on the server),
    OSError (no network, the hub's HTTP errors, offline mode, a full disk) and the HTTP client's own
    errors, which are not OSErrors (huggingface_hub ≥ 1 uses httpx, ≥ 2 httpx2)."""
    errors: list[type[Exception]] = [ImportError, ValueError, OSError]
    for client in ("httpx", "httpx2"):
        try:
            errors.append(importlib.import_module(client).HTTPError)
        except ImportError:
            pass
    return tuple(errors)


def open_dataset(dataset_id: str, env_id: str, source: str):
    """minari.load_dataset of one id, downloaded first (Minari's download, from its Hugging Face hub) when
    it is not under MINARI_DATASETS_PATH. A local/ id that is missing, or a download that fails, exits
    with one line: the dataset, the reason, and the collect_dataset.py command that makes it locally."""
    import minari

    folder = os.path.join(datasets_root(), dataset_id)
    remake = f"make it locally with: {collect_command(env_id)}" + (
        " and drop --dataset-id" if source == "explicit" else ""
    )
    if os.path.exists(os.path.join(folder, "data")):
        return minari.load_dataset(dataset_id)
    require(
        not dataset_id.startswith("local/"),
        f"dataset {dataset_id} is not under MINARI_DATASETS_PATH={datasets_root()}; {remake}",
    )
    existed = os.path.exists(folder)
    try:
        return minari.load_dataset(dataset_id, download=True)
    except Exception as err:
        if not isinstance(err, download_errors()):
            raise
        if not existed:  # a half-downloaded folder would be taken for the dataset next time
            shutil.rmtree(folder, ignore_errors=True)
        reason = " ".join(str(err).split())[:300] or "no message"
        sys.exit(
            f"error: cannot download dataset {dataset_id} for {env_id} from Minari's server "
            f"({type(err).__name__}: {reason}); {remake} "
            f"(or set MINARI_DATASETS_PATH to a folder that holds {dataset_id})"
        )


def episodes_to_arrays(episodes, observation_space: gym.Space) -> dict[str, np.ndarray]:
    """Minari episodes -> flat transition arrays. next_observations[i] is observations[i+1] of the
    same episode; terminals (the MDP ended) and timeouts (the episode was cut) are kept apart."""
    parts = {k: [] for k in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")}
    for ep in episodes:
        obs = flatten_observations(ep.observations, observation_space)
        parts["observations"].append(obs[:-1])
        parts["next_observations"].append(obs[1:])
        parts["actions"].append(np.asarray(ep.actions))
        parts["rewards"].append(np.asarray(ep.rewards))
        parts["terminals"].append(np.asarray(ep.terminations))
        parts["timeouts"].append(np.asarray(ep.truncations))
    return {k: np.concatenate(v).astype(np.float32) for k, v in parts.items()}


def load_dataset(env_id: str, dataset_id: str | None = None, verbose: bool = True):
    """Arrays of one D4RL dataset, its evaluation env maker (`make_eval_env_fn`) and normalised-score function.

    Returns (data, make_eval_env, score) with data a dict of float32 arrays
    observations [N, obs_dim], actions [N, act_dim], rewards [N], next_observations [N, obs_dim],
    terminals [N], timeouts [N].
    """
    ids, source = resolve_dataset(env_id, dataset_id)
    if verbose:
        print(f"[data] {env_id} -> {' + '.join(ids)} ({source})")
    datasets = [open_dataset(i, env_id, source) for i in ids]
    data = {}
    for ds in datasets:
        part = episodes_to_arrays(ds.iterate_episodes(), ds.observation_space)
        data = part if not data else {k: np.concatenate([data[k], part[k]]) for k in data}

    make_eval_env = make_eval_env_fn(env_id, dataset=datasets[0], verbose=verbose)
    env = make_eval_env()
    want = (env.observation_space.shape[0], env.action_space.shape[0])
    got = (data["observations"].shape[1], data["actions"].shape[1])
    env.close()
    if want != got:
        sys.exit(
            f"error: dataset {' + '.join(ids)} has (obs_dim, act_dim) = {got} but the {env_id} env has {want}: "
            f"this dataset belongs to another environment; pass the right --dataset-id."
        )
    if verbose:
        print(
            f"[data] {len(data['rewards'])} transitions, obs_dim {got[0]}, act_dim {got[1]}, "
            f"{int(data['terminals'].sum())} terminals, {int(data['timeouts'].sum())} timeouts"
        )
    return data, make_eval_env, (lambda returns: normalized_score(env_id, returns))


# ---------------------------------------------------------------------------------------------
# Checkpoints: one path rule, one table of the commands that make them
# ---------------------------------------------------------------------------------------------
STAGE_SCRIPTS = {
    "rebrac": "rebrac.py",
    "dynamics": "train_dynamics.py",
    "reward": "train_reward.py",
    "meanflow": "meanflow_onestep.py",
}


def checkpoint_path(env_id: str, stage: str, seed: int, root: str = "checkpoints", step: int | None = None) -> str:
    """Where `stage` (rebrac | dynamics | reward | meanflow) keeps its checkpoint for a dataset and seed;
    with `step`, the snapshot that `--snapshot-every` kept at that step."""
    path = f"{root}/{env_id}/{stage}_seed{seed}.pt"
    return path if step is None else snapshot_path(path, step)


def snapshot_path(path: str, step: int) -> str:
    """The snapshot of checkpoint `path` at `step`: rebrac_seed0.pt -> rebrac_seed0_step50000.pt."""
    stem, ext = os.path.splitext(path)
    return f"{stem}_step{step}{ext or '.pt'}"


def models_info(paths: dict) -> dict:
    """What each checkpoint behind a result was ({stage: path} -> {stage: path, step, held-out metrics; ReBRAC:
    its last evaluation score}), as the checkpoints recorded it: the budgets a summary reports with its scores."""
    out = {}
    for stage, path in paths.items():
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        metrics = {"score": ckpt.get("score")} if stage == "rebrac" else dict(ckpt.get("metrics", {}))
        metrics = {k: None if v is None else float(v) for k, v in metrics.items()}
        out[stage] = {"path": path, "step": int(ckpt["step"]), "metrics": metrics}
    return out


def make_command(stage: str, env_id: str, seed: int = 0, path: str | None = None) -> str:
    """The command that (re)makes a stage's checkpoint (at `path`, where it is not the default one)."""
    where = "" if path is None or path == checkpoint_path(env_id, stage, seed) else f" --checkpoint {shlex.quote(path)}"
    return f"python {STAGE_SCRIPTS[stage]} --env-id {env_id} --seed {seed}{where}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def atomic_torch_save(obj, path: str) -> None:
    """Write to a temporary file, then rename: a crash never leaves a half-written checkpoint."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def weights_digest(state_dict: dict) -> str:
    """A short fingerprint of a network's weights: which ReBRAC actor tilted a MeanFlow, say, and not only
    at which step (two ReBRACs at one step, e.g. with other β_a, differ here)."""
    h = hashlib.sha256()
    for name, tensor in state_dict.items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def load_checkpoint(path: str, env_id: str, stage: str, seed: int = 0) -> dict:
    """Load a stage's checkpoint; a missing, unreadable or other-dataset one exits with the command
    that makes the right one."""
    remake = make_command(stage, env_id, seed, path)
    if not os.path.exists(path):
        sys.exit(f"error: no {stage} checkpoint at {path}; make it with: {remake}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, a text file, a pickle of foreign classes, ...
        sys.exit(f"error: {path} is not a readable {stage} checkpoint ({type(err).__name__}). Remake it with: {remake}")
    if not isinstance(ckpt, dict) or ckpt.get("env_id") != env_id:
        found = ckpt.get("env_id") if isinstance(ckpt, dict) else type(ckpt).__name__
        sys.exit(
            f"error: {path} was trained on {found!r}, not {env_id!r}. "
            f"Point to the right file or make one with: {remake}"
        )
    if ckpt.get("stage", stage) != stage:  # checkpoints written before the stage was saved pass
        sys.exit(
            f"error: {path} is a {ckpt['stage']} checkpoint, not a {stage} one. "
            f"Point to the right file or make one with: {remake}"
        )
    return ckpt


class StopOnSignal:
    """SIGINT (Ctrl-C) and SIGTERM within the block are noted instead of raised, so that a training loop
    finishes its current update, writes its checkpoint and ends with `exit()`: no traceback, nothing lost.
    A second signal raises KeyboardInterrupt as usual (checkpoints are atomic: none is left half-written).
    Outside the main thread (where Python cannot install handlers) it does nothing."""

    def __init__(self, notice: str | None = None):
        self.signal, self.previous, self.notice = None, {}, notice  # notice: printed when a signal comes

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self._note) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _note(self, signum, frame) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        if self.notice:
            print(f"{self.signal}: {self.notice}", flush=True)

    def __bool__(self) -> bool:
        return self.signal is not None

    def exit(self, stage: str, done: str, resume_flag: str | None = "--resume") -> None:
        """One line, the command that continues the run, exit status 130 (as a shell reports Ctrl-C)."""
        print(f"[{stage}] {self.signal}: stopped after {done}; continue with: {rerun_command(resume_flag)}", flush=True)
        sys.exit(130)


def rerun_command(extra_flag: str | None = None) -> str:
    """The command line this process was started with (plus `extra_flag` if it lacks it), to paste."""
    argv = sys.argv[1:] + ([extra_flag] if extra_flag and extra_flag not in sys.argv[1:] else [])
    script = sys.argv[0] if sys.argv and sys.argv[0].endswith(".py") else None
    if script is not None and os.path.dirname(os.path.abspath(script)) != os.path.dirname(os.path.abspath(__file__)):
        script = None  # another program's (a Ray worker's, pytest's): not a stage script beside this file
    if script is None:  # called as a library (the sweep, a test): the caller knows its own call
        return f"the same call{f' with {extra_flag}' if extra_flag else ''}"
    return " ".join(shlex.quote(a) for a in ["python", script, *argv])


def resume_checkpoint(path: str, env_id: str, stage: str, seed: int) -> dict | None:
    """For --resume: the checkpoint to continue from, or None (said out loud) when there is none."""
    if not os.path.exists(path):
        print(f"[{stage}] --resume: no checkpoint at {path}; starting from scratch")
        return None
    return load_checkpoint(path, env_id, stage, seed)


# Flags that --resume may change: budgets, bookkeeping, paths, device. Any other one would be ignored
# (the optimiser's saved state keeps its learning rate) or would not load (another network size).
RESUME_MAY_CHANGE = ("resume", "checkpoint", "device", "compile", "precision", "eval_every", "snapshot_every")


def check_resume(ckpt: dict, path: str, args, total_field: str, may_change: tuple[str, ...] = ()) -> bool:
    """For --resume: refuse a checkpoint trained with other settings, or already past --<total_field>.
    Returns whether any training is left (False: the checkpoint is already at the requested step)."""
    saved, asked = ckpt.get("args", {}), asdict(args)
    allowed = {*RESUME_MAY_CHANGE, total_field, *may_change}
    changed = [k for k in asked if k not in allowed and k in saved and saved[k] != asked[k]]
    flag = lambda k: "--" + k.replace("_", "-")  # noqa: E731
    require(
        not changed,
        f"--resume: {path} was trained with "
        + ", ".join(f"{flag(k)} {saved[k]} (this run: {asked[k]})" for k in changed)
        + "; resume with its settings, or drop --resume (or pass another --checkpoint) to start anew",
    )
    total = asked[total_field]
    require(
        ckpt["step"] <= total,
        f"--resume: {path} is already at step {ckpt['step']}, past {flag(total_field)} {total}; "
        f"raise {flag(total_field)} or drop --resume",
    )
    return ckpt["step"] < total


def save_rng_state(device: str) -> dict:
    """The RNG states that draw the batches: the CPU's and, on CUDA, the device's."""
    state = {"cpu": torch.get_rng_state()}
    if str(device).startswith("cuda"):
        state["cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return state


def load_rng_state(state, device: str) -> None:
    if isinstance(state, torch.Tensor):  # checkpoints written before the device state was kept
        state = {"cpu": state}
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and str(device).startswith("cuda"):
        torch.cuda.set_rng_state(state["cuda"], torch.device(device))


# ---------------------------------------------------------------------------------------------
# Evaluation episodes on the real env (ReBRAC's evaluation and ITPO's)
# ---------------------------------------------------------------------------------------------
def run_episodes(
    make_env,
    env_id: str,
    seeds: list[int],
    act,
    max_episode_steps: int | None = None,
    on_step=None,
    progress: str | None = None,
    probe=None,
) -> dict[str, list]:
    """Run one episode per seed, all envs in lockstep. `act(obs [N, d] float32, alive [N] bool)`
    returns actions [N, act_dim]; only the alive rows are used (finished episodes keep their row,
    so `act` always sees N rows). AntMaze episodes end at the first success, as D4RL's did.
    `probe(envs, obs, alive, actions)`, if given, runs after `act` and before the envs step: it may
    read the envs' states (itpo_eval's --ground-truth) but must not change them.
    Returns per-episode returns, lengths, successes, score outcomes and the env (`describe_env`)."""
    envs = [make_env() for _ in seeds]
    obs = np.stack([env.reset(seed=s)[0] for env, s in zip(envs, seeds)]).astype(np.float32)
    alive = np.ones(len(seeds), bool)
    returns, lengths, successes = np.zeros(len(seeds)), np.zeros(len(seeds), int), np.zeros(len(seeds), bool)
    limit = max_episode_steps or envs[0].spec.max_episode_steps or 1000
    bar = tqdm(total=limit, desc=progress, mininterval=5, disable=progress is None)
    while alive.any():
        actions = np.asarray(act(obs, alive))
        if probe is not None:
            probe(envs, obs, alive, actions)
        for i in np.flatnonzero(alive):
            o, r, term, trunc, info = envs[i].step(actions[i])
            returns[i] += r
            lengths[i] += 1
            successes[i] |= bool(info.get("success", False))
            obs[i] = o
            if term or trunc or lengths[i] >= limit or (env_id.startswith("antmaze") and successes[i]):
                alive[i] = False
        bar.update(1)
        bar.set_postfix(alive=int(alive.sum()), refresh=False)
        if on_step is not None:
            on_step()
    bar.close()
    described = describe_env(envs[0])
    for env in envs:
        env.close()
    outcomes = [episode_outcome(env_id, r, s) for r, s in zip(returns, successes)]
    return {
        "returns": returns.tolist(),
        "lengths": lengths.tolist(),
        "successes": successes.tolist(),
        "outcomes": outcomes,
        "env": described,
    }


# ---------------------------------------------------------------------------------------------
# Precision: fp32, or the forward passes under bf16 autocast
# ---------------------------------------------------------------------------------------------
Precision = Literal["fp32", "bf16"]


def autocast(precision: Precision, device) -> contextlib.AbstractContextManager:
    """The context the forward passes run in: nothing at all for fp32 (the computation is exactly the
    same as without it); for bf16, torch.autocast: matrix products in bfloat16, while the weights, their
    gradients, the optimiser state and the normaliser stay float32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def native_bf16(device) -> bool:
    """Whether `device` multiplies bf16 matrices in hardware: a GPU with bf16 tensor cores, or a CPU with
    AVX512-BF16 or AMX. Elsewhere (e.g. AVX2-only CPUs) bf16 is emulated and much slower than fp32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def device_name(device) -> str:
    """The GPU's name, or the CPU's model and its vector units (what a timing was measured on)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    units = "bf16 units" if native_bf16(device) else "no bf16 units"
    return f"{name} ({torch.backends.cpu.get_cpu_capability()}, {units})"


def check_precision(precision: Precision, device, stage: str) -> None:
    """The stage's start line: the device (a CPU's kind and whether its bf16 is native), the precision and
    threads; and a warning when bf16 is asked where it is emulated (the result is what was asked, only slower)."""
    print(f"[{stage}] on {device_name(device)}, {precision}, {torch.get_num_threads()} thread(s)")
    if precision == "bf16" and not native_bf16(device):
        print(
            f"[{stage}] warning: --precision bf16 on {device_name(device)}: this device has no bf16 "
            f"matrix units, so bf16 is emulated and runs several times slower than fp32; use --precision fp32 here"
        )


# ---------------------------------------------------------------------------------------------
# The imagined return Ĵ: one definition for ITPO (itpo_eval.py), the action-space planners
# (plan_eval.py) and the ground truth (ground_truth.py). A rollout starts at the real state
# s̃_0 = s_t and runs H steps in the learned models, s̃_{j+1} = f_θ(s̃_j, ã_j, ε_j), with ã_j = π_ψ(s̃_j)
# (ITPO) or a given action sequence (the planners):
#   Ĵ = Σ_{j<H} γ^j w_j r_ξ(s̃_j, ã_j) + γ^H w_H min_i Q_φ,i(s̃_H, π_ψ(s̃_H)),
# w_j the probability that the imagined episode is still alive (1 where the reward model has no
# termination head).
# ---------------------------------------------------------------------------------------------
def batched_policy(actor: torch.nn.Module):
    """π_ψ with one ψ per episode: params {name: [N, ...]}, obs [N, ..., d] -> actions [N, ..., m]."""
    return vmap(lambda params, obs: functional_call(actor, params, (obs,)))


def imagined_returns(
    policy,
    params,
    critic,
    world,
    reward,
    s0: torch.Tensor,
    eps: torch.Tensor,
    gamma: float,
    reward_scale: float = 1.0,
    precision: Precision = "fp32",
    actions: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Ĵ per rollout [N, M], the actions ã_j it took [N, M, H, m]): s0 [N, d], eps [N, M, H, *noise_shape];
    `actions` [N, M, H, m] replaces π_ψ(s̃_j) for j < H (the terminal value keeps π_ψ(s̃_H)).

    Ĵ is in the environment's reward units: Q_φ learned on rewards × `reward_scale` (AntMaze: 100), so
    the terminal value is divided by it. The step size α then means the same on every family (in the
    critic's units AntMaze's ∇ψĴ was 100–400× MuJoCo's, and the grid's smallest α lost 32 points).

    `precision` bf16 runs only the world model f_θ under autocast — where nearly all the work is
    (H·K denoiser passes against H + 1 of π_ψ and r_ξ and one of Q_φ); its output returns to fp32
    (ours already cast their network's output back, so their samplers' arithmetic is fp32 too).

    The imagined episode may end (hopper and walker2d fall): w_j = Π_{i<j} (1 − p_done(s̃_i, ã_i))
    weights the reward of step j and the terminal value, so a fall earns nothing after it."""
    n, m, horizon = eps.shape[:3]
    s = s0[:, None, :].expand(n, m, s0.shape[-1])
    alive = torch.ones(n, m, device=s0.device, dtype=s0.dtype)
    ret = torch.zeros(n, m, device=s0.device, dtype=s0.dtype)
    taken = []
    for j in range(horizon):
        a = policy(params, s) if actions is None else actions[:, :, j]  # ã_j = π_ψ(s̃_j), or the plan's
        taken.append(a)
        r, done_logit = reward(s, a)  # r_ξ(s̃_j, ã_j)
        ret = ret + gamma**j * alive * r
        if done_logit is not None:
            alive = alive * (1 - torch.sigmoid(done_logit))
        with autocast(precision, s0.device):
            s = world.f(s, a, eps[:, :, j]).to(s0.dtype)  # s̃_{j+1} = f_θ(s̃_j, ã_j, ε_j)
    q = critic(s, policy(params, s)).min(0).values / reward_scale  # min_i Q_φ,i(s̃_H, π_ψ(s̃_H)), in r's units
    return ret + gamma**horizon * alive * q, torch.stack(taken, 2)


def imagine_rollout(policy, params, critic, world, reward, s0, eps, gamma, reward_scale=1.0, precision="fp32"):
    """ITPO's Ĵ_t(ψ) per episode [N]: the mean over the M particles of the rollouts of π_ψ."""
    returns, _ = imagined_returns(policy, params, critic, world, reward, s0, eps, gamma, reward_scale, precision)
    return returns.mean(-1)


# ---------------------------------------------------------------------------------------------
# Building blocks of the learned models (the DDPM, the reward model and MeanFlow)
# ---------------------------------------------------------------------------------------------
TIME_EMBEDDING_DIM = 32  # width of one sinusoidal time embedding


def mlp(in_dim: int, out_dim: int, hidden_dim: int, num_layers: int, act=nn.SiLU) -> nn.Sequential:
    layers, d = [], in_dim
    for _ in range(num_layers):
        layers += [nn.Linear(d, hidden_dim), act()]
        d = hidden_dim
    return nn.Sequential(*layers, nn.Linear(d, out_dim))


def time_embedding(t: torch.Tensor, dim: int = TIME_EMBEDDING_DIM) -> torch.Tensor:
    """Sinusoidal embedding of a (continuous or integer) time, t: [...] -> [..., dim]."""
    t = t if t.is_floating_point() else t.float()
    freqs = torch.exp(-math.log(1000.0) * torch.arange(dim // 2, device=t.device, dtype=t.dtype) / (dim // 2))
    angles = t.unsqueeze(-1) * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class Normalizer(nn.Module):
    """Dataset statistics of states (and, for world models, of state deltas), stored as buffers."""

    def __init__(self, obs_dim: int):
        super().__init__()
        for name in ("obs_mean", "delta_mean"):
            self.register_buffer(name, torch.zeros(obs_dim))
        for name in ("obs_std", "delta_std"):
            self.register_buffer(name, torch.ones(obs_dim))

    def fit(self, obs: np.ndarray, next_obs: np.ndarray | None = None) -> "Normalizer":
        """States' mean and std; with next_obs, the deltas' too (the reward model has none)."""
        stats = [("obs_mean", obs.mean(0)), ("obs_std", obs.std(0) + 1e-3)]
        if next_obs is not None:
            delta = next_obs - obs
            stats += [("delta_mean", delta.mean(0)), ("delta_std", delta.std(0) + 1e-3)]
        for name, value in stats:
            getattr(self, name).copy_(torch.as_tensor(value))
        return self

    def obs(self, s: torch.Tensor) -> torch.Tensor:
        return (s - self.obs_mean) / self.obs_std


def one_step_rmse(model, held_out: dict[str, torch.Tensor], seed: int = 0) -> float:
    """RMSE of one sampled next state against the true one (raw units, all dims) on held-out data."""
    g = torch.Generator(device=held_out["observations"].device).manual_seed(seed)
    s, a = held_out["observations"], held_out["actions"]
    eps = torch.randn((s.shape[0], *model.noise_shape), generator=g, device=s.device)
    with torch.no_grad():
        pred = model.f(s, a, eps)
    return float(((pred - held_out["next_observations"]) ** 2).mean().sqrt())


# ---------------------------------------------------------------------------------------------
# Supervised training loop (train_dynamics.py, train_reward.py, meanflow_onestep.py)
# ---------------------------------------------------------------------------------------------
def split_holdout(data: dict[str, np.ndarray], holdout: int, seed: int):
    """Random transitions held out for evaluation; returns (train, held_out) dicts of arrays."""
    perm = np.random.default_rng(seed).permutation(len(data["rewards"]))
    test, train = perm[:holdout], perm[holdout:]
    return {k: v[train] for k, v in data.items()}, {k: v[test] for k, v in data.items()}


def to_tensors(data: dict[str, np.ndarray], device: str) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v, device=device) for k, v in data.items()}


def prepare(args, stage: str):
    """Seed, load the dataset, split off the held-out transitions.
    Returns (train, held_out) tensors and the checkpoint path (args.checkpoint or the rule's)."""
    seed_everything(args.seed)
    path = args.checkpoint or checkpoint_path(args.env_id, stage, args.seed)
    data, _, _ = load_dataset(args.env_id, args.dataset_id)
    holdout = min(args.holdout, len(data["rewards"]) // 5)
    require(holdout > 0, f"{args.env_id}: {len(data['rewards'])} transitions are too few to hold any out")
    if holdout < args.holdout:
        print(
            f"[{stage}] --holdout {args.holdout} is over a fifth of the {len(data['rewards'])} transitions: "
            f"holding out {holdout}"
        )
    train, held_out = split_holdout(data, holdout, args.seed)
    return to_tensors(train, args.device), to_tensors(held_out, args.device), path


def fit(
    model: nn.Module,
    loss_fn,
    evaluate,
    args,
    stage: str,
    train: dict,
    held_out: dict,
    path: str,
    meta: dict | None = None,
    ema_decay: float | None = None,
) -> dict:
    """Train `model` on minibatches of `train` with `loss_fn(model, batch)`; every `args.eval_every`
    steps log the dict `evaluate(model, held_out)`; checkpoint atomically at `path` with the model's
    config and `meta` (and every `args.snapshot_every` steps a snapshot beside it); honour --resume
    (refusing a checkpoint whose `meta` differs from this run's: what the model was trained under).
    With `ema_decay`, an exponential moving average of the weights
    is what is evaluated and saved as "model" (the raw weights are kept for resuming).
    `args.precision` bf16 runs `loss_fn` under autocast (the loss itself is fp32, as the models cast
    their networks' outputs back); the held-out evaluation stays fp32."""
    device = args.device
    check_precision(args.precision, device, stage)
    n = len(train["rewards"])
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    ema = None
    if ema_decay is not None:
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(ema_decay), use_buffers=True
        )
    start, history = 0, []  # history: the held-out metrics at each evaluation, kept in the checkpoint
    ckpt = resume_checkpoint(path, args.env_id, stage, args.seed) if args.resume else None
    changed = {k: v for k, v in (meta or {}).items() if ckpt is not None and k in ckpt and ckpt[k] != v}
    require(
        not changed,
        f"--resume: {path} was trained with "
        + ", ".join(f"{k} {ckpt[k]} (this run: {v})" for k, v in changed.items())
        + "; drop --resume (or pass another --checkpoint) to train anew",
    )
    if ckpt is not None and not check_resume(ckpt, path, args, "total_steps", ("rebrac_checkpoint",)):
        print(f"[{stage}] {path} is already at step {ckpt['step']} of {args.total_steps}: nothing to train")
        return ckpt.get("metrics", {})
    if ckpt is not None:
        model.load_state_dict(ckpt.get("raw_model", ckpt["model"]))
        if ema is not None:
            ema.module.load_state_dict(ckpt["model"])
            ema.n_averaged.fill_(ckpt["step"])
        opt.load_state_dict(ckpt["opt"])
        load_rng_state(ckpt["rng_state"], device)
        start, history = ckpt["step"], ckpt.get("history", [])
        print(f"[{stage}] resuming {path} at step {start}")
    plain_args = asdict(args)
    writer = SummaryWriter(f"runs/{stage}_{args.env_id}_seed{args.seed}_{int(time.time())}")
    writer.add_text("args", str(plain_args))
    metrics, t0 = {}, time.time()

    def save(step: int, to: str = path):
        weights = (
            {"model": ema.module.state_dict(), "raw_model": model.state_dict()}
            if ema
            else {"model": model.state_dict()}
        )
        atomic_torch_save(
            {
                **weights,
                "config": model.config,
                "opt": opt.state_dict(),
                "step": step,
                "env_id": args.env_id,
                "stage": stage,
                "args": plain_args,
                "metrics": metrics,
                "history": history,
                "rng_state": save_rng_state(device),
                **(meta or {}),
            },
            to,
        )

    bar = tqdm(range(start, args.total_steps), initial=start, total=args.total_steps, desc=stage, mininterval=2)
    with StopOnSignal() as stop:
        for step in bar:
            idx = torch.randint(0, n, (args.batch_size,), device=device)
            with autocast(args.precision, device):
                loss = loss_fn(model, {k: v[idx] for k, v in train.items()}).float()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update_parameters(model)
            if (step + 1) % 500 == 0:
                writer.add_scalar(f"{stage}/loss", loss.item(), step + 1)
            if (step + 1) % args.eval_every == 0 or step + 1 == args.total_steps:
                model.eval()
                metrics = evaluate(ema.module if ema is not None else model, held_out)
                model.train()
                history.append({"step": step + 1, **metrics})
                for k, v in metrics.items():
                    writer.add_scalar(f"{stage}/{k}", v, step + 1)
                bar.write(f"[{stage}] step {step + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
                save(step + 1)
            if args.snapshot_every and (step + 1) % args.snapshot_every == 0:
                save(step + 1, snapshot_path(path, step + 1))
            if stop:  # Ctrl-C or SIGTERM: this step is done; keep it
                save(step + 1)
                bar.close()
                writer.close()
                stop.exit(stage, f"step {step + 1} of {args.total_steps} (checkpoint {path})")
    metrics["seconds"] = time.time() - t0
    print(
        f"[{stage}] {args.total_steps - start} steps in {metrics['seconds']:.0f}s; held-out "
        + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "seconds")
        + f"; checkpoint {path}"
    )
    writer.close()
    return metrics
