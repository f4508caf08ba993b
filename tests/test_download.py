"""The published datasets' download path, with no network: Minari's download is replaced by one that
serves a small dataset made here (the published D4RL/antmaze/umaze-v1 shape of test_antmaze.py), and
a download that fails stops with one line naming the collect_dataset.py command."""

import json
import os
import subprocess
import sys

import minari
import minari.storage.hosting
import pytest
import torch
from test_antmaze import THEIR_UMAZE, TINY_STAGES, build_published_umaze

import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PUBLISHED = "D4RL/antmaze/umaze-v1"

# Put on PYTHONPATH, it replaces Minari's download in the scripts run below by a copy from a folder.
FAKE_SERVER_SHIM = """
import os, shutil
import minari
import minari.storage.hosting as hosting


def download_dataset(dataset_id, force_download=False):
    source = os.path.join(os.environ["FAKE_MINARI_SERVER"], dataset_id)
    shutil.copytree(source, os.path.join(os.environ["MINARI_DATASETS_PATH"], dataset_id))
    print(f"[fake server] served {dataset_id}")


minari.download_dataset = hosting.download_dataset = download_dataset
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A folder holding the published-shape umaze set, as the fake server's store."""
    folder = tmp_path_factory.mktemp("server")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(folder))
        build_published_umaze()
    return folder


def replace_download(monkeypatch, fake) -> None:
    """In this process: Minari's download, under both its names (minari.load_dataset(download=True)
    calls the hosting module's), is `fake`."""
    monkeypatch.setattr(minari, "download_dataset", fake)
    monkeypatch.setattr(minari.storage.hosting, "download_dataset", fake)


def script_env(tmp_path, datasets: str, server=None) -> dict:
    """The environment of a script run: its own MINARI_DATASETS_PATH, the hub offline (nothing here
    may touch the network) and, with `server`, the fake-server shim."""
    env = {**os.environ, "MINARI_DATASETS_PATH": datasets, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if server is not None:
        shim = tmp_path / "shim"
        shim.mkdir(exist_ok=True)
        (shim / "sitecustomize.py").write_text(FAKE_SERVER_SHIM)
        env["PYTHONPATH"] = os.pathsep.join([str(shim), *filter(None, [os.environ.get("PYTHONPATH")])])
        env["FAKE_MINARI_SERVER"] = str(server)
    return env


def run_script(script: str, args: list[str], env: dict, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, script), *args], env=env, cwd=cwd, capture_output=True, text=True
    )


def test_rebrac_and_itpo_download_the_published_set(server, tmp_path, monkeypatch):
    """rebrac.py and itpo_eval.py, each with an empty MINARI_DATASETS_PATH, download the set by --env-id
    resolution and evaluate in the env it declares (its maze, 40 steps: not ours)."""
    work = tmp_path / "work"
    work.mkdir()
    first = str(tmp_path / "datasets")
    proc = run_script(
        "rebrac.py",
        "--env-id antmaze-umaze --total-updates 4 --batch-size 32 --hidden-dim 16 --eval-every 4 "
        "--checkpoint-every 4 --eval-episodes 2 --device cpu".split(),
        script_env(tmp_path, first, server),
        work,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"[data] antmaze-umaze -> {PUBLISHED} (download)" in proc.stdout
    assert proc.stdout.count(f"[fake server] served {PUBLISHED}") == 1
    assert os.path.isdir(os.path.join(first, PUBLISHED, "data"))
    ckpt = torch.load(work / "checkpoints/antmaze-umaze/rebrac_seed0.pt", weights_only=True)
    assert ckpt["eval_env"]["maze_map"] == THEIR_UMAZE and ckpt["eval_env"]["max_episode_steps"] == 40

    # the world and reward models, on the set now local (no second download)
    import train_dynamics
    import train_reward

    monkeypatch.chdir(work)
    monkeypatch.setenv("MINARI_DATASETS_PATH", first)
    replace_download(monkeypatch, lambda *a, **k: pytest.fail("downloaded twice"))
    train_dynamics.main(train_dynamics.Args(env_id="antmaze-umaze", diffusion_steps=2, **TINY_STAGES))
    train_reward.main(train_reward.Args(env_id="antmaze-umaze", **TINY_STAGES))

    second = str(tmp_path / "other-datasets")  # itpo_eval.py on a machine that has the checkpoints only
    proc = run_script(
        "itpo_eval.py",
        "--env-id antmaze-umaze --horizon 2 --particles 4 --episodes 2 --device cpu --run-name dl".split(),
        script_env(tmp_path, second, server),
        work,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(f"[fake server] served {PUBLISHED}") == 1  # ITPO's and ReBRAC's episodes: one download
    assert f"AntMaze_UMaze-v4 from the eval_env_spec of {PUBLISHED}, 40 steps" in proc.stdout
    summary = json.loads((work / "runs/dl/summary.json").read_text())
    for which in ("itpo", "rebrac"):
        assert summary[which]["env"]["maze_map"] == THEIR_UMAZE and summary[which]["lengths"] == [40, 40]


def test_offline_walker2d_is_one_line_naming_collect_dataset(tmp_path):
    """The README's user with no network: HF_HUB_OFFLINE=1 makes the hub refuse at once (as a missing
    huggingface_hub would), and rebrac.py stops with one line, leaving no half-made dataset."""
    datasets = tmp_path / "datasets"
    proc = run_script("rebrac.py", ["--env-id", "walker2d-medium"], script_env(tmp_path, str(datasets)), tmp_path)
    assert proc.returncode != 0
    assert "[data] walker2d-medium -> mujoco/walker2d/medium-v0 (download)" in proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: cannot download dataset mujoco/walker2d/medium-v0 for walker2d-medium")
    assert "python collect_dataset.py --env walker2d" in lines[0]
    assert not (datasets / "mujoco" / "walker2d" / "medium-v0").exists()


def test_explicit_dataset_missing_from_the_server(tmp_path, monkeypatch):
    """--dataset-id of a published-looking id the server does not hold: one line with Minari's reason."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))

    def not_there(dataset_id, force_download=False):
        raise ValueError(f"Couldn't find any version for dataset {dataset_id} in the remote Farama server.")

    replace_download(monkeypatch, not_there)
    with pytest.raises(SystemExit) as exit_info:
        common.load_dataset("antmaze-umaze", "D4RL/antmaze/nowhere-v1")
    message = str(exit_info.value.code)
    assert "\n" not in message and "D4RL/antmaze/nowhere-v1" in message and "Couldn't find any version" in message
    assert "python collect_dataset.py --env antmaze-umaze and drop --dataset-id" in message


def hub_errors():
    """The failures of a download, as the hub and Minari raise them."""
    errors = [
        ImportError('huggingface_hub is not installed. Please install it using `pip install "minari[hf]"`'),
        ValueError("Couldn't find any version for dataset mujoco/walker2d/medium in the remote Farama server."),
        ConnectionError("Cannot reach https://huggingface.co/api/datasets: offline mode is enabled."),
        OSError(28, "No space left on device"),
    ]
    for client in ("httpx", "httpx2"):  # huggingface_hub's HTTP client, whichever is installed
        try:
            errors.append(__import__(client).ConnectError("[Errno -2] Name or service not known"))
        except ImportError:
            pass
    return errors


@pytest.mark.parametrize("error", hub_errors(), ids=lambda e: type(e).__module__ + "." + type(e).__name__)
def test_each_download_failure_is_one_line(error, tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))

    def fail(dataset_id, force_download=False):
        os.makedirs(tmp_path / dataset_id / "data")  # a half-made download
        raise error

    replace_download(monkeypatch, fail)
    with pytest.raises(SystemExit) as exit_info:
        common.load_dataset("walker2d-medium")
    message = str(exit_info.value.code)
    assert "\n" not in message and message.startswith("error: cannot download dataset mujoco/walker2d/medium-v0")
    assert type(error).__name__ in message and "python collect_dataset.py --env walker2d" in message
    assert not (tmp_path / "mujoco" / "walker2d" / "medium-v0").exists()  # the next try starts clean


def test_a_bug_in_the_download_keeps_its_traceback(tmp_path, monkeypatch):
    """Only download failures become one line: a programming error still surfaces as itself."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))

    def buggy(dataset_id, force_download=False):
        return {}["metadata"]

    replace_download(monkeypatch, buggy)
    with pytest.raises(KeyError):
        common.load_dataset("walker2d-medium")
