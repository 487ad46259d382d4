"""Every shell and Python block of the README and of the docs' Get started, Deploy and Stream
alarm pages runs.

A small collector of fenced code blocks: per page, its `bash` / `sh` / `shell` and `python`
blocks run in order in one temporary folder (a later block uses the files of an earlier one),
with this checkout first on PYTHONPATH. A block that cannot run here is marked in the page by an
HTML comment on the line(s) before it, `<!-- skip: REASON -->` (needs a GPU, a Jetson, a camera,
a server, or a long run), which the collector honours and reports. Every page except the README
starts with the Quick start's files in its folder (model.onnx, id.npz, test.npy, ood.npy), as
the pages say. Other languages (toml, text, ...) are not run.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs" / "get-started").glob("*.md")),
         *sorted((REPO / "docs" / "deploy").glob("*.md")), REPO / "docs" / "stream" / "index.md"]
SHELL, PYTHON = {"bash", "sh", "shell", "console"}, {"python", "py"}
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)[^\n]*$")
SKIP = re.compile(r"<!--\s*skip:\s*(?P<reason>.*?)\s*-->", re.S)
TIMEOUT_S = 120


@dataclass
class Block:
    page: Path
    line: int
    lang: str
    code: str
    skip: str | None  # the reason, when the page marks the block as not runnable here

    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a page, with the skip reason of the comment right before each."""
    lines = page.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, fence, indent = i, m["fence"], len(m["indent"])
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        code = "\n".join(line[indent:] for line in lines[i + 1:j])
        k = start - 1  # the skip comment: the last non-blank text before the fence
        while k >= 0 and not lines[k].strip():
            k -= 1
        before = "\n".join(lines[max(0, k - 3):k + 1]) if k >= 0 else ""
        found = list(SKIP.finditer(before))
        skip = found[-1]["reason"] if found and before.rstrip().endswith("-->") else None
        out.append(Block(page, start + 1, m["lang"].lower(), code, skip))
        i = j + 1
    return out


def runnable(page: Path) -> list[Block]:
    return [b for b in blocks(page) if b.lang in SHELL | PYTHON]


def quick_start_files(folder: Path) -> None:
    """The README's Quick start files: the shipped digits CNN and the digits splits."""
    from edgeood.zoo import digits
    d = digits.load_data(0)
    np.savez(folder / "id.npz", images=d.val[0], labels=d.val[1])
    np.save(folder / "test.npy", d.test[0])
    np.save(folder / "ood.npy", d.near)
    shutil.copy(digits.shipped_model(), folder / "model.onnx")


def environment(bindir: Path) -> dict[str, str]:
    """This checkout first on PYTHONPATH; `python` and `edgeood` are this interpreter and this
    checkout's CLI (shims in bindir), whatever else is installed."""
    bindir.mkdir(parents=True, exist_ok=True)
    for name, cmd in (("python", f'exec "{sys.executable}" "$@"'),
                      ("python3", f'exec "{sys.executable}" "$@"'),
                      ("edgeood", f'exec "{sys.executable}" -m edgeood.cli "$@"')):
        shim = bindir / name
        shim.write_text(f"#!/bin/sh\n{cmd}\n", encoding="utf-8")
        shim.chmod(0o755)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["PATH"] = str(bindir) + os.pathsep + env.get("PATH", "")
    env.setdefault("MPLBACKEND", "Agg")
    return env


def run_block(block: Block, cwd: Path, env: dict[str, str]) -> None:
    if block.lang in SHELL:
        cmd = ["bash", "-euo", "pipefail", "-c", block.code]
    else:
        cmd = [sys.executable, "-c", block.code]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    assert proc.returncode == 0, (f"{block.where()} ({block.lang}) exited {proc.returncode}\n"
                                  f"--- code\n{block.code}\n--- stdout\n{proc.stdout[-3000:]}"
                                  f"\n--- stderr\n{proc.stderr[-3000:]}")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_page_examples_run(page, tmp_path):
    todo = runnable(page)
    skipped = [b for b in todo if b.skip is not None]
    for b in skipped:  # reported with -rs / -s; a skip must say why
        assert b.skip, f"{b.where()}: a skip comment needs its reason"
        print(f"not run: {b.where()}: {b.skip}")
    work = tmp_path / "work"
    work.mkdir()
    if page.name != "README.md":
        quick_start_files(work)
    env = environment(tmp_path / "bin")
    for block in todo:
        if block.skip is None:
            run_block(block, work, env)


def test_collector_reads_fences_and_skips(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n\n<!-- skip: needs a Jetson -->\n```bash\nexit 1\n```\n\n"
                    "```python\nprint(1)\n```\n\n```toml\nx = 1\n```\n", encoding="utf-8")
    found = blocks(page)
    assert [(b.lang, b.skip) for b in found] == [("bash", "needs a Jetson"), ("python", None),
                                                ("toml", None)]
    assert [b.lang for b in runnable(page)] == ["bash", "python"]


def test_every_page_has_examples_or_says_so():
    """The pages the brief names exist and hold runnable or explained blocks."""
    for page in PAGES:
        assert page.is_file(), page
    assert sum(1 for p in PAGES for b in runnable(p) if b.skip is None) >= 10
