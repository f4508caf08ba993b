"""The README's "ITPO with your own models" example runs as written and adapts the actor."""

import os
import re

import numpy as np
import torch

from conftest import ROOT


def readme_example() -> str:
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text.split("## ITPO with your own models", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_adapts_any_actor():
    namespace = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    agent, actions = namespace["agent"], namespace["actions"]
    assert actions.shape == (2, namespace["m"]) and np.isfinite(actions).all()
    moved = [not torch.equal(agent.params[k][i], agent.pretrained[k]) for k in agent.params for i in range(2)]
    assert any(moved) and int(agent.skipped) == 0


def test_readme_example_needs_only_the_two_files_it_names(tmp_path):
    """ "Copy itpo_eval.py and common.py": the example runs in a folder that holds only those two files."""
    import shutil
    import subprocess
    import sys

    for name in ("itpo_eval.py", "common.py"):
        shutil.copy(os.path.join(ROOT, name), tmp_path / name)
    (tmp_path / "example.py").write_text(readme_example() + "\nprint('shape', actions.shape)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "shape (2, 3)" in result.stdout
