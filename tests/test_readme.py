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
