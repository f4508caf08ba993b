"""Dataset names, resolution and loading (common.py), and making datasets (collect_dataset.py)."""

import numpy as np
import pytest

import collect_dataset as cd
import common


def test_unknown_env_id_lists_valid_names():
    with pytest.raises(SystemExit) as err:
        common.parse_env_id("hopper-mediocre")
    assert "hopper-medium-replay" in str(err.value) and "antmaze-large-diverse" in str(err.value)


def test_there_are_24_names_and_each_has_an_env_family():
    assert len(common.ENV_IDS) == 24
    for env_id in common.ENV_IDS:
        env, _ = common.parse_env_id(env_id)
        assert env in common.REF_SCORES


def test_normalized_score_uses_d4rl_reference_returns():
    assert common.normalized_score("hopper-medium", [-20.272305, 3234.3]).tolist() == pytest.approx([0.0, 100.0])
    assert common.normalized_score("walker2d-expert", [4592.3])[0] == pytest.approx(100.0)
    assert common.normalized_score("antmaze-umaze", [1.0, 0.0]).tolist() == [100.0, 0.0]
    assert common.episode_outcome("antmaze-umaze", 37.0, True) == 1.0
    assert common.episode_outcome("hopper-medium", 37.0, True) == 37.0


def test_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    assert common.resolve_dataset("hopper-medium", "some/explicit-v3") == (["some/explicit-v3"], "explicit")
    assert common.resolve_dataset("hopper-medium") == (["mujoco/hopper/medium-v0"], "download")
    assert common.resolve_dataset("walker2d-medium-expert") == (
        ["mujoco/walker2d/medium-v0", "mujoco/walker2d/expert-v0"],
        "download",
    )
    assert common.resolve_dataset("antmaze-large-play") == (["D4RL/antmaze/large-play-v1"], "download")
    with pytest.raises(SystemExit) as err:
        common.resolve_dataset("hopper-full-replay")
    assert "python collect_dataset.py --env hopper" in str(err.value)


def test_download_path_asks_minari_to_download(tmp_path, monkeypatch):
    """The published id is requested with download=True; a failure is one line (tests/test_download.py)."""
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    calls = []

    def fake_load(dataset_id, download=False):
        calls.append((dataset_id, download))
        raise ConnectionError("no network in tests")

    monkeypatch.setattr(minari, "load_dataset", fake_load)
    with pytest.raises(SystemExit, match="ConnectionError: no network in tests"):
        common.load_dataset("halfcheetah-expert", verbose=False)
    assert calls == [("mujoco/halfcheetah/expert-v0", True)]


def test_collected_datasets_are_listed_and_resolve_locally(pipeline):
    import minari

    listed = minari.list_local_datasets()
    for kind in common.MUJOCO_KINDS:
        assert f"local/hopper/{kind}-v0" in listed
        assert common.resolve_dataset(f"hopper-{kind}") == ([f"local/hopper/{kind}-v0"], "local")
    ds = minari.load_dataset("local/hopper/medium-v0")
    assert ds.storage.metadata["ref_min_score"] == pytest.approx(-20.272305)
    assert ds.storage.metadata["ref_max_score"] == pytest.approx(3234.3)
    assert (pipeline["work"] / "datasets/local/hopper/medium-v0/policy").is_dir()


@pytest.mark.parametrize("kind", ["random", "medium", "expert", "medium-replay", "full-replay", "medium-expert"])
def test_loaded_arrays(pipeline, kind):
    data, make_env, score = common.load_dataset(f"hopper-{kind}", verbose=False)
    n = len(data["rewards"])
    assert data["observations"].shape == (n, 11) and data["next_observations"].shape == (n, 11)
    assert data["actions"].shape == (n, 3)
    assert all(v.dtype == np.float32 for v in data.values())
    # terminals and timeouts are kept apart, and each episode ends in exactly one of them
    assert not np.any((data["terminals"] > 0) & (data["timeouts"] > 0))
    assert data["terminals"][-1] + data["timeouts"][-1] == 1
    ends = (data["terminals"] > 0) | (data["timeouts"] > 0)
    # within an episode, next_observations[i] is observations[i + 1]
    inside = np.flatnonzero(~ends[:-1])
    np.testing.assert_array_equal(data["next_observations"][inside], data["observations"][inside + 1])
    env = make_env()
    assert env.observation_space.shape == (11,)
    env.close()
    assert score([3234.3])[0] == pytest.approx(100.0)


def test_random_dataset_has_terminals_and_cut_last_episode(pipeline):
    data, _, _ = common.load_dataset("hopper-random", verbose=False)
    assert data["terminals"].sum() > 0  # a random hopper falls
    assert data["timeouts"][-1] == 1  # the budget cut the last episode
    assert len(data["rewards"]) == 300


def test_medium_expert_is_the_union(pipeline):
    med, _, _ = common.load_dataset("hopper-medium", verbose=False)
    exp, _, _ = common.load_dataset("hopper-expert", verbose=False)
    both, _, _ = common.load_dataset("hopper-medium-expert", verbose=False)
    for k in both:
        np.testing.assert_array_equal(both[k], np.concatenate([med[k], exp[k]]))


def test_replay_datasets_are_the_buffer(pipeline):
    mr, _, _ = common.load_dataset("hopper-medium-replay", verbose=False)
    fr, _, _ = common.load_dataset("hopper-full-replay", verbose=False)
    assert len(mr["rewards"]) == 200 and len(fr["rewards"]) == 600
    np.testing.assert_array_equal(fr["observations"][:199], mr["observations"][:199])


def test_dimension_mismatch_is_refused_with_both_shapes(pipeline):
    with pytest.raises(SystemExit) as err:
        common.load_dataset("halfcheetah-medium", dataset_id="local/hopper/medium-v0", verbose=False)
    assert "(11, 3)" in str(err.value) and "(17, 6)" in str(err.value)


def test_failed_write_leaves_no_broken_dataset(pipeline, monkeypatch):
    import minari

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(minari, "create_dataset_from_buffers", broken)
    with pytest.raises(RuntimeError):
        cd.write_minari_dataset("local/hopper/broken-v0", [], "Hopper-v5", (0.0, 1.0), "x")
    listed = minari.list_local_datasets()
    assert "local/hopper/broken-v0" not in listed and "local/hopper/medium-v0" in listed


def test_collect_resumes_without_redoing_work(pipeline, capsys):
    """A second run with the same arguments finds SAC finished and every dataset written."""
    args = cd.Args(
        env="hopper",
        total_timesteps=600,
        snapshot_every=200,
        learning_starts=100,
        transitions=300,
        eval_episodes=1,
        work_dir=str(pipeline["work"] / "collect"),
    )
    cd.main(args)
    out = capsys.readouterr().out
    assert "resuming SAC at step 600" in out and "wrote" not in out
