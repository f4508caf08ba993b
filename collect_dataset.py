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
`--env antmaze-umaze` (or -medium, -large) writes a small uniform-random dataset in the AntMaze
env, so every AntMaze code path can be exercised; the D4RL planner recipe is not implemented.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import tyro

from common import (
    ENV_IDS,
    MUJOCO_ENVS,
    REF_SCORES,
    datasets_root,
    make_env,
    normalized_score,
    seed_everything,
)

# ---------------------------------------------------------------------------------------------
# Writing datasets
# ---------------------------------------------------------------------------------------------
def write_minari_dataset(dataset_id: str, episodes: list[dict], env_spec, ref: tuple[float, float],
                         description: str, policy_file: str | None = None) -> None:
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
            dataset_id, buffer=[EpisodeBuffer(**e) for e in episodes], env=env_spec, eval_env=env_spec,
            algorithm_name="SB3-SAC (D4RL recipe)", code_permalink="collect_dataset.py", author="itpo",
            author_email="itpo@localhost", ref_min_score=ref[0], ref_max_score=ref[1],
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
    return {"id": index, "observations": episode.observations, "actions": episode.actions,
            "rewards": episode.rewards, "terminations": episode.terminations, "truncations": episode.truncations}


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
        episodes.append({
            "id": len(episodes),
            "observations": np.concatenate([obs[sl], next_obs[stop:stop + 1]]),
            "actions": actions[sl], "rewards": rewards[sl],
            "terminations": dones[sl] & ~timeouts[sl], "truncations": truncs,
        })
        start = stop + 1
    return episodes


# ---------------------------------------------------------------------------------------------
# Stage: train the behaviour policy, write the datasets
# ---------------------------------------------------------------------------------------------
@dataclass
class Args:
    env: str = "hopper"
    """halfcheetah | hopper | walker2d (six D4RL datasets), or antmaze-umaze / -medium / -large (random data)"""
    total_timesteps: int = 200_000
    """online SAC steps for the behaviour policy (D4RL used 1M; 200k gives a hopper expert near 3000)"""
    snapshot_every: int = 20_000
    """save and evaluate a behaviour-policy snapshot every this many steps"""
    eval_episodes: int = 5
    """episodes per snapshot evaluation (stochastic actions)"""
    transitions: int = 100_000
    """transitions in each of random, medium and expert (the replay sets are the buffer itself)"""
    learning_starts: int = 5_000
    """SAC warm-up steps with random actions"""
    seed: int = 0
    """seed of SAC, the envs and the rollouts"""
    work_dir: str = "checkpoints/collect"
    """where SAC snapshots, the replay buffer and progress are kept (for resuming)"""
    datasets_path: str | None = None
    """Minari datasets root (default: $MINARI_DATASETS_PATH or ~/.minari/datasets)"""
    device: str = "cpu"
    """device for SAC"""


def snapshot_callback(args: Args, work: str, progress: dict, writer):
    """An SB3 callback: every `snapshot_every` steps save the policy, evaluate it, save the resume state."""
    from stable_baselines3.common.callbacks import BaseCallback
    from tqdm import tqdm

    class _Snapshot(BaseCallback):
        def _on_training_start(self):
            self.bar = tqdm(total=args.total_timesteps, initial=self.num_timesteps, desc="SAC", mininterval=2)

        def _on_step(self) -> bool:
            self.bar.update(1)
            return True

        def _on_rollout_end(self) -> None:
            # After the step's transition is stored (train_freq=1), so the saved buffer is whole.
            if self.num_timesteps % args.snapshot_every == 0:
                step = self.num_timesteps
                path = os.path.join(work, f"sac_step{step}.zip")
                self.model.save(path + ".tmp.zip")
                os.replace(path + ".tmp.zip", path)
                ret = evaluate_sb3(self.model, args, step)
                progress["snapshots"].append({"step": step, "return": ret, "path": path})
                writer.add_scalar("collect/eval_return", ret, step)
                self.bar.write(f"[collect] step {step}: eval return {ret:.1f}")
                self.model.save_replay_buffer(os.path.join(work, "replay_buffer.tmp.pkl"))
                os.replace(os.path.join(work, "replay_buffer.tmp.pkl"), os.path.join(work, "replay_buffer.pkl"))
                self.model.save(os.path.join(work, "sac_latest.tmp.zip"))
                os.replace(os.path.join(work, "sac_latest.tmp.zip"), os.path.join(work, "sac_latest.zip"))
                progress["step"] = step
                _write_json(os.path.join(work, "progress.json"), progress)

        def _on_training_end(self):
            self.bar.close()

    return _Snapshot()


def evaluate_sb3(model, args: Args, step: int) -> float:
    env = make_env(f"{args.env}-random")
    rets = []
    for i in range(args.eval_episodes):
        obs, _ = env.reset(seed=10_000 + 100 * i + step)
        done, ret = False, 0.0
        while not done:
            obs, r, term, trunc, _ = env.step(model.predict(obs, deterministic=False)[0])
            ret, done = ret + r, term or trunc
        rets.append(ret)
    return float(np.mean(rets))


def _write_json(path: str, obj) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(path + ".tmp", path)


def collect_antmaze(args: Args) -> None:
    """A uniform-random dataset in the AntMaze evaluation maze (not D4RL's planner data)."""
    env_id = args.env if args.env in ENV_IDS else f"{args.env}-diverse"
    size = env_id.split("-")[1]
    dataset_id = f"local/antmaze/{size}-random-v0"
    if dataset_id in __import__("minari").list_local_datasets():
        print(f"[collect] {dataset_id} exists; nothing to do")
        return
    env = make_env(env_id, flatten=False)  # dict observations, as Minari stores them
    env.action_space.seed(args.seed)
    episodes, _ = rollout_episodes(env, lambda o: env.action_space.sample(), args.transitions, args.seed)
    write_minari_dataset(dataset_id, episodes, env.spec, REF_SCORES["antmaze"],
                         f"uniform random actions in the {size} AntMaze evaluation maze")
    print(f"[collect] wrote {dataset_id}: {args.transitions} transitions, {len(episodes)} episodes. "
          f"Use it with --env-id {env_id} --dataset-id {dataset_id}")


def main(args: Args) -> None:
    from stable_baselines3 import SAC
    from torch.utils.tensorboard import SummaryWriter
    import minari

    if args.datasets_path:
        os.environ["MINARI_DATASETS_PATH"] = os.path.abspath(args.datasets_path)
    seed_everything(args.seed)
    if args.env.startswith("antmaze"):
        return collect_antmaze(args)
    if args.env not in MUJOCO_ENVS:
        sys.exit(f"error: unknown --env {args.env!r}; choose one of {list(MUJOCO_ENVS)} or antmaze-umaze/-medium/-large")

    work = os.path.join(args.work_dir, args.env, f"seed{args.seed}")
    os.makedirs(work, exist_ok=True)
    writer = SummaryWriter(f"runs/collect_{args.env}_seed{args.seed}")
    progress_file = os.path.join(work, "progress.json")
    progress = json.load(open(progress_file)) if os.path.exists(progress_file) else {"step": 0, "snapshots": []}
    t0 = time.time()

    # 1. Online SAC with snapshots; resumes from the last snapshot's model and replay buffer.
    env = make_env(f"{args.env}-random")
    if progress["step"] > 0:
        print(f"[collect] resuming SAC at step {progress['step']}")
        model = SAC.load(os.path.join(work, "sac_latest.zip"), env=env, device=args.device)
        model.load_replay_buffer(os.path.join(work, "replay_buffer.pkl"))
        # learn() restarts the env: the episode in progress at the snapshot was cut, a truncation.
        last = (model.replay_buffer.pos - 1) % model.replay_buffer.buffer_size
        model.replay_buffer.dones[last] = model.replay_buffer.timeouts[last] = 1.0
    else:
        model = SAC("MlpPolicy", env, buffer_size=args.total_timesteps, learning_starts=args.learning_starts,
                    seed=args.seed, device=args.device, verbose=0)
    if progress["step"] < args.total_timesteps:
        model.learn(args.total_timesteps - progress["step"], reset_num_timesteps=False,
                    callback=snapshot_callback(args, work, progress, writer))
    progress["sac_seconds"] = progress.get("sac_seconds", 0.0) + time.time() - t0

    # 2. Pick the snapshots: final, and "medium" = eval return nearest one third of the final's.
    snaps = progress["snapshots"]
    final = snaps[-1]
    medium = min(snaps[:-1] or snaps, key=lambda s: abs(s["return"] - final["return"] / 3))
    print(f"[collect] final policy: step {final['step']}, return {final['return']:.1f}; "
          f"medium snapshot: step {medium['step']}, return {medium['return']:.1f}")

    # 3. Write the six datasets; one that already exists is kept (resuming).
    spec, ref = gym.spec(MUJOCO_ENVS[args.env]), REF_SCORES[args.env]
    stats = progress.setdefault("datasets", {})
    rollout_env = make_env(f"{args.env}-random")
    rollout_env.action_space.seed(args.seed)
    replay = model.replay_buffer
    for kind, policy_path in (("random", None), ("medium", medium["path"]), ("expert", final["path"]),
                              ("medium-replay", medium["path"]), ("full-replay", final["path"]),
                              ("medium-expert", final["path"])):
        dataset_id = f"local/{args.env}/{kind}-v0"
        if dataset_id in minari.list_local_datasets():
            continue
        if kind in ("random", "medium", "expert"):
            if policy_path is None:
                act = lambda o: rollout_env.action_space.sample()  # noqa: E731
            else:
                policy = SAC.load(policy_path, device=args.device)
                act = lambda o, p=policy: p.predict(o, deterministic=False)[0]  # noqa: E731
            episodes, returns = rollout_episodes(rollout_env, act, args.transitions, args.seed + len(stats) + 1)
            stats[kind] = {"return": float(np.mean(returns)),
                           "normalised": float(normalized_score(f"{args.env}-{kind}", np.mean(returns)))}
            description = f"D4RL-style {kind}: {'uniform random actions' if policy_path is None else policy_path}"
        elif kind == "medium-expert":
            episodes = [minari_episode_to_dict(e, i) for i, e in enumerate(
                [*minari.load_dataset(f"local/{args.env}/medium-v0").iterate_episodes(),
                 *minari.load_dataset(f"local/{args.env}/expert-v0").iterate_episodes()])]
            description = "D4RL-style medium-expert: medium ∪ expert"
        else:
            end = medium["step"] if kind == "medium-replay" else replay.size()
            episodes = replay_to_episodes(replay, end)
            description = f"D4RL-style {kind}: the SAC replay buffer, steps 0-{end}"
        stats.setdefault(kind, {}).update(transitions=int(sum(len(e["actions"]) for e in episodes)),
                                          episodes=len(episodes))
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
