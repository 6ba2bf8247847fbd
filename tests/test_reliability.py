"""Issue 9, classes 1-6, through the real command (``python -m numbacnn`` in a subprocess).

Each case asserts what a user sees: the exit status, exactly one stderr line
naming the file or option, and that nothing previously good changed (checksums of
checkpoints and inputs, no checkpoint written by a refused run).
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from numbacnn.data import load_image, write_idx
from numbacnn.errors import CheckpointError
from numbacnn.train import CHECKPOINT_NAME, load_checkpoint
from numbacnn.train.outdir import LOCK_NAME, FolderLock
from test_data import write_fake_idx_dataset

REPO = Path(__file__).resolve().parents[1]
SMALL = ("--dataset", "mnist", "--batch-size", "8", "--filters", "4", "--device", "cpu", "--no-progress",
         "--val-fraction", "0.25", "--seed", "1")


def run_cli(*args, cwd=None, env=None, timeout=240, umask=None):
    """``python -m numbacnn ARGS``; returns the CompletedProcess (text)."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("NUMBACNN_DEBUG", "NUMBACNN_DATA")}
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO), full_env.get("PYTHONPATH", "")])
    full_env.update(env or {})
    preexec = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run([sys.executable, "-m", "numbacnn", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=timeout, preexec_fn=preexec)


def one_error_line(result, *fragments, rc=2, command="train"):
    """Assert a refusal: exit status ``rc`` and exactly one stderr line, in the
    agreed format, containing every fragment. Returns the line."""
    lines = result.stderr.splitlines()
    assert result.returncode == rc, (result.returncode, result.stderr[-3000:])
    assert len(lines) == 1, result.stderr[-3000:]
    line = lines[0]
    assert line.startswith(f"numbacnn {command}: error: "), line
    for fragment in fragments:
        assert str(fragment) in line, (fragment, line)
    return line


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_checksums(folder):
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    return write_fake_idx_dataset(tmp_path_factory.mktemp("data") / "mnist", n_train=48, n_test=16, size=12)


@pytest.fixture(scope="module")
def trained(idx_dir, tmp_path_factory):
    """A real checkpoint from the command: 1 epoch on the generated data."""
    out = tmp_path_factory.mktemp("trained") / "run"
    result = run_cli("train", *SMALL, "--data-dir", idx_dir, "--epochs", "1", "--out", out)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def png(tmp_path_factory):
    pil = pytest.importorskip("PIL.Image")
    path = tmp_path_factory.mktemp("img") / "img.png"
    pil.new("L", (20, 20), 180).save(path)
    return path


# --------------------------------------------------------------------------- #
# 1. datasets
# --------------------------------------------------------------------------- #


def test_named_data_folder_is_used_or_refused_never_the_system_one(idx_dir, tmp_path):
    missing = tmp_path / "nowhere"
    result = run_cli("train", "--epochs", "1", "--out", tmp_path / "o", env={"NUMBACNN_DATA": str(missing)})
    one_error_line(result, "does not exist", missing, "$NUMBACNN_DATA")
    assert not (tmp_path / "o" / CHECKPOINT_NAME).exists()

    partial = tmp_path / "partial"
    shutil.copytree(idx_dir, partial)
    (partial / "t10k-images-idx3-ubyte.gz").unlink()
    before = tree_checksums(partial)
    result = run_cli("train", "--epochs", "1", "--data-dir", partial, "--out", tmp_path / "o")
    one_error_line(result, "t10k-images-idx3-ubyte[.gz] missing", partial, "--data-dir")
    result = run_cli("evaluate", tmp_path / "none.npz", "--data-dir", partial)
    one_error_line(result, "does not exist", command="evaluate")
    assert tree_checksums(partial) == before


@pytest.mark.parametrize("damage", ["truncated", "bad-crc"])
def test_damaged_gzip_is_one_line_naming_the_file(idx_dir, tmp_path, damage):
    data = tmp_path / "d"
    shutil.copytree(idx_dir, data)
    target = data / "train-images-idx3-ubyte.gz"
    raw = bytearray(target.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:
        raw[-8] ^= 0xFF  # the CRC-32 in the gzip trailer
    target.write_bytes(bytes(raw))
    result = run_cli("train", *SMALL, "--data-dir", data, "--epochs", "1", "--out", tmp_path / "o")
    one_error_line(result, target, "truncated gzip" if damage == "truncated" else "corrupt gzip")
    assert not (tmp_path / "o" / CHECKPOINT_NAME).exists()


@pytest.mark.parametrize("split", ["train", "t10k"])
def test_out_of_range_label_is_found_at_load_naming_the_file(idx_dir, tmp_path, split):
    data = tmp_path / "d"
    shutil.copytree(idx_dir, data)
    labels_path = data / f"{split}-labels-idx1-ubyte.gz"
    labels = np.frombuffer(gzip.decompress(labels_path.read_bytes())[8:], np.uint8).copy()
    labels[3] = 12
    write_idx(labels_path, labels)
    start = time.perf_counter()
    result = run_cli("train", *SMALL, "--data-dir", data, "--epochs", "3", "--out", tmp_path / "o")
    one_error_line(result, labels_path, "label 12 at index 3", "10 classes")
    assert not (tmp_path / "o" / CHECKPOINT_NAME).exists()  # refused before any epoch
    assert time.perf_counter() - start < 60


# --------------------------------------------------------------------------- #
# 2. image folders and images
# --------------------------------------------------------------------------- #


def _image_folder(root, per_class=3, classes=("cat", "dog")):
    pil = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pil.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


IMAGEFOLDER = ("--dataset", "imagefolder", "--image-size", "8", "--batch-size", "4", "--filters", "4",
               "--padding", "1", "--device", "cpu", "--no-progress", "--epochs", "1")


def _break(root, kind):
    """Put one bad entry into a class folder; returns its path."""
    if kind == "truncated-png":
        bad = root / "cat" / "0.png"
        bad.write_bytes(bad.read_bytes()[:60])
    elif kind == "zero-byte-jpeg":
        bad = root / "cat" / "empty.jpg"
        bad.write_bytes(b"")
    elif kind == "text-as-png":
        bad = root / "dog" / "notes.png"
        bad.write_text("not an image\n")
    else:  # a folder named like an image
        bad = root / "dog" / "x.png"
        bad.mkdir()
    return bad


@pytest.mark.parametrize("kind", ["truncated-png", "zero-byte-jpeg", "text-as-png", "folder-named-png"])
def test_bad_image_in_a_folder_is_one_line_naming_it(tmp_path, kind):
    root = _image_folder(tmp_path / "images")
    bad = _break(root, kind)
    result = run_cli("train", *IMAGEFOLDER, "--data-dir", root, "--out", tmp_path / "o")
    one_error_line(result, bad)
    assert not (tmp_path / "o" / CHECKPOINT_NAME).exists()


@pytest.mark.parametrize("kind", ["truncated-png", "zero-byte-jpeg", "text-as-png", "folder-named-png"])
def test_predict_names_the_bad_image(trained, tmp_path, png, kind):
    root = _image_folder(tmp_path / "images")
    bad = _break(root, kind)
    before = sha256(trained / CHECKPOINT_NAME)
    result = run_cli("predict", trained, png, bad, "--device", "cpu")
    one_error_line(result, bad, command="predict")
    assert result.stdout == ""  # nothing printed for the good image either: refused up front
    assert sha256(trained / CHECKPOINT_NAME) == before


def test_empty_class_folder_and_empty_test_split_are_refused(tmp_path):
    root = _image_folder(tmp_path / "images")
    (root / "empty").mkdir()
    result = run_cli("train", *IMAGEFOLDER, "--data-dir", root, "--out", tmp_path / "o")
    one_error_line(result, "has no images", root / "empty")

    single = _image_folder(tmp_path / "single", per_class=1)
    result = run_cli("train", *IMAGEFOLDER, "--data-dir", single, "--out", tmp_path / "o")
    one_error_line(result, "test split empty", single)
    assert not (tmp_path / "o" / CHECKPOINT_NAME).exists()


def test_16_bit_png_is_scaled_by_its_own_range(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    ramp = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    path = tmp_path / "ramp16.png"
    pil.fromarray(ramp).save(path)
    assert pil.open(path).mode.startswith("I")
    grey = load_image(path, 64, channels=1)
    # the ramp's own scaling, computed independently: v * 255 / 65535, rounded
    expected = np.rint(ramp.astype(np.float64) * 255.0 / 65535.0)
    np.testing.assert_array_equal(grey[0], expected)
    assert abs(grey.mean() - 127.5) < 0.5 and grey.max() == 255 and grey.min() == 0
    rgb = load_image(path, 64, channels=3)
    np.testing.assert_array_equal(rgb[0], grey[0])


# --------------------------------------------------------------------------- #
# 3. checkpoints
# --------------------------------------------------------------------------- #


def _edited_checkpoint(good, path, edit):
    """A copy of the checkpoint ``good`` with one thing changed by hand."""
    with np.load(good, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    if edit == "no-model":
        del meta["model"]
    elif edit == "float64-weight":
        arrays["model/features.0.weight"] = arrays["model/features.0.weight"].astype(np.float64)
    elif edit == "missing-weight":
        del arrays["model/classifier.1.bias"]
    elif edit == "few-classes":
        meta["classes"] = meta["classes"][:-2]
    elif edit == "nan-weights":
        arrays["model/features.2.weight"] = arrays["model/features.2.weight"].copy()
        arrays["model/features.2.weight"][0, 0, 0, 0] = np.nan
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    return path


CHECKPOINT_EDITS = {"no-model": "[meta.model]", "float64-weight": "[model/features.0.weight]",
                    "missing-weight": "[model/classifier.1.bias]", "few-classes": "[meta.classes]",
                    "nan-weights": "[model/features.2.weight]"}


@pytest.mark.parametrize("edit", sorted(CHECKPOINT_EDITS))
def test_hand_edited_checkpoint_is_one_line_naming_file_and_key(trained, tmp_path, png, edit):
    ckpt = _edited_checkpoint(trained / CHECKPOINT_NAME, tmp_path / "edited.npz", edit)
    before = sha256(ckpt)
    key = CHECKPOINT_EDITS[edit]
    commands = {
        "predict": ("predict", ckpt, png, "--device", "cpu"),
        "evaluate": ("evaluate", ckpt, "--device", "cpu"),
        "train": ("train", "--resume", ckpt, "--out", tmp_path / "resumed", "--no-progress"),
        "explain report": ("explain", "report", ckpt, png, "--out", tmp_path / "report", "--device", "cpu"),
    }
    for command, args in commands.items():
        result = run_cli(*args)
        one_error_line(result, ckpt, key, command=command)
        assert result.stdout == "" or "%" not in result.stdout  # no prediction printed
    assert sha256(ckpt) == before
    assert not (tmp_path / "resumed" / CHECKPOINT_NAME).exists()
    with pytest.raises(CheckpointError):
        load_checkpoint(ckpt)


def test_resume_from_another_folder_after_a_relative_data_dir(idx_dir, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(idx_dir, work / "data")
    first = run_cli("train", *SMALL, "--data-dir", "data", "--epochs", "1", "--out", "run", cwd=work)
    assert first.returncode == 0, first.stderr
    saved = load_checkpoint(work / "run").config.data_dir
    assert Path(saved).is_absolute() and Path(saved) == work / "data"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    second = run_cli("train", "--resume", work / "run" / CHECKPOINT_NAME, "--epochs", "2", "--out", work / "run",
                     "--no-progress", cwd=elsewhere)
    assert second.returncode == 0, second.stderr
    assert load_checkpoint(work / "run").epoch == 2


# --------------------------------------------------------------------------- #
# 4. output folders
# --------------------------------------------------------------------------- #


def test_output_that_is_a_file_or_below_a_file(idx_dir, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("keep me\n")
    for out in (blocker, blocker / "sub"):
        result = run_cli("train", *SMALL, "--data-dir", idx_dir, "--epochs", "1", "--out", out)
        one_error_line(result, out, "choose another --out")
    assert blocker.read_text() == "keep me\n"


def _unshare_available():
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k none /mnt"],
                           capture_output=True)
    return probe.returncode == 0


def _in_tmpfs(mount, options, *cli_args):
    """Run the command with a private tmpfs (``mount -o options``) at ``mount``."""
    command = " ".join(["mount", "-t", "tmpfs", "-o", options, "none", str(mount), "&&", "exec",
                        sys.executable, "-m", "numbacnn", *[f"'{a}'" for a in map(str, cli_args)]])
    env = {k: v for k, v in os.environ.items() if k != "NUMBACNN_DEBUG"}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(["unshare", "-m", "sh", "-c", command], capture_output=True, text=True, env=env,
                          timeout=240)


@pytest.mark.skipif(not _unshare_available(), reason="needs unshare -m and tmpfs mounts (root in a container)")
def test_read_only_and_tiny_disks_are_refused_before_any_work(idx_dir, tmp_path):
    mount = tmp_path / "mnt"
    mount.mkdir()
    start = time.perf_counter()
    result = _in_tmpfs(mount, "ro,size=1m", "train", *SMALL, "--data-dir", idx_dir, "--epochs", "1",
                       "--out", mount / "run")
    one_error_line(result, mount / "run", "read-only file system")
    result = _in_tmpfs(mount, "size=96k", "train", *SMALL, "--data-dir", idx_dir, "--epochs", "1",
                       "--out", mount / "run")
    one_error_line(result, mount / "run", "MiB free")
    assert "training tiny_vgg" not in result.stdout  # no data read, nothing compiled
    assert time.perf_counter() - start < 30


# Runs the real command in a process whose disk fills at the N-th checkpoint save:
# np.savez raises ENOSPC, as a full disk would inside the write.
DISK_FULL = """
import errno, os, runpy, sys
import numpy as np
import numbacnn.train.checkpoint as checkpoint
real, calls = np.savez, [0]
def savez(f, **arrays):
    calls[0] += 1
    if calls[0] == int(os.environ["FULL_AT_SAVE"]):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    real(f, **arrays)
checkpoint.np.savez = savez
sys.argv = ["numbacnn"] + sys.argv[1:]
runpy.run_module("numbacnn", run_name="__main__")
"""


def test_disk_full_while_saving_keeps_the_previous_checkpoint(idx_dir, tmp_path):
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "NUMBACNN_DEBUG"}
    env.update(PYTHONPATH=str(REPO), FULL_AT_SAVE="2")
    result = subprocess.run([sys.executable, "-c", DISK_FULL, "train", *SMALL, "--data-dir", str(idx_dir),
                             "--epochs", "3", "--out", str(out)], capture_output=True, text=True, env=env,
                            timeout=240)
    one_error_line(result, "could not save epoch 2", "no space left on device", out / CHECKPOINT_NAME,
                   "checkpoint of epoch 1 is kept", rc=1)
    assert load_checkpoint(out).epoch == 1
    assert not list(out.glob("*.tmp"))


def test_stale_temp_files_are_removed_and_files_follow_the_umask(idx_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = [out / ".checkpoint.npz.k1ll3d.tmp", out / ".metrics.json.abc123.tmp"]
    for path in stale:
        path.write_bytes(b"left by a kill -9")
    keep = out / "notes.tmp"
    keep.write_text("the user's file\n")
    result = run_cli("train", *SMALL, "--data-dir", idx_dir, "--epochs", "1", "--out", out, umask=0o027)
    assert result.returncode == 0, result.stderr
    assert not any(p.exists() for p in stale) and keep.read_text() == "the user's file\n"
    for name in ("checkpoint.npz", "metrics.json", "curves.png"):
        if (out / name).exists() or name != "curves.png":
            assert (out / name).stat().st_mode & 0o777 == 0o640, name


# --------------------------------------------------------------------------- #
# 5. two runs, one folder
# --------------------------------------------------------------------------- #


def test_a_locked_folder_is_refused_naming_the_pid(idx_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with FolderLock(out):
        result = run_cli("train", *SMALL, "--data-dir", idx_dir, "--epochs", "1", "--out", out)
        one_error_line(result, f"PID {os.getpid()}", out)
    assert not (out / CHECKPOINT_NAME).exists()


def test_two_runs_into_one_folder_at_once(idx_dir, tmp_path):
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBACNN_DEBUG", "NUMBACNN_DATA")}
    env["PYTHONPATH"] = str(REPO)
    first = subprocess.Popen([sys.executable, "-m", "numbacnn", "train", *SMALL, "--data-dir", str(idx_dir),
                              "--epochs", "2", "--out", str(out)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            lock = out / LOCK_NAME
            if lock.exists() and lock.read_text().strip() == str(first.pid):
                break
            time.sleep(0.02)
        second = run_cli("train", *SMALL, "--data-dir", idx_dir, "--epochs", "1", "--out", out)
        one_error_line(second, f"PID {first.pid}", out)
    finally:
        stdout, stderr = first.communicate(timeout=240)
    assert first.returncode == 0, stderr
    assert load_checkpoint(out).epoch == 2  # the first run's result, not replaced


def test_a_killed_runs_lock_is_taken_over(idx_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time\nfrom numbacnn.train.outdir import FolderLock\n"
                               "FolderLock(sys.argv[1]).acquire()\nprint('locked', flush=True)\ntime.sleep(120)",
                               str(out)], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert holder.stdout.readline().strip() == "locked"
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert (out / LOCK_NAME).read_text().strip() == str(holder.pid)  # the stale lock file is still there
    result = run_cli("train", *SMALL, "--data-dir", idx_dir, "--epochs", "1", "--out", out)
    assert result.returncode == 0, result.stderr
    assert f"PID {holder.pid}" in result.stdout and load_checkpoint(out).epoch == 1


def test_an_existing_checkpoint_is_not_replaced_without_resume_or_overwrite(idx_dir, trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    before = tree_checksums(out)
    result = run_cli("train", *SMALL, "--data-dir", idx_dir, "--epochs", "1", "--seed", "2", "--out", out)
    one_error_line(result, out / CHECKPOINT_NAME, "epoch 1", "--resume", "--overwrite")
    assert tree_checksums(out) == before
    result = run_cli("train", *SMALL, "--data-dir", idx_dir, "--epochs", "1", "--seed", "2", "--out", out,
                     "--overwrite")
    assert result.returncode == 0, result.stderr
    assert sha256(out / CHECKPOINT_NAME) != before[CHECKPOINT_NAME]
    assert load_checkpoint(out).config.seed == 2


# --------------------------------------------------------------------------- #
# 6. arguments
# --------------------------------------------------------------------------- #

ARGUMENT_CASES = {
    "val-fraction-0.99": (("--val-fraction", "0.99"), "--val-fraction", 2),
    "seed-negative": (("--seed", "-1"), "--seed", 2),
    "epochs-0": (("--epochs", "0"), "--epochs", 2),
    "batch-size-0": (("--batch-size", "0"), "--batch-size", 2),
    "lr-nan": (("--lr", "nan"), "--lr", 2),
    "padding-1000": (("--padding", "1000"), "--padding 1000", 2),
    "filters-1000000": (("--filters", "1000000"), "--filters 1000000", 2),
    "kernel-larger-than-image": (("--kernel-size", "40"), "--kernel-size 40", 2),
}


@pytest.mark.parametrize("case", sorted(ARGUMENT_CASES))
def test_bad_argument_is_refused_up_front_naming_the_option(idx_dir, tmp_path, case):
    extra, option, rc = ARGUMENT_CASES[case]
    out = tmp_path / "run"
    start = time.perf_counter()
    result = run_cli("train", *SMALL, "--data-dir", idx_dir, "--epochs", "2", "--out", out, *extra)
    line = one_error_line(result, option, rc=rc)
    if "filters" in case or "padding" in case:
        assert "of memory" in line and "available" in line
    assert "training tiny_vgg" not in result.stdout  # no epoch started
    assert not (out / CHECKPOINT_NAME).exists()
    assert time.perf_counter() - start < 60


@pytest.mark.parametrize("size,fragment", [("0", "--image-size"), ("100000", "--image-size 100000")])
def test_imagefolder_image_size_is_checked_up_front(tmp_path, size, fragment):
    root = _image_folder(tmp_path / "images")
    args = list(IMAGEFOLDER)
    args[args.index("--image-size") + 1] = size
    result = run_cli("train", *args, "--data-dir", root, "--out", tmp_path / "o")
    one_error_line(result, fragment)
    assert not (tmp_path / "o").exists() or not (tmp_path / "o" / CHECKPOINT_NAME).exists()


def test_evaluate_batch_size_is_checked(trained):
    result = run_cli("evaluate", trained, "--batch-size", "0")
    one_error_line(result, "--batch-size", command="evaluate")


def test_ctrl_c_is_one_line_with_exit_130(idx_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBACNN_DEBUG", "NUMBACNN_DATA")}
    env["PYTHONPATH"] = str(REPO)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "numbacnn", "train", *SMALL, "--data-dir", str(idx_dir),
                             "--epochs", "50", "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            # as from a terminal: a test run started in the background (`cmd &`
                            # in a script) inherits SIGINT ignored, and Python keeps an ignored
                            # SIGINT ignored, so the Ctrl-C below would never arrive
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / CHECKPOINT_NAME).exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr.splitlines() == ["numbacnn train: error: interrupted (Ctrl-C; files already written are complete)"]
    assert load_checkpoint(out).epoch >= 1


def test_errno_messages_are_single_lines():
    from numbacnn.errors import error_line

    line = error_line("train", PermissionError(errno.EACCES, "Permission denied", "/srv/runs/x"))
    assert line == ("numbacnn train: error: permission denied, /srv/runs/x "
                    "(check the permissions, or choose another path)")


def test_resume_with_fewer_epochs_than_done_is_refused(trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    before = tree_checksums(out)
    result = run_cli("train", "--resume", "--epochs", "0", "--out", out, "--no-progress")
    one_error_line(result, "--epochs")
    shutil.copy(out / CHECKPOINT_NAME, tmp_path / "copy.npz")
    edited = _edited_checkpoint(tmp_path / "copy.npz", tmp_path / "epoch3.npz", "none")
    with np.load(edited) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    meta["epoch"] = 3
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(edited, **arrays)
    result = run_cli("train", "--resume", edited, "--epochs", "2", "--out", tmp_path / "other", "--no-progress")
    one_error_line(result, "--epochs 2", "3 epochs")
    assert tree_checksums(out) == before


def test_unusable_device_names_the_option(idx_dir, tmp_path):
    no_simulator = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    probe = subprocess.run([sys.executable, "-c", "import numba.cuda; print(numba.cuda.is_available())"],
                           capture_output=True, text=True, env=no_simulator, timeout=120)
    if probe.stdout.strip() != "False":
        pytest.skip("a GPU is usable here")
    result = run_cli("train", *SMALL, "--data-dir", idx_dir, "--epochs", "1", "--out", tmp_path / "o",
                     "--device", "cuda", env={"NUMBA_ENABLE_CUDASIM": "0"})
    one_error_line(result, "--device cuda", "--device cpu")


def test_a_diverged_run_is_one_line_and_exit_1(idx_dir, tmp_path):
    result = run_cli("train", *SMALL, "--data-dir", idx_dir, "--epochs", "2", "--lr", "1e300", "--out", tmp_path / "o")
    one_error_line(result, "the training loss became nan at epoch 1", "smaller --lr", "no epoch finished", rc=1)
    assert not (tmp_path / "o" / CHECKPOINT_NAME).exists()
