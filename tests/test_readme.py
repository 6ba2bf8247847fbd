"""The README, top to bottom (issue 21, item 2): every ```bash block runs, in the
order written, in one fresh folder, and leaves what its text promises.

What is swapped, so that it runs anywhere in minutes:

- the data: ``$NUMBACNN_DATA`` points to a small generated Fashion-MNIST (four IDX
  files, 28x28, 400 train / 100 test images; test image 0 is class 9, an ankle
  boot, as in the real test set) instead of the Debian package;
- installers: ``apt-get``, ``pip`` and ``sudo`` are shims on ``PATH`` that record
  their arguments and succeed (numbacnn is already importable here, from this
  checkout); ``numbacnn`` and ``python`` run this interpreter.

The README's text is not changed for the test. A block is skipped only when the
line before its fence is ``<!-- readme-test: skip (why) -->`` (the test suite
itself, benchmarks, other commits of a git clone); the test checks there are few.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from numbacnn.data import write_idx

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"(?P<before>[^\n]*)\n```(?P<lang>[a-z]*)\n(?P<body>.*?)\n```", re.S)
SKIP = re.compile(r"<!-- readme-test: skip \((?P<why>[^)]+)\) -->")
MAX_SKIPPED = 4


def readme_blocks(text: str) -> list[tuple[str, str | None]]:
    """(commands, why skipped or None) of every ```bash block, in order."""
    blocks = []
    for match in FENCE.finditer(text):
        if match["lang"] not in ("bash", "sh", "shell", "console"):
            continue
        skip = SKIP.search(match["before"])
        blocks.append((match["body"], skip["why"] if skip else None))
    return blocks


def write_small_fashion_mnist(folder: Path) -> Path:
    """Four IDX files shaped like Fashion-MNIST's; brightness encodes the class."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for split, n in (("train", 400), ("t10k", 100)):
        labels = np.roll(np.arange(n) % 10, 1).astype(np.uint8)  # image 0: class 9 (ankle boot)
        images = (rng.integers(0, 60, (n, 28, 28)) + labels[:, None, None] * 18).astype(np.uint8)
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
    return folder


def write_shims(folder: Path, log: Path) -> Path:
    folder.mkdir()
    scripts = {name: f'#!/bin/sh\necho "{name} $*" >> "{log}"\n' for name in ("apt-get", "pip", "sudo")}
    scripts["sudo"] += 'exec "$@"\n'
    scripts["numbacnn"] = f'#!/bin/sh\nexec "{sys.executable}" -m numbacnn.cli "$@"\n'
    scripts["python"] = f'#!/bin/sh\nexec "{sys.executable}" "$@"\n'
    for name, body in scripts.items():
        path = folder / name
        path.write_text(body)
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return folder


# What each block's text promises, checked after it ran: (a command the block
# contains, files that must exist afterwards, text its output must contain).
PROMISES = [
    ("numbacnn train\n", ["runs/tiny_vgg/checkpoint.npz", "runs/tiny_vgg/metrics.json"],
     ["test accuracy", "saved checkpoint.npz, metrics.json"]),
    ("--resume --epochs 5 --out runs/fmnist",
     ["runs/fmnist/checkpoint.npz", "runs/fmnist/evaluation/images/ankle_boot/00000.png"],
     ["epoch 5/5", "per class:", "runs/fmnist/evaluation/images/ankle_boot/00000.png: "]),
    ("--dataset imagefolder", ["my_images/images/ankle_boot/00000.png", "runs/mine/checkpoint.npz"], []),
    ("--batch-norm --out runs/batch_norm", ["runs/batch_norm/checkpoint.npz", "runs/dropout/checkpoint.npz"], []),
    ("numbacnn explain conv", ["runs/report/index.html"], ["verdict: NOT symmetric", "suggestions"]),
    ("numbacnn explore runs/tiny_vgg", ["explore.html", "photos.html"], []),
    ("numbacnn sweep report", ["runs/sweep/results.jsonl", "runs/sweep/summary.md"], []),
]


def test_readme_blocks_are_found_and_few_are_skipped():
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    skipped = [why for _, why in blocks if why]
    assert len(blocks) >= 8 and len(skipped) <= MAX_SKIPPED, skipped
    text = "\n".join(body for body, why in blocks if not why)
    for needle, _, _ in PROMISES:
        assert needle in text + "\n", f"no README block runs {needle!r}"


@pytest.mark.slow
def test_readme_runs_top_to_bottom(tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("PIL")
    pytest.importorskip("distributed")
    work = tmp_path / "fresh"
    work.mkdir()
    log = tmp_path / "installers.log"
    env = dict(os.environ)
    env.update(PATH=f"{write_shims(tmp_path / 'bin', log)}{os.pathsep}{env['PATH']}",
               NUMBACNN_DATA=str(write_small_fashion_mnist(tmp_path / "data")),
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    ran = []
    for body, why in readme_blocks(README.read_text(encoding="utf-8")):
        if why:
            continue
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", body], cwd=work, env=env,
                              capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, f"README block failed (exit {done.returncode}):\n{body}\n" \
                                     f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
        ran.append(body)
        for needle, files, outputs in PROMISES:
            if needle in body + "\n":
                for name in files:
                    assert (work / name).is_file(), f"{name} missing after:\n{body}"
                for text in outputs:
                    assert text in done.stdout, f"{text!r} not printed by:\n{body}\n{done.stdout[-3000:]}"
    installers = log.read_text()
    assert "apt-get install -y dataset-fashion-mnist" in installers and "pip install -e ." in installers
    assert len(ran) >= 6
