"""AntMaze: the evaluation mazes, the evaluation env taken from the dataset (published and local), and the
goal-reaching collector of collect_dataset.py (planner, heading-frame input, episodes cut at successes)."""

import json
import os

import gymnasium as gym
import minari
import numpy as np
import pytest

import collect_dataset as cd
import common

TINY_STAGES = dict(hidden_dim=16, num_layers=2, total_steps=20, eval_every=10, holdout=10, device="cpu")


def cells(maze_map, mark):
    return [(i, j) for i, row in enumerate(maze_map) for j, c in enumerate(row) if c == mark]


def test_maps_are_minaris_evaluation_maps():
    """Start and goal cells as Minari's generation script lists them (EVAL_ENV_MAPS), D4RL's limits."""
    expected = {"umaze": ((1, 3), (3, 3), 700), "medium": ((1, 1), (6, 6), 1000), "large": ((1, 1), (7, 9), 1000)}
    for size, (start, goal, limit) in expected.items():
        assert cells(common.ANTMAZE_MAPS[size], "r") == [start], size
        assert cells(common.ANTMAZE_MAPS[size], "g") == [goal], size  # the large goal was (7, 10) before
        assert common.ANTMAZE_MAX_EPISODE_STEPS[size] == limit
    # Minari's umaze evaluation maze opens on the left (row 2), the mirror of gymnasium-robotics' U_MAZE
    assert common.ANTMAZE_MAPS["umaze"][2] == [1, 0, 1, 1, 1]
    env = common.make_env("antmaze-large-diverse", flatten=False)
    obs, _ = env.reset(seed=0)
    goal_xy = env.unwrapped.maze.cell_rowcol_to_xy(np.array([7, 9]))
    assert np.abs(obs["desired_goal"] - goal_xy).max() <= 1.0  # the cell's centre ± the env's noise (0.25 × 4 m)
    assert env.spec.max_episode_steps == 1000
    env.close()
    assert common.make_env("antmaze-umaze").spec.max_episode_steps == 700


@pytest.mark.parametrize("size", ["medium", "large"])
def test_planner_leads_a_point_to_any_goal_without_entering_walls(size):
    """A point that walks 0.25 m per step towards the planner's target reaches every goal cell from the start."""
    env = common.make_env(f"antmaze-{cd.ANTMAZE_SETS[size][0]}", flatten=False)
    maze = env.unwrapped.maze
    start = maze.cell_rowcol_to_xy(np.array(cells(maze.maze_map, "r")[0]))
    for goal_cell in sorted(cd.WaypointPlanner(maze).free):
        planner, xy, goal = cd.WaypointPlanner(maze), start.copy(), maze.cell_rowcol_to_xy(np.array(goal_cell)) + 0.2
        for _ in range(400):
            step = planner.target(xy, goal) - xy
            xy = xy + step * min(1.0, 0.25 / (np.linalg.norm(step) + 1e-9))
            assert planner.cell(xy) in planner.free, (goal_cell, xy)
            if np.linalg.norm(xy - goal) <= cd.GOAL_RADIUS:
                break
        assert np.linalg.norm(xy - goal) <= cd.GOAL_RADIUS, goal_cell
    env.close()


def test_policy_observation_is_the_goal_in_the_heading_frame():
    obs = np.zeros(27)
    obs[1:5] = [np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)]  # yaw 90°: the ant faces +y
    out = cd.policy_observation(obs, np.array([1.0, 1.0]), np.array([1.0, 3.0]))  # goal 2 m along +y
    assert out.shape == (29,) and out.dtype == np.float32
    np.testing.assert_allclose(out[27:], [2.0, 0.0], atol=1e-6)  # straight ahead
    far = cd.policy_observation(np.r_[0, 1, np.zeros(25)], np.zeros(2), np.array([-30.0, 0.0]))
    np.testing.assert_allclose(far[27:], [-cd.MAX_GOAL_DISTANCE, 0.0], atol=1e-6)
    assert not cd.flipped(obs) and cd.flipped(np.r_[0, 0, 1, 0, 0, np.zeros(22)])  # 180° about x


@pytest.mark.parametrize("upside_down", [False, True])
def test_the_goal_reaching_ant_terminates_when_it_flips(upside_down):
    """Placed on its back at a height Ant-v5 calls healthy, the training ant's episode ends (and only then)."""
    env = cd.GoalReachAnt()
    env.reset(seed=0)
    ant = env.unwrapped
    qpos = ant.init_qpos.copy()
    qpos[2], qpos[3:7] = 0.55, [0, 1, 0, 0] if upside_down else [1, 0, 0, 0]  # 180° about x, or upright
    ant.set_state(qpos, np.zeros_like(ant.init_qvel))
    _, _, terminated, _, info = env.step(np.zeros(8, np.float32))
    assert terminated == info["flipped"] == upside_down
    env.close()


class StandStill:
    """A stand-in for the SB3 ant: zero torques."""

    def predict(self, obs, deterministic=True):
        return np.zeros(8, np.float32), None


@pytest.mark.parametrize("kind", ["umaze", "medium-diverse"])
def test_episodes_are_cut_at_each_success(kind, monkeypatch):
    """Every 25th step is made a success: each episode ends there (a truncation, info["success"] only at its
    last step); diverse walks on from where the ant stands with a new goal, umaze restarts at the start cell."""
    from gymnasium_robotics.envs.maze.ant_maze_v5 import AntMazeEnv

    real_step, counter = AntMazeEnv.step, {"t": 0}

    def step(self, action):
        obs, reward, terminated, truncated, info = real_step(self, action)
        counter["t"] += 1
        if counter["t"] % 25 == 0:
            info["success"], reward = True, 1.0
        return obs, reward, terminated, truncated, info

    monkeypatch.setattr(AntMazeEnv, "step", step)
    args = cd.Args(env="antmaze-medium", transitions=110)
    episodes, stats = cd.collect_antmaze_dataset(kind, StandStill(), args, seed=0)
    assert [len(e["actions"]) for e in episodes] == [25, 25, 25, 25, 10]
    assert stats["ends"] == {"success": 4, "timeout": 0, "flipped": 0, "budget": 1}
    for e in episodes:
        assert not e["terminations"].any() and e["truncations"][-1] and not e["truncations"][:-1].any()
        assert len(e["infos"]["success"]) == len(e["actions"]) + 1 and not e["infos"]["success"][:-1].any()
        assert set(e["observations"]) == {"observation", "achieved_goal", "desired_goal"}
    assert all(e["infos"]["success"][-1] and e["rewards"][-1] == 1.0 for e in episodes[:4])
    for prev, nxt in zip(episodes, episodes[1:]):
        if kind == "umaze":  # a new episode from the start cell, towards the same goal cell
            assert np.abs(nxt["observations"]["achieved_goal"][0] - [4.0, 4.0]).max() <= 1.0
        else:  # on from where the ant stands, towards another goal cell
            first = {k: v[0] for k, v in nxt["observations"].items()}
            last = {k: v[-1] for k, v in prev["observations"].items()}
            np.testing.assert_array_equal(first["observation"], last["observation"])
            assert np.linalg.norm(first["desired_goal"] - last["desired_goal"]) > 1


# ---------------------------------------------------------------------------------------------
# The stages on AntMaze data: evaluation in the env the dataset declares
# ---------------------------------------------------------------------------------------------
def run_stages(env_id: str, dataset_id: str | None, **itpo_kwargs):
    """Tiny ReBRAC, dynamics and reward on the dataset, then ITPO; returns (ReBRAC checkpoint, summary)."""
    import torch

    import itpo_eval
    import rebrac
    import train_dynamics
    import train_reward

    rebrac.train(
        rebrac.Args(
            env_id=env_id,
            total_updates=4,
            batch_size=32,
            hidden_dim=16,
            eval_every=4,
            checkpoint_every=4,
            eval_episodes=2,
            device="cpu",
        )
    )  # dataset by resolution
    train_dynamics.main(train_dynamics.Args(env_id=env_id, dataset_id=dataset_id, diffusion_steps=2, **TINY_STAGES))
    train_reward.main(train_reward.Args(env_id=env_id, dataset_id=dataset_id, **TINY_STAGES))
    summary = itpo_eval.main(
        itpo_eval.Args(
            env_id=env_id,
            dataset_id=dataset_id,
            horizon=2,
            particles=4,
            episodes=2,
            device="cpu",
            run_name=f"test_{env_id}",
            **itpo_kwargs,
        )
    )
    ckpt = torch.load(f"checkpoints/{env_id}/rebrac_seed0.pt", weights_only=True)
    return ckpt, summary


# The published AntMaze shape, rebuilt small: THEIR_UMAZE is its evaluation maze (goal cell (3, 1), 40 steps)
THEIR_UMAZE = [[1, 1, 1, 1, 1], [1, 0, 0, "r", 1], [1, 0, 1, 1, 1], [1, "g", 0, 0, 1], [1, 1, 1, 1, 1]]


def build_published_umaze() -> None:
    """A tiny dataset built to the published D4RL/antmaze/umaze-v1's structure (AntMaze_UMaze-v4, dict
    observations, infos, an eval_env_spec), whose evaluation env (THEIR_UMAZE, 40 steps) differs from
    ours in goal cell and limit; written under the current MINARI_DATASETS_PATH."""
    import gymnasium_robotics
    from minari.data_collector import EpisodeBuffer

    gym.register_envs(gymnasium_robotics)
    eval_env = gym.make(
        "AntMaze_UMaze-v4", maze_map=THEIR_UMAZE, continuing_task=True, reset_target=False, max_episode_steps=40
    )
    data_env = gym.make("AntMaze_UMaze-v4", continuing_task=True, reset_target=False)  # U_MAZE, as Minari's umaze
    data_env.action_space.seed(0)
    buffers = []
    for seed in range(3):
        obs, info = data_env.reset(seed=seed)
        steps = {
            "observations": [obs],
            "infos": [info],
            "actions": [],
            "rewards": [],
            "terminations": [],
            "truncations": [],
        }
        for t in range(30):
            action = data_env.action_space.sample()
            obs, reward, terminated, _, info = data_env.step(action)
            info = {
                "success": info["success"],
                "goal": obs["desired_goal"],  # Minari's recorded infos
                "qpos": np.r_[obs["achieved_goal"], obs["observation"][:13]],
                "qvel": obs["observation"][13:],
            }
            for k, v in (
                ("observations", obs),
                ("infos", info),
                ("actions", action),
                ("rewards", reward),
                ("terminations", terminated),
                ("truncations", t == 29),
            ):
                steps[k].append(v)
        steps["infos"][0] = {k: np.zeros_like(v) for k, v in steps["infos"][1].items()}
        stack = lambda xs: {k: np.stack([x[k] for x in xs]) for k in xs[0]}  # noqa: E731
        buffers.append(
            EpisodeBuffer(
                id=seed,
                observations=stack(steps["observations"]),
                infos=stack(steps["infos"]),
                actions=np.array(steps["actions"]),
                rewards=np.array(steps["rewards"]),
                terminations=np.array(steps["terminations"]),
                truncations=np.array(steps["truncations"]),
            )
        )
    minari.create_dataset_from_buffers(
        "D4RL/antmaze/umaze-v1",
        buffer=buffers,
        env=data_env,
        eval_env=eval_env.spec,
        algorithm_name="test",
        ref_min_score=0.0,
        ref_max_score=1.0,
    )


def test_published_dataset_is_evaluated_in_its_own_eval_env(tmp_path, monkeypatch, capsys):
    """On the published shape (build_published_umaze): ReBRAC's and ITPO's evaluations run in the
    dataset's env, not in common.make_env's."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    build_published_umaze()
    theirs = THEIR_UMAZE

    ckpt, summary = run_stages("antmaze-umaze", "D4RL/antmaze/umaze-v1")
    out = capsys.readouterr().out
    assert "AntMaze_UMaze-v4 from the eval_env_spec of D4RL/antmaze/umaze-v1, 40 steps" in out
    ours = common.describe_env(common.make_env("antmaze-umaze"))
    for used in (ckpt["eval_env"], summary["itpo"]["env"], summary["rebrac"]["env"]):
        assert used["id"] == "AntMaze_UMaze-v4" and used["max_episode_steps"] == 40
        assert used["maze_map"] == theirs and used["goal_cells"] == [[3, 1]] and used["reset_cells"] == [[1, 3]]
        assert used != ours
    assert ours["goal_cells"] == [[3, 3]] and ours["max_episode_steps"] == 700
    assert summary["itpo"]["lengths"] == [40, 40]  # the dataset's limit (no success from (1, 3) to (3, 1) in 2 s)


@pytest.fixture(scope="module")
def local_sets(tmp_path_factory):
    """The umaze goal-reaching sets made by collect_dataset.py with tiny budgets."""
    work = tmp_path_factory.mktemp("antmaze")
    old_cwd, old_path = os.getcwd(), os.environ.get("MINARI_DATASETS_PATH")
    os.chdir(work)
    os.environ["MINARI_DATASETS_PATH"] = str(work / "datasets")
    args = cd.Args(
        env="antmaze-umaze",
        train_ant=True,
        ant_timesteps=200,
        ant_envs=2,
        snapshot_every=100,
        learning_starts=50,
        transitions=150,
        eval_episodes=1,
        antmaze_eval_episodes=1,
        work_dir=str(work / "collect"),
    )
    cd.main(args)
    yield {"work": work, "args": args}
    os.chdir(old_cwd)
    if old_path is None:
        os.environ.pop("MINARI_DATASETS_PATH", None)
    else:
        os.environ["MINARI_DATASETS_PATH"] = old_path


def test_local_sets_carry_our_eval_env_and_minaris_structure(local_sets):
    ours = common.make_env("antmaze-umaze", flatten=False).spec
    for kind in ("umaze", "umaze-diverse"):
        assert common.resolve_dataset(f"antmaze-{kind}") == ([f"local/antmaze/{kind}-v0"], "local")
        ds = minari.load_dataset(f"local/antmaze/{kind}-v0")
        spec = json.loads(ds.storage.metadata["eval_env_spec"])
        assert spec["id"] == ours.id and spec["max_episode_steps"] == 700
        assert spec["kwargs"] == {**ours.kwargs, "maze_map": common.ANTMAZE_MAPS["umaze"]}
        assert spec["kwargs"]["continuing_task"] and not spec["kwargs"]["reset_target"]
        assert not spec["kwargs"]["include_cfrc_ext_in_observation"]
        assert ds.total_steps == 150 and (local_sets["work"] / f"datasets/local/antmaze/{kind}-v0/policy").is_dir()
        ep = next(ds.iterate_episodes())
        assert {k: v.shape[1] for k, v in ep.observations.items()} == {
            "observation": 27,
            "achieved_goal": 2,
            "desired_goal": 2,
        }
        assert ep.infos["success"].shape == (len(ep.actions) + 1,)
    progress = json.load(open(local_sets["work"] / "collect/antmaze/seed0/progress.json"))
    assert progress["step"] == 200 and set(progress["behaviour"]) == {"umaze"}
    snapshot = progress["snapshots"][-1]  # what each snapshot measures of the ant
    assert {"goals", "flipped", "umaze_success"} <= set(snapshot) and 0 <= snapshot["umaze_success"] <= 1
    assert set(progress["datasets"]) == {"umaze", "umaze-diverse"}
    # flattened as gymnasium's FlattenObservation flattens the env's dict observation
    data, make_eval_env, _ = common.load_dataset("antmaze-umaze", verbose=False)
    env, dict_env = make_eval_env(), make_eval_env(flatten=False)
    obs, raw = env.reset(seed=0)[0], dict_env.reset(seed=0)[0]
    assert data["observations"].shape == (150, 31) and obs.shape == (31,)
    np.testing.assert_allclose(common.flatten_observations(raw, dict_env.observation_space), obs, rtol=1e-6)


def test_collect_resumes_without_redoing_work(local_sets, capsys):
    cd.main(local_sets["args"])
    out = capsys.readouterr().out
    assert "resuming SAC at step 200" in out and "wrote" not in out


def test_itpo_runs_on_the_local_set_and_reports_both_success_rates(local_sets, capsys):
    ckpt, summary = run_stages("antmaze-umaze", None, max_episode_steps=30)
    out = capsys.readouterr().out
    assert "[itpo] success rate" in out and "[rebrac] success rate" in out
    never = not any(h["score"] > 0 for h in ckpt["history"])  # 4 updates: almost surely never
    assert ("[rebrac] warning: 0 % success at all 1 evaluations" in out) == never
    ours = common.describe_env(common.make_env("antmaze-umaze"))
    assert summary["itpo"]["env"] == summary["rebrac"]["env"] == ckpt["eval_env"] == ours
    assert summary["itpo"]["lengths"] == [30, 30]


def test_collect_builds_the_sets_from_a_given_ant_without_training(tmp_path, monkeypatch, capsys):
    """--behaviour-policy: a saved SB3 ant (tiny, untrained) drives the collection; no SAC step is taken."""
    from stable_baselines3 import SAC

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    ant = SAC("MlpPolicy", cd.GoalReachAnt(), policy_kwargs={"net_arch": [8]}, seed=0, device="cpu")
    ant.save(tmp_path / "ant.zip")
    args = cd.Args(
        env="antmaze-umaze",
        behaviour_policy=str(tmp_path / "ant.zip"),
        transitions=120,
        antmaze_eval_episodes=1,
        work_dir=str(tmp_path / "collect"),
    )
    cd.main(args)
    out = capsys.readouterr().out
    assert "ant.zip (0 SAC steps), not trained here" in out and "resuming SAC" not in out
    for kind in ("umaze", "umaze-diverse"):
        assert minari.load_dataset(f"local/antmaze/{kind}-v0").total_steps == 120
    work = tmp_path / "collect/antmaze/given_ant.zip"
    assert sorted(p.name for p in work.iterdir() if p.suffix == ".zip") == []  # nothing trained, nothing saved
    assert set(json.load(open(work / "progress.json"))["behaviour"]) == {"umaze"}


def test_the_shipped_ant_reaches_the_umaze_goal(tmp_path, monkeypatch, capsys):
    """By default the sets are collected with the ant in data/ (no training); without noise it walks from the
    umaze start to the goal (an untrained ant does not: test_collect_builds_the_sets_from_a_given_ant...)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    cd.main(cd.Args(env="antmaze-umaze", transitions=100, antmaze_eval_episodes=2, work_dir=str(tmp_path / "c")))
    assert "antmaze_goal_ant.zip (" in capsys.readouterr().out
    progress = json.load(open(tmp_path / "c/antmaze/given_antmaze_goal_ant.zip/progress.json"))
    assert progress["behaviour"]["umaze"]["success_rate_without_noise"] > 0


def test_antmaze_sets_default_to_d4rls_size():
    """An AntMaze set holds D4RL's 1M transitions unless --transitions says otherwise; MuJoCo's sets 100k each."""
    assert cd.Args(env="antmaze").transitions == cd.Args(env="antmaze-large").transitions == 1_000_000
    assert cd.Args(env="hopper").transitions == 100_000 and cd.Args(env="antmaze", transitions=500).transitions == 500
