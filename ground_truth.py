"""Ground truth for every adaptation of ITPO (`python itpo_eval.py --ground-truth`).

At every k-th real state s_t of the ITPO episodes, the simulator's state is copied into separate
probe envs (three per episode, one per ψ rolled out; the evaluation envs are only read, never stepped
or restored) and the step of Algorithm 1 that was just taken is scored in the real simulator:

* the world model's part: the objective ITPO ascends,
      Ĵ(ψ) = Σ_{j<H} γ^j r_j + γ^H min_i Q_φ,i(s_H, π_ψ(s_H)),
  rolled out with the simulator's transitions and rewards instead of f_θ and r_ξ (the simulator is
  deterministic, so the M particles collapse to one rollout; a fall inside H ends the rewards and
  zeroes the terminal value, as the imagined return's survival weights do), for ψ before and after
  the step's E inner steps, next to the imagined Ĵ of both at the step's noise ε. Agreement is the
  share of steps where Δ_true = Ĵ_true(ψ_after) − Ĵ_true(ψ_before) and Δ_imagined have the same
  sign. The world model's H-step error is ‖s̃_H − s_H‖ along π_ψ_before, per state dimension in
  units of the world model's training-set state std (RMS over dimensions, mean over particles);
  undefined (NaN) where the real rollout fell inside H;
* the critic's part: the real return of the next T steps from s_t under the adapted ψ (held fixed)
  and under the pretrained actor, whether each falls, and the critic's error
  min_i Q_φ,i(s_t, π_ψ(s_t)) − [Σ_{j<T} γ^j r_j + γ^T min_i Q_φ,i(s_T, π_ψ(s_T))] (0 after a fall).

Everything is in the env's reward units, as Ĵ is in `imagine_rollout`: Q_φ (trained on rewards × the
critic's reward scale) is divided by that scale. The probes step the env past its time limit (Q_φ's value
does not end there either). Each probe also steps the copy with the action the episode then takes
and checks, at the next real step, that the evaluation env arrived in exactly the same state.
"""

from __future__ import annotations

import json
import os
import sys
import time

import gymnasium as gym
import numpy as np
import torch

from common import imagine_rollout

# What is recorded at each probed step of each episode (ground_truth_steps.json)
STEP_FIELDS = (
    "t",
    "imagined_before",
    "imagined_after",
    "true_before",
    "true_after",
    "world_model_error",
    "return_adapted",
    "return_pretrained",
    "fell_adapted",
    "fell_pretrained",
    "q_adapted",
    "target_adapted",
    "q_pretrained",
    "target_pretrained",
)


# ---------------------------------------------------------------------------------------------
# The simulator: copy, restore, step
# ---------------------------------------------------------------------------------------------


class Simulator:
    """What a probe needs of an env: copy its state, restore it (returning the observation), step it.

    MuJoCo envs: the full integration state of mj_getState/mj_setState — qpos and qvel alone are not
    enough (the constraint solver's warm start changes walker2d's and halfcheetah's next step). Any
    other env plugs in by defining `get_sim_state() -> state` and `set_sim_state(state) -> obs` on its
    unwrapped env. Steps go to the unwrapped env, past the time limit."""

    def __init__(self, env: gym.Env):
        from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

        self.env = env.unwrapped
        self.mujoco = isinstance(self.env, MujocoEnv)
        pluggable = all(callable(getattr(self.env, m, None)) for m in ("get_sim_state", "set_sim_state"))
        if not self.mujoco and not pluggable:
            sys.exit(
                f"error: --ground-truth needs an env whose simulator state can be copied and restored (the MuJoCo "
                f"locomotion envs, or get_sim_state/set_sim_state); {type(self.env).__name__} has neither"
            )

    def get_state(self) -> np.ndarray:
        if not self.mujoco:
            return self.env.get_sim_state()
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        state = np.empty(mujoco.mj_stateSize(self.env.model, spec))
        mujoco.mj_getState(self.env.model, self.env.data, state, spec)
        return state

    def set_state(self, state: np.ndarray) -> np.ndarray:
        if not self.mujoco:
            return self.env.set_sim_state(state)
        import mujoco

        mujoco.mj_setState(self.env.model, self.env.data, state, mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_forward(self.env.model, self.env.data)
        return self.env._get_obs()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool]:
        obs, reward, terminated, _, _ = self.env.step(action)
        return obs, float(reward), bool(terminated)


def real_rollout(sims: list[Simulator], states: list, policy, params: dict, limits, like: torch.Tensor) -> dict:
    """Restore each sim to its state and act with its π_ψ (params stacked [n, ...], held fixed) for
    limits[i] real steps, all rows in lockstep (one policy call per step). The policy sees float32
    observations, as in `run_episodes`. Returns rewards [n, L] (0 after a fall or the row's limit),
    observations [n, L + 1, d] (frozen after either) and fell_at [n]: the step whose transition ended
    the episode, L if none did (L = max(limits))."""
    obs = np.stack([sim.set_state(s) for sim, s in zip(sims, states)]).astype(np.float32)
    n, steps = len(sims), max(limits)
    rewards, fell_at = np.zeros((n, steps)), np.full(n, steps)
    observations = np.empty((n, steps + 1, obs.shape[1]), np.float32)
    observations[:, 0] = obs
    for j in range(steps):
        with torch.no_grad():
            s = torch.as_tensor(obs, device=like.device).to(like.dtype)
            actions = policy(params, s[:, None, :])[:, 0].float().cpu().numpy()
        for i in np.flatnonzero((fell_at == steps) & (j < np.asarray(limits))):
            obs[i], rewards[i, j], terminated = sims[i].step(actions[i])
            if terminated:
                fell_at[i] = j
        observations[:, j + 1] = obs
    return {"rewards": rewards, "observations": observations, "fell_at": fell_at}


def imagined_final_states(policy, params, world, s0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """s̃_H of every particle: s0 [N, d], eps [N, M, H, ...] -> [N, M, d] (the states of `imagine_rollout`)."""
    n, m, horizon = eps.shape[:3]
    s = s0[:, None, :].expand(n, m, s0.shape[-1])
    for j in range(horizon):
        s = world.f(s, policy(params, s), eps[:, :, j])
    return s


# ---------------------------------------------------------------------------------------------
# The probe
# ---------------------------------------------------------------------------------------------
class GroundTruth:
    """The `probe` of `run_episodes` for an adapting `ITPOAgent`: scores the step at every k-th real
    state in three probe envs per episode (`make_env()` makes them); `finish` writes the summaries."""

    def __init__(self, agent, make_env, every: int = 1, horizon: int = 100, writer=None):
        if not agent.adapt:
            sys.exit("error: --ground-truth scores ITPO's adaptation; this agent does not adapt")
        self.agent, self.make_env, self.every, self.horizon, self.writer = agent, make_env, every, horizon, writer
        like = next(iter(agent.params.values()))
        std = getattr(getattr(agent.world, "normalizer", None), "obs_std", None)
        self.state_std = (std if std is not None else torch.ones(like.shape[-1])).to(like.device, like.dtype)
        self.state_std_source = "world model's training-set state std" if std is not None else "none (raw units)"
        # Simulators of the evaluation envs (read only) and, per episode, of three probe envs: ψ before,
        # ψ after and the pretrained ψ roll out side by side
        self.real = self.sims = None
        self.steps = [{k: [] for k in STEP_FIELDS} for _ in range(agent.args.episodes)]
        self.pending: dict[int, np.ndarray] = {}  # episode -> the state the copy reached with the real action
        self.checked = self.mismatches = self.t = 0
        self.seconds = 0.0

    def __call__(self, envs, obs: np.ndarray, alive: np.ndarray, actions: np.ndarray) -> None:
        start = time.perf_counter()
        if self.sims is None:
            self.real = [Simulator(env) for env in envs]
            probes = [[self.make_env() for _ in range(3)] for _ in envs]
            for env in sum(probes, []):
                env.reset(seed=0)
            self.sims = [[Simulator(env) for env in three] for three in probes]
        for i, predicted in self.pending.items():  # the copy's step was the evaluation env's step
            self.checked += 1
            self.mismatches += not np.array_equal(self.real[i].get_state(), predicted)
        self.pending = {}
        if self.t % self.every == 0:
            self.probe(np.flatnonzero(alive), obs, actions)
        self.t += 1
        self.seconds += time.perf_counter() - start

    def probe(self, idx: np.ndarray, obs: np.ndarray, actions: np.ndarray) -> None:
        ag, H, T = self.agent, self.agent.args.horizon, self.horizon
        gamma, scale = ag.gamma, ag.reward_scale
        states = [self.real[i].get_state() for i in idx]
        for i, state in zip(idx, states):
            sim = self.sims[i][0]
            sim.set_state(state)
            sim.step(actions[i])
            self.pending[i] = sim.get_state()

        before, eps, after = ag.last_adaptation["params_before"], ag.last_adaptation["eps"], ag.params
        like = next(iter(after.values()))
        s0 = torch.as_tensor(obs, device=like.device).to(like.dtype)  # the states the agent adapted at
        rows = torch.as_tensor(idx, device=like.device)
        with torch.no_grad():
            imagined = {
                name: imagine_rollout(ag.policy, p, ag.critic, ag.world, ag.reward, s0, eps, gamma, scale)[rows]
                for name, p in (("before", before), ("after", after))
            }
            s_imagined = imagined_final_states(ag.policy, before, ag.world, s0, eps)[rows]

        def value(params, observations):  # min_i Q_φ,i(s, π_ψ(s)) [n], in the env's reward units
            with torch.no_grad():
                s = torch.as_tensor(observations, device=like.device).to(like.dtype)
                return ag.critic(s, ag.policy(params, s[:, None, :])[:, 0]).min(0).values.cpu().double().numpy() / scale

        def discounted(rollout, params, steps):  # Σ_{j<steps} γ^j r_j + γ^steps min_i Q_φ,i(s_steps, ·) · alive
            ret = (rollout["rewards"][:, :steps] * gamma ** np.arange(steps)).sum(1)
            alive = rollout["fell_at"] >= steps
            return ret + gamma**steps * alive * value(params, rollout["observations"][:, steps])

        pick = lambda p: {k: v[rows] for k, v in p.items()}  # noqa: E731
        psi_before, psi_after = pick(before), pick(after)
        psi_pre = {k: v.expand(len(idx), *v.shape) for k, v in ag.pretrained.items()}
        n, length = len(idx), max(H, T)
        roll = real_rollout(
            [self.sims[i][r] for r in range(3) for i in idx],
            states * 3,
            ag.policy,
            {k: torch.cat([psi_before[k], psi_after[k], psi_pre[k]]) for k in psi_before},
            [H] * n + [length] * n + [length] * n,
            like,
        )
        roll_before, roll_after, roll_pre = ({k: v[r * n : (r + 1) * n] for k, v in roll.items()} for r in range(3))

        s_real = torch.as_tensor(roll_before["observations"][:, H], device=like.device).to(like.dtype)
        error = ((s_imagined - s_real[:, None, :]) / self.state_std).pow(2).mean(-1).sqrt().mean(-1)
        error = np.where(roll_before["fell_at"] < H, np.nan, error.cpu().double().numpy())
        row = {
            "t": np.full(len(idx), self.t),
            "imagined_before": imagined["before"].cpu().double().numpy(),
            "imagined_after": imagined["after"].cpu().double().numpy(),
            "true_before": discounted(roll_before, psi_before, H),
            "true_after": discounted(roll_after, psi_after, H),
            "world_model_error": error,
            "return_adapted": roll_after["rewards"][:, :T].sum(1),
            "return_pretrained": roll_pre["rewards"][:, :T].sum(1),
            "fell_adapted": roll_after["fell_at"] < T,
            "fell_pretrained": roll_pre["fell_at"] < T,
            "q_adapted": value(psi_after, roll_after["observations"][:, 0]),
            "target_adapted": discounted(roll_after, psi_after, T),
            "q_pretrained": value(psi_pre, roll_pre["observations"][:, 0]),
            "target_pretrained": discounted(roll_pre, psi_pre, T),
        }
        for j, i in enumerate(idx):
            for k in STEP_FIELDS:
                self.steps[i][k].append(row[k][j].item())
        if self.writer is not None:  # means over the probed episodes at this real step
            for tag, x in (
                ("imagined_gain", row["imagined_after"] - row["imagined_before"]),
                ("true_gain", row["true_after"] - row["true_before"]),
                ("t_step_gain", row["return_adapted"] - row["return_pretrained"]),
                ("world_model_error", row["world_model_error"]),
                ("critic_error", row["q_adapted"] - row["target_adapted"]),
            ):
                if np.isfinite(x).any():
                    self.writer.add_scalar(f"ground_truth/{tag}", float(np.nanmean(x)), self.t)

    def finish(self, run_dir: str | None = None) -> dict:
        """The summary (overall and per episode); with `run_dir`, also the per-step arrays
        (ground_truth_steps.json), the figure (ground_truth.png) and the tensorboard scalars."""
        episodes = [{k: np.asarray(v, dtype=float) for k, v in ep.items()} for ep in self.steps]
        pooled = {k: np.concatenate([ep[k] for ep in episodes]) for k in STEP_FIELDS}
        n = len(episodes)
        summary = {
            "every": self.every,
            "horizon_T": self.horizon,
            "horizon_H": self.agent.args.horizon,
            "state_std": self.state_std_source,
            "seconds": self.seconds,
            "seconds_per_episode": self.seconds / max(n, 1),
            "determinism": {"checked": self.checked, "mismatches": self.mismatches},
            "overall": summarise(pooled),
            "episodes": [summarise(ep) for ep in episodes],
        }
        if self.mismatches:
            print(
                f"[ground truth] WARNING: in {self.mismatches} of {self.checked} checks the restored copy did not "
                f"reproduce the evaluation env's step exactly; the ground truth is not exact"
            )
        o = summary["overall"]
        print(
            f"[ground truth] agreement {fmt(o['agreement'])} (imagined Ĵ rose at {fmt(o['imagined_rose'])} of "
            f"{o['probed_steps']} steps, true Ĵ at {fmt(o['true_rose'])}); adapted ψ beat ReBRAC over T={self.horizon} "
            f"at {fmt(o['adapted_beat_pretrained'])}, mean gain {fmt(o['mean_t_step_gain'], '+.2f')}; world model "
            f"H-step error {fmt(o['world_model_error'])} σ; critic error {fmt(o['critic_error'], '+.2f')} "
            f"(|·| {fmt(o['critic_abs_error'], '.2f')}); {self.seconds:.1f} s"
        )
        if run_dir is not None:
            steps_path = os.path.join(run_dir, "ground_truth_steps.json")
            settings = {k: summary[k] for k in ("every", "horizon_T", "horizon_H", "state_std")}
            # NaN (no H-step error after a fall) as null: strict JSON
            finite = [{k: [None if x != x else x for x in v] for k, v in ep.items()} for ep in self.steps]
            with open(steps_path, "w") as f:
                json.dump({"settings": settings, "episodes": finite}, f)
            summary["steps_file"] = steps_path
            summary["figure"] = plot_episode(episodes[0], os.path.join(run_dir, "ground_truth.png"))
            if self.writer is not None:
                for k, v in o.items():
                    if v is not None:
                        self.writer.add_scalar(f"ground_truth_overall/{k}", v, 0)
                for i, ep in enumerate(summary["episodes"]):
                    for k, v in ep.items():
                        if v is not None:
                            self.writer.add_scalar(f"ground_truth_episode/{k}", v, i)
        return summary


# ---------------------------------------------------------------------------------------------
# Summaries and the figure
# ---------------------------------------------------------------------------------------------
def fmt(x, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def _mean(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else None


def summarise(steps: dict[str, np.ndarray]) -> dict:
    """Shares and means over the probed steps (of one episode, or pooled).

    agreement: share of steps where sign(Δ_true) = sign(Δ_imagined), Δ = Ĵ(ψ_after) − Ĵ(ψ_before);
    imagined_rose / true_rose: shares where each Δ > 0; adapted_beat_pretrained: share where the adapted ψ's
    real T-step return exceeds the pretrained actor's; mean_t_step_gain: the mean of that difference;
    critic_error: mean of min_i Q_φ,i(s, π_ψ(s)) − its real T-step target (> 0: the critic overestimates)."""
    d_imagined = steps["imagined_after"] - steps["imagined_before"]
    d_true = steps["true_after"] - steps["true_before"]
    ok = np.isfinite(d_imagined) & np.isfinite(d_true)
    gain = steps["return_adapted"] - steps["return_pretrained"]
    error, error_pre = steps["q_adapted"] - steps["target_adapted"], steps["q_pretrained"] - steps["target_pretrained"]
    return {
        "probed_steps": len(gain),
        "agreement": _mean((np.sign(d_imagined[ok]) == np.sign(d_true[ok])).astype(float)),
        "imagined_rose": _mean((d_imagined[ok] > 0).astype(float)),
        "true_rose": _mean((d_true[ok] > 0).astype(float)),
        "mean_imagined_gain": _mean(d_imagined),
        "mean_true_gain": _mean(d_true),
        "adapted_beat_pretrained": _mean((gain > 0).astype(float)),
        "mean_t_step_gain": _mean(gain),
        "adapted_fell": _mean(steps["fell_adapted"]),
        "pretrained_fell": _mean(steps["fell_pretrained"]),
        "world_model_error": _mean(steps["world_model_error"]),
        "world_model_error_steps": int(np.isfinite(steps["world_model_error"]).sum()),
        "critic_error": _mean(error),
        "critic_abs_error": _mean(np.abs(error)),
        "critic_error_pretrained": _mean(error_pre),
        "critic_abs_error_pretrained": _mean(np.abs(error_pre)),
        "mean_critic_target": _mean(steps["target_adapted"]),
    }


def load_steps(path: str) -> list[dict[str, np.ndarray]]:
    """The per-step arrays of each episode from ground_truth_steps.json."""
    with open(path) as f:
        episodes = json.load(f)["episodes"]
    return [{k: np.asarray(v, dtype=float) for k, v in ep.items()} for ep in episodes]


def plot_episode(steps: dict[str, np.ndarray], path: str, title: str = "episode 0") -> str:
    """Over one episode: imagined vs true gain of Ĵ per step, the adapted-minus-pretrained real T-step
    return (falls marked), and the world model's and the critic's errors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = steps["t"]
    fig, axes = plt.subplots(3, 1, figsize=(12, 8), sharex=True)
    ax = axes[0]
    ax.plot(t, steps["imagined_after"] - steps["imagined_before"], lw=0.8, label="Δ imagined Ĵ (f_θ, r_ξ)")
    ax.plot(t, steps["true_after"] - steps["true_before"], lw=0.8, label="Δ true Ĵ (simulator)")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("Ĵ(ψ after) − Ĵ(ψ before)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # beside the axes: it covers no curve
    ax = axes[1]
    ax.plot(t, steps["return_adapted"] - steps["return_pretrained"], lw=0.8, color="C2")
    for key, marker, label in (("fell_adapted", "v", "adapted ψ falls"), ("fell_pretrained", "^", "ReBRAC falls")):
        fell = steps[key] > 0
        fell[1:] &= ~fell[:-1]  # the first probed step of each run of falls: one marker per fall, not per step
        if fell.any():
            ax.scatter(t[fell], np.zeros(fell.sum()), marker=marker, s=12, label=label)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("real T-step return:\nadapted − pretrained")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax = axes[2]
    ax.plot(t, steps["world_model_error"], lw=0.8, color="C3", label="world model H-step error (σ units)")
    ax.set_ylabel("‖s̃_H − s_H‖ / σ", color="C3")
    twin = ax.twinx()
    twin.plot(t, steps["q_adapted"] - steps["target_adapted"], lw=0.8, color="C4")
    twin.axhline(0, color="C4", lw=0.5, ls=":")
    twin.set_ylabel("critic error Q − T-step target", color="C4")
    ax.set_xlabel("real step t")
    fig.suptitle(f"ITPO ground truth, {title}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
