"""The README's and the results notebook's links lead somewhere: every relative link names a file of the
repository and every #anchor a heading of the file it points into (GitHub's heading slugs)."""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md", "results/README.md"]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: str) -> set[str]:
    found, seen, fenced = set(), {}, False
    for line in open(path, encoding="utf-8"):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6} (.*)", line)):
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path: str) -> list[str]:
    text = re.sub(r"```.*?```", "", open(path, encoding="utf-8").read(), flags=re.S)  # code blocks hold no links
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+://", t)]


def test_slug_follows_github():
    assert slug("Precision (`--precision`)") == "precision---precision"
    assert slug("What each millisecond buys (`benchmarks/frontier.py`, `results/frontier/`)") == (
        "what-each-millisecond-buys-benchmarksfrontierpy-resultsfrontier"
    )
    assert slug("Hopper: where ITPO helps, and what decides it") == "hopper-where-itpo-helps-and-what-decides-it"


@pytest.mark.parametrize("doc", DOCS)
def test_every_relative_link_and_anchor_resolves(doc):
    path = os.path.join(ROOT, doc)
    broken = []
    for target in links(path):
        file, _, anchor = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
        if not os.path.exists(dest):
            broken.append(f"{target} (no file {os.path.relpath(dest, ROOT)})")
        elif anchor and dest.endswith(".md") and anchor not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {os.path.relpath(dest, ROOT)})")
    assert not broken, f"{doc}: broken links: {broken}"
