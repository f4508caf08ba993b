"""Stage 0: make the D4RL datasets where none can be downloaded (nothing imports this file).

    python collect_dataset.py --env hopper

Online SAC (stable-baselines3, the library Minari's own MuJoCo datasets were made with) on the
gymnasium `-v5` env, then
     random        = uniform random actions
     medium        = rollouts of the snapshot whose evaluation return is nearest 1/3 of the final's
     expert        = rollouts of the final policy (stochastic actions, as D4RL)
     medium-replay = the replay buffer up to the medium snapshot
     full-replay   = the whole replay buffer
     medium-expert = medium ∪ expert
written as Minari datasets `local/<env>/<kind>-v0`, with D4RL's reference scores in their metadata and
the behaviour policy beside each dataset. Interrupted runs resume; a dataset is written into a
hidden staging folder and moved into place only when complete. `common.load_dataset` finds them.

    python collect_dataset.py --env antmaze          # umaze, umaze-diverse, medium-play, medium-diverse
    python collect_dataset.py --env antmaze-umaze    # only the umaze sets (-medium, -large likewise)
    python collect_dataset.py --env antmaze --train-ant --snapshot-every 40000   # train the ant first (~70 core-min)

AntMaze the way D4RL and Minari made theirs, with the goal-reaching ant this repository ships in `data/`
(or one trained with `--train-ant`: SB3 SAC on an open floor with random nearby goals; input = the 27-d
ant observation + the goal vector in the torso's heading frame), driven
through the evaluation maze by a waypoint planner (BFS over the maze's cells), with Gaussian action
noise 0.2. `umaze` = the evaluation goal from the start cell; `diverse` = a new random goal cell after
each success (random start cells); `play` = goals from a short hand-picked list. Episodes are cut at
each success (a truncation: the maze task continues), after the maze's episode limit without one, or
when the ant has flipped over. Dict observations, sparse rewards and info["success"] are stored as
Minari's; the datasets' eval_env_spec is the evaluation maze of `common.make_env`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections import deque
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import tyro

from common import (
    ANTMAZE_MAX_EPISODE_STEPS,
    MUJOCO_ENVS,
    REF_SCORES,
    StopOnSignal,
    datasets_root,
    make_env,
    normalized_score,
    require,
    require_device,
    require_positive,
    seed_everything,
)


# ---------------------------------------------------------------------------------------------
# Writing datasets
# ---------------------------------------------------------------------------------------------
def write_minari_dataset(
    dataset_id: str,
    episodes: list[dict],
    env_spec,
    ref: tuple[float, float],
    description: str,
    policy_file: str | None = None,
) -> None:
    """Create a Minari dataset atomically: built under a hidden staging root (ignored by
    `minari.list_local_datasets`), then renamed into place, with the behaviour policy beside `data/`."""
    import minari
    from minari.data_collector import EpisodeBuffer
    from minari.namespace import create_namespace, list_local_namespaces

    root = datasets_root()
    final = os.path.join(root, dataset_id)
    staging = os.path.join(root, ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    os.environ["MINARI_DATASETS_PATH"] = staging
    try:
        minari.create_dataset_from_buffers(
            dataset_id,
            buffer=[EpisodeBuffer(**e) for e in episodes],
            env=env_spec,
            eval_env=env_spec,
            algorithm_name="SB3-SAC ant + BFS waypoints" if "antmaze" in dataset_id else "SB3-SAC (D4RL recipe)",
            code_permalink="collect_dataset.py",
            author="itpo",
            author_email="itpo@localhost",
            ref_min_score=ref[0],
            ref_max_score=ref[1],
            description=description,
        )
    finally:
        os.environ["MINARI_DATASETS_PATH"] = root
    if policy_file:
        os.makedirs(os.path.join(staging, dataset_id, "policy"))
        shutil.copy(policy_file, os.path.join(staging, dataset_id, "policy", os.path.basename(policy_file)))
    namespace = dataset_id.rsplit("/", 1)[0]
    if namespace not in list_local_namespaces():
        create_namespace(namespace)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    os.replace(os.path.join(staging, dataset_id), final)
    shutil.rmtree(staging, ignore_errors=True)


def rollout_episodes(env: gym.Env, act, n_transitions: int, seed: int) -> tuple[list[dict], list[float]]:
    """Run `act(obs)` for exactly n_transitions steps; the last episode is cut (truncated) at the budget.
    Returns Minari episode dicts and the returns of the complete episodes."""
    episodes, returns = [], []
    obs, _ = env.reset(seed=seed)
    ep = {"observations": [obs], "actions": [], "rewards": [], "terminations": [], "truncations": []}
    for t in range(n_transitions):
        action = act(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        truncated = truncated or t == n_transitions - 1
        for k, v in zip(("actions", "rewards", "terminations", "truncations"), (action, reward, terminated, truncated)):
            ep[k].append(v)
        ep["observations"].append(obs)
        if terminated or truncated:
            if not (truncated and t == n_transitions - 1 and not terminated):
                returns.append(float(np.sum(ep["rewards"])))
            episodes.append(_stack_episode(ep, len(episodes)))
            obs, _ = env.reset()
            ep = {"observations": [obs], "actions": [], "rewards": [], "terminations": [], "truncations": []}
    return episodes, returns


def _stack_episode(ep: dict, index: int) -> dict:
    out = {k: np.asarray(v) for k, v in ep.items()}
    if isinstance(ep["observations"][0], dict):
        out["observations"] = {k: np.stack([o[k] for o in ep["observations"]]) for k in ep["observations"][0]}
    out["id"] = index
    return out


def minari_episode_to_dict(episode, index: int) -> dict:
    return {
        "id": index,
        "observations": episode.observations,
        "actions": episode.actions,
        "rewards": episode.rewards,
        "terminations": episode.terminations,
        "truncations": episode.truncations,
    }


def replay_to_episodes(buffer, end: int) -> list[dict]:
    """Split the first `end` transitions of an SB3 (single-env) replay buffer into Minari episodes.
    SB3 stores done = terminated or truncated, and timeouts = truncated; the cut at `end` is a truncation."""
    obs, next_obs = buffer.observations[:end, 0], buffer.next_observations[:end, 0]
    actions, rewards = buffer.actions[:end, 0], buffer.rewards[:end, 0]
    dones, timeouts = buffer.dones[:end, 0].astype(bool), buffer.timeouts[:end, 0].astype(bool)
    ends = list(np.flatnonzero(dones)) + ([end - 1] if not dones[end - 1] else [])
    episodes, start = [], 0
    for stop in ends:
        sl = slice(start, stop + 1)
        truncs = timeouts[sl].copy()
        if stop == end - 1 and not dones[stop]:
            truncs[-1] = True
        episodes.append(
            {
                "id": len(episodes),
                "observations": np.concatenate([obs[sl], next_obs[stop : stop + 1]]),
                "actions": actions[sl],
                "rewards": rewards[sl],
                "terminations": dones[sl] & ~timeouts[sl],
                "truncations": truncs,
            }
        )
        start = stop + 1
    return episodes


# ---------------------------------------------------------------------------------------------
# Stage: train the behaviour policy, write the datasets
# ---------------------------------------------------------------------------------------------
@dataclass
class Args:
    env: str = "hopper"
    """halfcheetah | hopper | walker2d (six D4RL datasets); antmaze (umaze and medium sets), or antmaze-umaze /
    antmaze-medium / antmaze-large (that maze's two sets)"""
    total_timesteps: int = 200_000
    """online SAC steps for the behaviour policy (D4RL used 1M; 200k gives a hopper expert near 3000)"""
    snapshot_every: int = 20_000
    """save and evaluate a behaviour-policy snapshot every this many steps"""
    eval_episodes: int = 5
    """episodes per snapshot evaluation (stochastic actions)"""
    transitions: int | None = None
    """transitions in each of random, medium and expert (the replay sets are the buffer itself; default 100k),
    and in each AntMaze dataset (default D4RL's 1M: about 17 minutes per set on one core)"""
    learning_starts: int = 5_000
    """SAC warm-up steps with random actions"""
    seed: int = 0
    """seed of SAC, the envs and the rollouts"""
    work_dir: str = "checkpoints/collect"
    """where SAC snapshots, the replay buffer, progress (for resuming) and the run's tensorboard logs are kept"""
    datasets_path: str | None = None
    """Minari datasets root (default: $MINARI_DATASETS_PATH or ~/.minari/datasets)"""
    device: str = "cpu"
    """device for SAC"""
    ant_timesteps: int = 1_200_000
    """AntMaze, --train-ant: SAC steps of the goal-reaching ant (the shipped one's: 1.2M, 68 min on one core;
    Minari's: 30M on 16 envs)"""
    behaviour_policy: str | None = None
    """AntMaze: the goal-reaching ant to collect with, an SB3 SAC .zip (default: the one this repository ships,
    data/antmaze_goal_ant.zip); its success per maze and the datasets are made from it"""
    train_ant: bool = False
    """AntMaze: train the goal-reaching ant from scratch (--ant-timesteps SAC steps, resumable) instead"""
    ant_envs: int = 4
    """AntMaze: parallel envs of the ant's SAC, one gradient step per step of all of them (steps are cheap,
    updates are not)"""
    action_noise: float = 0.2
    """AntMaze: std of the Gaussian noise added to the ant's actions while collecting (D4RL's and Minari's 0.2)"""
    antmaze_eval_episodes: int = 20
    """AntMaze: episodes from the start to the goal cell per maze that measure the behaviour's success rate"""

    def __post_init__(self):
        if self.transitions is None:
            self.transitions = 1_000_000 if self.env.startswith("antmaze") else 100_000
        require_positive(
            self,
            "total_timesteps",
            "snapshot_every",
            "eval_episodes",
            "transitions",
            "ant_timesteps",
            "ant_envs",
            "antmaze_eval_episodes",
        )
        require(self.learning_starts >= 0, f"--learning-starts must be ≥ 0, not {self.learning_starts}")
        require(self.action_noise >= 0, f"--action-noise must be ≥ 0, not {self.action_noise}")
        require(
            self.env.startswith("antmaze") or self.total_timesteps % self.snapshot_every == 0,
            f"--total-timesteps ({self.total_timesteps}) must be a multiple of --snapshot-every "
            f"({self.snapshot_every}): the last snapshot is the final (expert) policy",
        )
        require_device(self)
        require(
            self.behaviour_policy is None or os.path.isfile(self.behaviour_policy),
            f"--behaviour-policy {self.behaviour_policy}: no such file (an SB3 SAC .zip saved by collect_dataset.py)",
        )
        require(
            (self.behaviour_policy is None and not self.train_ant) or self.env.startswith("antmaze"),
            "--behaviour-policy, --train-ant: only the AntMaze sets use an ant (--env antmaze...)",
        )
        require(
            self.behaviour_policy is None or not self.train_ant,
            "--train-ant trains the ant that --behaviour-policy would give: drop one",
        )


def snapshot_callback(args: Args, work: str, progress: dict, writer, evaluate, total: int, stop=None):
    """An SB3 callback: every `snapshot_every` steps save the policy, evaluate it (`evaluate(model, step)` ->
    {"return": ..., ...}), save the resume state; after a snapshot, end training if `stop` (a StopOnSignal)
    has seen a signal: the snapshot is the safe point a rerun resumes from."""
    from stable_baselines3.common.callbacks import BaseCallback
    from tqdm import tqdm

    class _Snapshot(BaseCallback):
        stopping = False  # set after a snapshot once `stop` has seen a signal: training ends at the next step

        def _on_training_start(self):
            self.t_save = time.time()  # SAC wall time is counted up to the last snapshot, so a resumed run adds up
            self.bar = tqdm(total=total, initial=self.num_timesteps, desc="SAC", mininterval=2)

        def _on_step(self) -> bool:
            self.bar.update(self.model.n_envs)
            return not self.stopping

        def _on_rollout_end(self) -> None:
            # After the step's transition is stored (train_freq=1), so the saved buffer is whole.
            if self.num_timesteps % args.snapshot_every == 0:
                step = self.num_timesteps
                path = os.path.join(work, f"sac_step{step}.zip")
                self.model.save(path + ".tmp.zip")
                os.replace(path + ".tmp.zip", path)
                metrics = evaluate(self.model, step)
                progress["snapshots"].append({"step": step, **metrics, "path": path})
                for k, v in metrics.items():
                    writer.add_scalar(f"collect/eval_{k}", v, step)
                self.bar.write(f"[collect] step {step}: eval " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
                self.model.save_replay_buffer(os.path.join(work, "replay_buffer.tmp.pkl"))
                os.replace(os.path.join(work, "replay_buffer.tmp.pkl"), os.path.join(work, "replay_buffer.pkl"))
                self.model.save(os.path.join(work, "sac_latest.tmp.zip"))
                os.replace(os.path.join(work, "sac_latest.tmp.zip"), os.path.join(work, "sac_latest.zip"))
                progress["step"] = step
                progress["sac_seconds"] = progress.get("sac_seconds", 0.0) + time.time() - self.t_save
                self.t_save = time.time()
                _write_json(os.path.join(work, "progress.json"), progress)
                self.stopping = bool(stop)

        def _on_training_end(self):
            self.bar.close()

    return _Snapshot()


def evaluate_sb3(model, args: Args, step: int) -> dict:
    env = make_env(f"{args.env}-random")
    rets = []
    for i in range(args.eval_episodes):
        obs, _ = env.reset(seed=10_000 + 100 * i + step)
        done, ret = False, 0.0
        while not done:
            obs, r, term, trunc, _ = env.step(model.predict(obs, deterministic=False)[0])
            ret, done = ret + r, term or trunc
        rets.append(ret)
    return {"return": float(np.mean(rets))}


def _write_json(path: str, obj) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(path + ".tmp", path)


def _read_progress(path: str) -> dict:
    """The resume record of a collection run (a fresh one if there is none); one line if it is unreadable."""
    if not os.path.exists(path):
        return {"step": 0, "snapshots": []}
    try:
        with open(path) as f:
            progress = json.load(f)
        if not isinstance(progress, dict) or not isinstance(progress.get("step"), int):
            raise ValueError("no integer 'step'")
        return progress
    except (OSError, ValueError) as err:
        sys.exit(
            f"error: cannot resume from {path} ({type(err).__name__}: {err}); delete its folder "
            f"{os.path.dirname(path)} to collect from scratch, or point --work-dir elsewhere"
        )


# ---------------------------------------------------------------------------------------------
# AntMaze: a goal-reaching ant driven through the maze by a waypoint planner (D4RL's and Minari's recipe)
# ---------------------------------------------------------------------------------------------
ANTMAZE_SETS = {
    "umaze": ["umaze", "umaze-diverse"],
    "medium": ["medium-play", "medium-diverse"],
    "large": ["large-play", "large-diverse"],
}
# The play sets' hand-picked goal cells (row, col of common.ANTMAZE_MAPS), spread over the maze. The data's
# rewards are those of its own goals, so the evaluation goal is among them.
PLAY_GOALS = {
    "medium": [(1, 1), (2, 6), (3, 3), (5, 1), (6, 6)],
    "large": [(1, 1), (1, 10), (3, 5), (5, 4), (7, 1), (7, 9)],
}
GOAL_RADIUS = 0.45  # gymnasium-robotics' success distance
# The goal-reaching ant this repository ships (as D4RL ships its behaviour policies): `--train-ant` remakes one.
SHIPPED_ANT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "antmaze_goal_ant.zip")
MAX_GOAL_DISTANCE = 6.0  # the ant trains on goals up to 6 m away; farther ones are seen at 6 m


def policy_observation(observation: np.ndarray, xy: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The goal-reaching ant's input (29): the 27-d AntMaze ant observation and target − torso in the
    torso's heading frame (yaw from the quaternion w, x, y, z at observation[1:5]), so that where to go does
    not depend on where the ant faces (Minari's ant saw the world-frame vector and trained 30M steps)."""
    w, x, y, z = observation[1:5]
    yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    delta = np.asarray(target) - xy
    dx, dy = delta * min(1.0, MAX_GOAL_DISTANCE / (np.linalg.norm(delta) + 1e-8))
    c, s = np.cos(yaw), np.sin(yaw)
    return np.concatenate([observation, [c * dx + s * dy, c * dy - s * dx]]).astype(np.float32)


def flipped(observation: np.ndarray) -> bool:
    """The torso's up axis points down (z of the rotated axis = 1 − 2(x² + y²)): an ant on its back stays there."""
    x, y = observation[2:4]
    return bool(1 - 2 * (x * x + y * y) < 0)


class GoalReachAnt(gym.Wrapper):
    """Ant-v5 on an open floor chasing goals 0.5–6 m away in random directions; a goal reached (within
    GOAL_RADIUS) is replaced at once. Reward: progress_weight × the torso's velocity towards the goal + Ant-v5's
    survival reward and control and contact costs + goal_bonus per goal. An ant that flips over terminates
    (Ant-v5 would let it lie on its back, still "healthy", until the time limit: an episode that teaches
    nothing, and the survival reward it loses is the penalty). The same ant as AntMaze's (whose observation
    is Ant-v5's without x, y), without walls to learn around: walls are the planner's job."""

    def __init__(self, max_episode_steps: int = 500, progress_weight: float = 4.0, goal_bonus: float = 10.0):
        super().__init__(
            gym.make(
                "Ant-v5",
                exclude_current_positions_from_observation=False,
                include_cfrc_ext_in_observation=False,
                max_episode_steps=max_episode_steps,
            )
        )
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (29,), np.float32)
        self.progress_weight, self.goal_bonus = progress_weight, goal_bonus

    def _new_goal(self, xy: np.ndarray) -> np.ndarray:
        angle, distance = self.np_random.uniform(0, 2 * np.pi), self.np_random.uniform(0.5, MAX_GOAL_DISTANCE)
        return xy + distance * np.array([np.cos(angle), np.sin(angle)])

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.goal = self._new_goal(obs[:2])
        return policy_observation(obs[2:], obs[:2], self.goal), info

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        to_goal = self.goal - obs[:2]
        distance = np.linalg.norm(to_goal)
        towards = np.array([info["x_velocity"], info["y_velocity"]]) @ to_goal / max(distance, 1e-8)
        reward = self.progress_weight * towards + info["reward_survive"] + info["reward_ctrl"] + info["reward_contact"]
        info["success"], info["flipped"] = bool(distance <= GOAL_RADIUS), flipped(obs[2:])
        terminated = terminated or info["flipped"]
        if info["success"]:
            reward += self.goal_bonus
            self.goal = self._new_goal(obs[:2])
        return policy_observation(obs[2:], obs[:2], self.goal), float(reward), terminated, truncated, info


def evaluate_goal_ant(model, args: Args, step: int) -> dict:
    """The deterministic ant on the open floor: goals reached per 500-step episode, the shaped return and the
    fraction of episodes that end flipped over; and the behaviour's success in the umaze (start to goal, action
    noise as collected, `eval_episodes` episodes): the figure the ant is trained for."""
    env, goals, returns, flips = GoalReachAnt(), [], [], 0
    for i in range(args.eval_episodes):
        obs, _ = env.reset(seed=10_000 + 100 * i + step)
        done, n, ret = False, 0, 0.0
        while not done:
            obs, r, term, trunc, info = env.step(model.predict(obs, deterministic=True)[0])
            n, ret, done = n + info["success"], ret + r, term or trunc
        goals.append(n)
        returns.append(ret)
        flips += info["flipped"]
    env.close()
    umaze = behaviour_success_rate(model, "umaze", args, args.action_noise, args.eval_episodes, seed=step)
    return {
        "return": float(np.mean(returns)),
        "goals": float(np.mean(goals)),
        "flipped": flips / args.eval_episodes,
        "umaze_success": umaze,
    }


class WaypointPlanner:
    """D4RL's waypoint controller on the maze grid. A breadth-first search from the goal cell gives every
    free cell its next cell on a shortest path; the target is the centre of the next cell of the path, the
    next one once the torso is within `switch_radius` of it (not at the cell's edge, so that the ant does
    not cut corners into walls), and the goal itself in the goal's cell. Replans when the goal changes or
    the ant strays off the path."""

    def __init__(self, maze, switch_radius: float = 1.5):
        self.maze, self.switch_radius = maze, switch_radius
        self.free = {(i, j) for i, row in enumerate(maze.maze_map) for j, c in enumerate(row) if c != 1}
        self._toward = {}  # goal cell -> {cell: its next cell towards the goal}
        self.goal_cell = self.waypoint = self.leaving = None

    def next_cells(self, goal: tuple) -> dict:
        if goal not in self._toward:
            toward, frontier = {goal: goal}, deque([goal])
            while frontier:
                i, j = frontier.popleft()
                for cell in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)):
                    if cell in self.free and cell not in toward:
                        toward[cell] = (i, j)
                        frontier.append(cell)
            self._toward[goal] = toward
        return self._toward[goal]

    def cell(self, xy: np.ndarray) -> tuple:
        return tuple(int(v) for v in self.maze.cell_xy_to_rowcol(np.asarray(xy)))

    def centre(self, cell: tuple) -> np.ndarray:
        return self.maze.cell_rowcol_to_xy(np.array(cell))

    def target(self, xy: np.ndarray, goal_xy: np.ndarray) -> np.ndarray:
        goal, here = self.cell(goal_xy), self.cell(xy)
        toward = self.next_cells(goal)
        if goal != self.goal_cell or here not in (self.waypoint, self.leaving):
            self.goal_cell, self.leaving, self.waypoint = goal, here, toward.get(here, goal)
        if self.waypoint != goal and np.linalg.norm(self.centre(self.waypoint) - xy) <= self.switch_radius:
            self.leaving, self.waypoint = self.waypoint, toward[self.waypoint]
        return np.asarray(goal_xy) if self.waypoint == goal else self.centre(self.waypoint)


def goal_reaching_action(model, planner: WaypointPlanner, obs: dict, noise: float, rng) -> np.ndarray:
    """The behaviour: the ant's deterministic action towards the planner's target + N(0, noise²), clipped to [-1, 1]."""
    target = planner.target(obs["achieved_goal"], obs["desired_goal"])
    action = model.predict(policy_observation(obs["observation"], obs["achieved_goal"], target), deterministic=True)[0]
    return np.clip(action + noise * rng.standard_normal(action.shape), -1.0, 1.0).astype(np.float32)


def behaviour_success_rate(model, size: str, args: Args, noise: float, episodes: int, seed: int = 0) -> float:
    """Success rate of the behaviour on the evaluation task: the start cell to the goal cell within the
    episode limit of the evaluation maze, over `episodes` episodes."""
    env = make_env(f"antmaze-{ANTMAZE_SETS[size][0]}", flatten=False)
    rng, successes = np.random.default_rng(args.seed + seed), 0
    for i in range(episodes):
        obs, _ = env.reset(seed=args.seed + seed + 20_000 + i)
        planner = WaypointPlanner(env.unwrapped.maze)
        for _ in range(env.spec.max_episode_steps):
            obs, _, _, _, info = env.step(goal_reaching_action(model, planner, obs, noise, rng))
            if info["success"]:
                successes += 1
                break
    env.close()
    return successes / episodes


def collect_antmaze_dataset(kind: str, model, args: Args, seed: int) -> tuple[list[dict], dict]:
    """`args.transitions` steps of the behaviour in the evaluation maze of antmaze-<kind>, as Minari episodes
    (dict observations, sparse rewards, info["success"]). An episode ends at a success (the ant walks on to a
    new goal, or for umaze restarts), after the maze's episode limit, or when the ant has flipped; the maze
    task never terminates, so every end is a truncation."""
    size = kind.split("-")[0]
    env = make_env(f"antmaze-{kind}", flatten=False)
    maze_env, rng = env.unwrapped, np.random.default_rng(seed)  # stepped directly: episodes are ours to cut
    planner = WaypointPlanner(maze_env.maze)
    marks = {c: (i, j) for i, row in enumerate(maze_env.maze.maze_map) for j, c in enumerate(row) if isinstance(c, str)}
    cells, limit = sorted(planner.free), ANTMAZE_MAX_EPISODE_STEPS[size]

    def pick_goal(here: tuple) -> tuple:
        if kind == size:  # umaze: the evaluation goal, every episode
            return marks["g"]
        choices = [c for c in (PLAY_GOALS[size] if kind.endswith("play") else cells) if c != here]
        return choices[rng.integers(len(choices))]

    def reset():
        here = cells[rng.integers(len(cells))] if kind.endswith("diverse") else marks["r"]
        return maze_env.reset(
            seed=int(rng.integers(2**31)),
            options={"reset_cell": np.array(here), "goal_cell": np.array(pick_goal(here))},
        )

    def new_episode(obs, info):
        return {
            "observations": [obs],
            "actions": [],
            "rewards": [],
            "terminations": [],
            "truncations": [],
            "infos": [bool(info["success"])],
        }

    episodes, ends = [], {"success": 0, "timeout": 0, "flipped": 0, "budget": 0}
    obs, info = reset()
    ep = new_episode(obs, info)
    for t in range(args.transitions):
        action = goal_reaching_action(model, planner, obs, args.action_noise, rng)
        obs, reward, terminated, _, info = maze_env.step(action)
        end = (
            "success"
            if info["success"]
            else "flipped"
            if flipped(obs["observation"])
            else "timeout"
            if len(ep["actions"]) + 1 >= limit
            else "budget"
            if t == args.transitions - 1
            else None
        )
        for k, v in (
            ("actions", action),
            ("rewards", reward),
            ("terminations", terminated),
            ("truncations", end is not None),
            ("observations", obs),
            ("infos", bool(info["success"])),
        ):
            ep[k].append(v)
        if end is None:
            continue
        ends[end] += 1
        episodes.append(_stack_episode(ep, len(episodes)))
        episodes[-1]["infos"] = {"success": episodes[-1]["infos"]}
        if end == "success" and kind != size:  # on to a new goal (another cell) from where the ant stands
            goal = pick_goal(planner.cell(obs["desired_goal"]))
            maze_env.goal = maze_env.add_xy_position_noise(planner.centre(goal))
            maze_env.update_target_site_pos()
            obs, info = {**obs, "desired_goal": maze_env.goal.copy()}, {"success": False}
        else:
            obs, info = reset()
        ep = new_episode(obs, info)
    env.close()
    stats = {
        "transitions": args.transitions,
        "episodes": len(episodes),
        "ends": ends,
        "success_fraction": ends["success"] / len(episodes),
        "successes_per_1k_steps": 1000 * ends["success"] / args.transitions,
    }
    return episodes, stats


def collect_antmaze(args: Args, stop: StopOnSignal) -> None:
    """Train (or resume) the goal-reaching ant, measure the behaviour per maze, write the datasets."""
    import minari
    from stable_baselines3.common.env_util import make_vec_env
    from torch.utils.tensorboard import SummaryWriter

    sizes = ["umaze", "medium"] if args.env == "antmaze" else [args.env.split("-", 1)[1]]
    require(
        all(s in ANTMAZE_SETS for s in sizes),
        f"unknown --env {args.env!r}; AntMaze: antmaze, antmaze-umaze, antmaze-medium or antmaze-large",
    )
    require(
        args.snapshot_every % args.ant_envs == 0 and args.ant_timesteps % args.snapshot_every == 0,
        f"--ant-timesteps ({args.ant_timesteps}) must be a multiple of --snapshot-every ({args.snapshot_every}), "
        f"and that a multiple of --ant-envs ({args.ant_envs})",
    )
    given = None if args.train_ant else args.behaviour_policy or SHIPPED_ANT
    require(
        given is None or os.path.isfile(given),
        f"the shipped ant {given} is missing: restore it (git checkout -- data), or train one with --train-ant",
    )
    # a given ant's measurements and datasets are kept apart from those of the ant this seed trains
    work = os.path.join(args.work_dir, "antmaze", f"given_{os.path.basename(given)}" if given else f"seed{args.seed}")
    os.makedirs(work, exist_ok=True)
    writer = SummaryWriter(os.path.join(work, "runs"))  # this run's own logs, beside its snapshots
    progress_file = os.path.join(work, "progress.json")
    progress = _read_progress(progress_file)
    t0 = time.time()

    # 1. The goal-reaching ant: SAC on the open floor, a few envs, one update per step of all of them; or the
    # ant given by --behaviour-policy (as D4RL ships its behaviour policies), which skips the training.
    if given:
        from stable_baselines3 import SAC

        model = SAC.load(given, device=args.device)
        final = {"step": model.num_timesteps, "path": given}
        print(f"[collect] goal-reaching ant: {given} ({final['step']} SAC steps), not trained here")
    else:
        envs = make_vec_env(GoalReachAnt, n_envs=args.ant_envs, seed=args.seed)
        model = train_sac(
            envs,
            args.ant_timesteps,
            args,
            work,
            progress,
            writer,
            lambda m, step: evaluate_goal_ant(m, args, step),
            stop,
            gamma=0.98,
        )
        if stop:
            stop.exit("collect", f"the ant's SAC snapshot at step {progress['step']}", resume_flag=None)
        final = progress["snapshots"][-1]
        print(
            f"[collect] goal-reaching ant: {final['step']} SAC steps ({args.ant_envs} envs) in "
            f"{progress['sac_seconds'] / 60:.1f} min; {final['goals']:.1f} goals per 500 steps on the open floor, "
            f"{final['flipped']:.0%} of its episodes flipped, {final['umaze_success']:.0%} umaze successes"
        )

    # 2. Per maze: the behaviour's success rate on the evaluation task, then the datasets.
    behaviour, stats = progress.setdefault("behaviour", {}), progress.setdefault("datasets", {})
    for size in sizes:
        if size not in behaviour:
            n = args.antmaze_eval_episodes
            behaviour[size] = {
                "episodes": n,
                "success_rate": behaviour_success_rate(model, size, args, args.action_noise, n),
                "success_rate_without_noise": behaviour_success_rate(model, size, args, 0.0, n),
            }
            _write_json(progress_file, progress)
        print(f"[collect] behaviour in the {size} evaluation maze (start to goal): {behaviour[size]}")
        for kind in ANTMAZE_SETS[size]:
            dataset_id = f"local/antmaze/{kind}-v0"
            if stop:
                stop.exit("collect", f"the datasets before {dataset_id}", resume_flag=None)
            if dataset_id in minari.list_local_datasets():
                print(f"[collect] {dataset_id} exists under {datasets_root()}: kept (delete it to remake it)")
                continue
            episodes, stats[kind] = collect_antmaze_dataset(kind, model, args, seed=args.seed + len(stats) + 1)
            description = (
                f"D4RL-style antmaze-{kind}: SB3-SAC goal-reaching ant ({final['step']} steps) driven by "
                f"BFS waypoints, action noise {args.action_noise}; episodes cut at each success"
            )
            write_minari_dataset(
                dataset_id,
                episodes,
                make_env(f"antmaze-{kind}", flatten=False).spec,
                REF_SCORES["antmaze"],
                description,
                final["path"],
            )
            _write_json(progress_file, progress)
            print(f"[collect] wrote {dataset_id}: {stats[kind]}")
    progress["total_seconds"] = progress.get("total_seconds", 0.0) + time.time() - t0
    _write_json(progress_file, progress)
    for kind, s in stats.items():
        writer.add_text(f"datasets/{kind}", json.dumps(s))
    writer.close()


def train_sac(env, total: int, args: Args, work: str, progress: dict, writer, evaluate, stop=None, **sac_kwargs):
    """Online SAC to `total` steps with a snapshot every `snapshot_every` (`snapshot_callback`); resumes from
    the last snapshot's model and replay buffer. With a signal seen by `stop`, it ends at the next snapshot."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.logger import Logger

    if progress["step"] > 0:
        print(f"[collect] resuming SAC at step {progress['step']}")
        model = SAC.load(os.path.join(work, "sac_latest.zip"), env=env, device=args.device)
        model.load_replay_buffer(os.path.join(work, "replay_buffer.pkl"))
        # learn() restarts the env: the episode in progress at the snapshot was cut, a truncation.
        last = (model.replay_buffer.pos - 1) % model.replay_buffer.buffer_size
        model.replay_buffer.dones[last] = model.replay_buffer.timeouts[last] = 1.0
    else:
        model = SAC(
            "MlpPolicy",
            env,
            buffer_size=total,
            learning_starts=args.learning_starts,
            seed=args.seed,
            device=args.device,
            verbose=0,
            **sac_kwargs,
        )
    # SB3's default logger would leave an empty log folder in the system's temp dir at every run
    model.set_logger(Logger(folder=None, output_formats=[]))
    if progress["step"] < total:
        model.learn(
            total - progress["step"],
            reset_num_timesteps=False,
            callback=snapshot_callback(args, work, progress, writer, evaluate, total, stop),
        )
    return model


def main(args: Args) -> None:
    if args.datasets_path:
        os.environ["MINARI_DATASETS_PATH"] = os.path.abspath(args.datasets_path)
    seed_everything(args.seed)
    # Ctrl-C or SIGTERM: stop at the next safe point (a SAC snapshot, or between two datasets), which a
    # rerun of the same command resumes from.
    notice = "stopping at the next safe point (the next SAC snapshot, or after this dataset); again: at once"
    with StopOnSignal(notice=f"[collect] {notice}") as stop:
        if args.env.startswith("antmaze"):
            return collect_antmaze(args, stop)
        return collect_mujoco(args, stop)


def collect_mujoco(args: Args, stop: StopOnSignal) -> None:
    """Train (or resume) the SAC behaviour policy, pick its snapshots, write the six datasets."""
    import minari
    from stable_baselines3 import SAC
    from torch.utils.tensorboard import SummaryWriter

    if args.env not in MUJOCO_ENVS:
        sys.exit(
            f"error: unknown --env {args.env!r}; choose one of {list(MUJOCO_ENVS)}, antmaze or "
            f"antmaze-umaze/-medium/-large"
        )

    work = os.path.join(args.work_dir, args.env, f"seed{args.seed}")
    os.makedirs(work, exist_ok=True)
    writer = SummaryWriter(os.path.join(work, "runs"))  # this run's own logs, beside its snapshots
    progress_file = os.path.join(work, "progress.json")
    progress = _read_progress(progress_file)
    t0 = time.time()

    # 1. Online SAC with snapshots; resumes from the last snapshot's model and replay buffer.
    model = train_sac(
        make_env(f"{args.env}-random"),
        args.total_timesteps,
        args,
        work,
        progress,
        writer,
        lambda m, step: evaluate_sb3(m, args, step),
        stop,
    )
    if stop:
        stop.exit("collect", f"the SAC snapshot at step {progress['step']}", resume_flag=None)

    # 2. Pick the snapshots: final, and "medium" = eval return nearest one third of the final's.
    snaps = progress["snapshots"]
    final = snaps[-1]
    medium = min(snaps[:-1] or snaps, key=lambda s: abs(s["return"] - final["return"] / 3))
    print(
        f"[collect] final policy: step {final['step']}, return {final['return']:.1f}; "
        f"medium snapshot: step {medium['step']}, return {medium['return']:.1f}"
    )

    # 3. Write the six datasets; one that already exists is kept (resuming).
    spec, ref = gym.spec(MUJOCO_ENVS[args.env]), REF_SCORES[args.env]
    stats = progress.setdefault("datasets", {})
    rollout_env = make_env(f"{args.env}-random")
    rollout_env.action_space.seed(args.seed)
    replay = model.replay_buffer
    for kind, policy_path in (
        ("random", None),
        ("medium", medium["path"]),
        ("expert", final["path"]),
        ("medium-replay", medium["path"]),
        ("full-replay", final["path"]),
        ("medium-expert", final["path"]),
    ):
        dataset_id = f"local/{args.env}/{kind}-v0"
        if stop:
            stop.exit("collect", f"the datasets before {dataset_id}", resume_flag=None)
        if dataset_id in minari.list_local_datasets():
            print(f"[collect] {dataset_id} exists under {datasets_root()}: kept (delete it to remake it)")
            continue
        if kind in ("random", "medium", "expert"):
            if policy_path is None:
                act = lambda o: rollout_env.action_space.sample()  # noqa: E731
            else:
                policy = SAC.load(policy_path, device=args.device)
                act = lambda o, p=policy: p.predict(o, deterministic=False)[0]  # noqa: E731
            episodes, returns = rollout_episodes(rollout_env, act, args.transitions, args.seed + len(stats) + 1)
            stats[kind] = {
                "return": float(np.mean(returns)),
                "normalised": float(normalized_score(f"{args.env}-{kind}", np.mean(returns))),
            }
            # the policy's file name, not its path on this machine: the file itself is saved beside the data
            behaviour = "uniform random actions" if policy_path is None else os.path.basename(policy_path)
            description = f"D4RL-style {kind}: {behaviour}"
        elif kind == "medium-expert":
            episodes = [
                minari_episode_to_dict(e, i)
                for i, e in enumerate(
                    [
                        *minari.load_dataset(f"local/{args.env}/medium-v0").iterate_episodes(),
                        *minari.load_dataset(f"local/{args.env}/expert-v0").iterate_episodes(),
                    ]
                )
            ]
            description = "D4RL-style medium-expert: medium ∪ expert"
        else:
            end = medium["step"] if kind == "medium-replay" else replay.size()
            episodes = replay_to_episodes(replay, end)
            description = f"D4RL-style {kind}: the SAC replay buffer, steps 0-{end}"
        stats.setdefault(kind, {}).update(
            transitions=int(sum(len(e["actions"]) for e in episodes)), episodes=len(episodes)
        )
        write_minari_dataset(dataset_id, episodes, spec, ref, description, policy_path)
        _write_json(progress_file, progress)
        print(f"[collect] wrote {dataset_id}: {stats[kind]}")
    progress["total_seconds"] = progress.get("total_seconds", 0.0) + time.time() - t0
    _write_json(progress_file, progress)
    for kind, s in stats.items():
        writer.add_text(f"datasets/{kind}", json.dumps(s))
        print(f"[collect] {args.env}-{kind}: {s}")
    writer.close()


if __name__ == "__main__":
    main(tyro.cli(Args))
