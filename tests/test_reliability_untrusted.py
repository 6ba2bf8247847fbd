"""Issue 20: files numbacnn reads back are untrusted input, folders it writes are its own.

The fuzz corpus below feeds every reader (checkpoint, results.jsonl, sweep.json,
report folders) a list of malformed inputs through the command (``cli.main``
in-process: the same code path as ``python -m numbacnn``, without a process start
per case) and asserts one line, the agreed format, the file named, never
"internal error". Nothing here trains: checkpoints are written by
``save_checkpoint`` from a freshly built model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from numbacnn.cli import main
from numbacnn.errors import CheckpointError, FolderInUseError, OutputError, RecordError, printable
from numbacnn.models import tiny_vgg
from numbacnn.sweep import records as sweep_records
from numbacnn.sweep.grid import expand
from numbacnn.sweep.records import RESULTS_NAME, SWEEP_NAME, append_result, load_results
from numbacnn.sweep.report import md_text, summary_markdown, write_report
from numbacnn.train import CHECKPOINT_NAME, TrainConfig, load_checkpoint, save_checkpoint
from numbacnn.train.outdir import LOCK_NAME, FolderLock, open_output_folder

REPO = Path(__file__).resolve().parents[1]
MODEL = dict(in_channels=1, num_classes=3, image_size=8, filters=2, kernel_size=3, padding=1, dtype="float32",
             seed=0)
HISTORY = [{"epoch": 1, "lr": 0.01, "train_loss": 1.0, "train_accuracy": 0.5, "seconds": 0.1,
            "images_per_second": 100.0, "train_images": 10}]


def good_meta(classes=("a", "b", "c")):
    config = dataclasses.asdict(TrainConfig(image_size=8, filters=2, epochs=2))
    return {"epoch": 1, "config": config, "model": {"name": "tiny_vgg", "kwargs": dict(MODEL)},
            "classes": list(classes), "normalizer": {"mean": [0.3], "std": [0.2]}, "history": HISTORY,
            "scheduler": None}


def write_checkpoint(path, meta=None, classes=("a", "b", "c")):
    model = tiny_vgg(**MODEL, device="cpu")
    save_checkpoint(path, model, None, meta if meta is not None else good_meta(classes))
    return path


def rewrite(path, mutate):
    """A copy of the checkpoint at ``path`` whose arrays dict (meta as parsed JSON) ``mutate`` changed."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    result = mutate(meta, arrays)
    if result is not None:
        meta = result
    arrays["meta"] = np.array(meta if isinstance(meta, str) else json.dumps(meta))
    np.savez(path, **arrays)


def one_line(capsys, rc, command, *fragments):
    """Assert exit status ``rc`` and one stderr line ``numbacnn <command>: error: ...`` holding the fragments."""
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err[-2000:]
    assert lines[0].startswith(f"numbacnn {command}: error: "), lines[0]
    assert "internal error" not in lines[0], lines[0]
    for fragment in fragments:
        assert str(fragment) in lines[0], (fragment, lines[0])
    assert rc in (1, 2), rc
    return lines[0]


# --------------------------------------------------------------------------- #
# the checkpoint corpus
# --------------------------------------------------------------------------- #


def _deep(n):
    return "[" * n + "]" * n


def _set(key, value):
    def mutate(meta, arrays):
        target = meta
        *parents, last = key.split(".")
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target[int(last) if isinstance(target, list) else last] = value
    return mutate


def _delete(key):
    def mutate(meta, arrays):
        target = meta
        *parents, last = key.split(".")
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        del target[int(last) if isinstance(target, list) else last]
    return mutate


# name -> (mutation of (meta, arrays), or raw bytes for the whole file; the entry the line must name)
CHECKPOINT_CORPUS = {
    "deeply nested meta": (lambda m, a: '{"epoch": ' + _deep(100000) + "}", "[meta]"),
    "deeply nested value": (_set("config", json.loads(_deep(900))), "[meta.config]"),
    "meta is a list": (lambda m, a: [], "[meta]"),
    "meta is a number": (lambda m, a: "5", "[meta]"),
    "meta not JSON": (lambda m, a: "{'epoch': 1", "[meta]"),
    "meta with a huge integer": (lambda m, a: '{"epoch": ' + "9" * 5000 + "}", "[meta]"),
    "history entry without seconds": (_delete("history.0.seconds"), "[meta.history[0].seconds]"),
    "history entry with a string loss": (_set("history.0.train_loss", "x"), "[meta.history[0].train_loss]"),
    "history entry with NaN": (_set("history.0.images_per_second", float("nan")),
                               "[meta.history[0].images_per_second]"),
    "history longer than the epochs": (_set("epoch", 0), "[meta.history]"),
    "history not a list": (_set("history", {"a": 1}), "[meta.history]"),
    "history entry not an object": (_set("history", [5]), "[meta.history]"),
    "normaliser overflowing float32": (_set("normalizer", {"mean": [1e300], "std": [1e-300]}), "[meta.normalizer"),
    "normaliser std tiny": (_set("normalizer.std", [1e-40]), "[meta.normalizer.std]"),
    "normaliser mean huge": (_set("normalizer.mean", [3e38]), "[meta.normalizer.mean]"),
    "normaliser as text": (_set("normalizer", "x"), "[meta.normalizer]"),
    "classes not strings": (_set("classes", [1, 2, 3]), "[meta.classes]"),
    "epoch negative": (_set("epoch", -1), "[meta.epoch]"),
    "epoch boolean": (_set("epoch", True), "[meta.epoch]"),
    "model kwargs a list": (_set("model.kwargs", []), "[meta.model]"),
    "filters huge": (_set("model.kwargs.filters", 10**9), "[meta.model.kwargs]"),
    "unknown model setting": (_set("model.kwargs.bogus", 1), "[meta.model.kwargs.bogus]"),
    "config a string": (_set("config", "x"), "[meta.config]"),
    "config bad field type": (_set("config.batch_size", "64"), "[meta.config]"),
    "format missing": (_delete("format"), "[meta.format]"),
}
RAW_CORPUS = {
    "empty file": b"",
    "text file": b"hello\n",
    "truncated zip": None,  # the first half of a good checkpoint
    "binary garbage": bytes(range(256)) * 4,
    "an .npy array": None,
}


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / CHECKPOINT_NAME)


@pytest.fixture(scope="module")
def png(tmp_path_factory):
    pil = pytest.importorskip("PIL.Image")
    path = tmp_path_factory.mktemp("img") / "img.png"
    pil.new("L", (8, 8), 180).save(path)
    return path


def test_the_good_checkpoint_loads(good_checkpoint):
    loaded = load_checkpoint(good_checkpoint)
    assert loaded.classes == ("a", "b", "c") and loaded.epoch == 1


@pytest.mark.parametrize("case", sorted(CHECKPOINT_CORPUS))
def test_checkpoint_corpus_is_one_line_naming_file_and_entry(good_checkpoint, png, tmp_path, capsys, case):
    mutate, entry = CHECKPOINT_CORPUS[case]
    path = tmp_path / "bad.npz"
    path.write_bytes(good_checkpoint.read_bytes())
    rewrite(path, mutate)
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(path)
    assert entry in str(refused.value) and str(path) in str(refused.value)
    for command, argv in (("predict", ["predict", str(path), str(png), "--device", "cpu"]),
                          ("train", ["train", "--resume", str(path), "--out", str(tmp_path / "out"), "--no-progress"]),
                          ("evaluate", ["evaluate", str(path), "--device", "cpu"])):
        rc = main(argv)
        assert rc == 2
        one_line(capsys, rc, command, path, entry)


@pytest.mark.parametrize("case", sorted(RAW_CORPUS))
def test_damaged_checkpoint_files_are_one_line(good_checkpoint, png, tmp_path, capsys, case):
    path = tmp_path / "bad.npz"
    data = RAW_CORPUS[case]
    if case == "truncated zip":
        data = good_checkpoint.read_bytes()[: good_checkpoint.stat().st_size // 2]
    if case == "an .npy array":
        np.save(path, np.zeros(3))
        os.replace(str(path) + ".npy" if not path.exists() else path, path)
    else:
        path.write_bytes(data)
    rc = main(["predict", str(path), str(png), "--device", "cpu"])
    assert rc == 2
    one_line(capsys, rc, "predict", path)


# --------------------------------------------------------------------------- #
# the results.jsonl and sweep.json corpus
# --------------------------------------------------------------------------- #

BASE = TrainConfig(epochs=1, image_size=8, filters=2)


def done_record(seed=0, **changes):
    [trial] = expand({"seed": [seed]}, BASE)
    record = {"trial": trial.id, "values": trial.values, "status": "done", "test_accuracy": 0.5,
              "test_loss": 1.0, "seconds_per_epoch": 1.0, "parameters": 100, "flops": 1000,
              "numba_threads": 1, "seconds": 2.0, "message": "", "config": trial.config}
    record.update(changes)
    return record


RESULTS_CORPUS = {
    "deeply nested": _deep(100000).encode(),
    "deeply nested value": json.dumps(dict(done_record(), values={"x": json.loads(_deep(900))})).encode(),
    "binary garbage": bytes(b for b in range(1, 256) if b != 10),  # one line: no newline byte
    "not UTF-8": b'{"trial": "caf\xe9"}',
    "half a line": b'{"trial": "abc", "sta',
    "a list": b"[1, 2, 3]",
    "a string": b'"done"',
    "no status": json.dumps({k: v for k, v in done_record().items() if k != "status"}).encode(),
    "unknown status": json.dumps(done_record(status="great")).encode(),
    "no config": json.dumps({k: v for k, v in done_record().items() if k != "config"}).encode(),
    "config not an object": json.dumps(done_record(config=[1])).encode(),
    "config impossible": json.dumps(done_record(config=dict(done_record()["config"], batch_size=-1))).encode(),
    "config mistyped": json.dumps(done_record(config=dict(done_record()["config"], kernel_size="3"))).encode(),
    "accuracy 1e308": json.dumps(done_record(test_accuracy=1e308)).encode(),
    "seconds 1e308": json.dumps(done_record(seconds_per_epoch=1e308)).encode(),
    "accuracy infinite": b'{"trial": "x", "status": "done", "test_accuracy": Infinity}',
    "parameters text": json.dumps(done_record(parameters="many")).encode(),
    "message not text": json.dumps(done_record(status="failed", message=["x"])).encode(),
    "done without accuracy": json.dumps({k: v for k, v in done_record().items() if k != "test_accuracy"}).encode(),
    "huge integer": b'{"trial": "x", "status": "done", "flops": ' + b"9" * 5000 + b"}",
    "values nested": json.dumps(done_record(values={"seed": [0]})).encode(),
    "trial id a number": json.dumps(done_record(trial=5)).encode(),
}


def sweep_folder(tmp_path, bad_lines):
    out = tmp_path / "sweep"
    out.mkdir()
    append_result(out, done_record())
    with open(out / RESULTS_NAME, "ab") as f:
        for line in bad_lines:
            f.write(line + b"\n")
    return out


def test_every_malformed_results_line_is_skipped_and_counted(tmp_path, capsys):
    out = sweep_folder(tmp_path, list(RESULTS_CORPUS.values()))
    loaded = load_results(out)
    assert [r["trial"] for r in loaded.records] == [done_record()["trial"]]
    assert loaded.skipped == len(RESULTS_CORPUS)
    # the report says so and writes from the good record
    assert main(["sweep", "report", str(out)]) == 0
    summary = (out / "summary.md").read_text()
    assert f"skipped {len(RESULTS_CORPUS)} unreadable line(s)" in summary
    assert "| 1/1 |" in summary or "1 trials (1 done)" in summary


@pytest.mark.parametrize("case", sorted(RESULTS_CORPUS))
def test_each_malformed_results_line_alone(tmp_path, capsys, case):
    out = sweep_folder(tmp_path, [RESULTS_CORPUS[case]])
    assert load_results(out).skipped == 1
    assert main(["sweep", "report", str(out)]) == 0, capsys.readouterr().err
    assert "internal error" not in capsys.readouterr().err


def test_a_resume_over_garbage_lines_runs_nothing_finished(tmp_path):
    """The binary line used to abort the resume blaming '--grid and the train options'."""
    from numbacnn.sweep import run

    out = sweep_folder(tmp_path, [RESULTS_CORPUS["binary garbage"], RESULTS_CORPUS["deeply nested"]])
    logged = []
    result = run({"seed": [0]}, BASE, out, workers=0, log=logged.append, report=False)
    assert (result.ran, result.skipped) == (0, 1)
    assert any("skipped 2 unreadable line(s)" in line for line in logged), logged


SWEEP_JSON_CORPUS = {
    "empty": (b"", "not JSON"),
    "binary": (bytes(range(256)), "not UTF-8"),
    "a list": (b"[1]", "[sweep]"),
    "deeply nested": (_deep(100000).encode(), "nested too deeply"),
    "grid a list": (b'{"grid": [1]}', "[grid]"),
    "grid values not lists": (b'{"grid": {"seed": 1}}', "[grid]"),
    "unknown field": (b'{"grid": {"bogus": [1]}}', "[grid.bogus]"),
    "truncated": (b'{"grid": {"seed": [0, 1', "not JSON"),
}


@pytest.mark.parametrize("case", sorted(SWEEP_JSON_CORPUS))
def test_damaged_sweep_json_is_one_line_naming_it(tmp_path, capsys, case):
    data, fragment = SWEEP_JSON_CORPUS[case]
    out = sweep_folder(tmp_path, [])
    (out / SWEEP_NAME).write_bytes(data)
    with pytest.raises(RecordError):
        sweep_records.read_sweep_grid(out)
    rc = main(["sweep", "report", str(out)])
    assert rc == 2
    one_line(capsys, rc, "sweep report", out / SWEEP_NAME, fragment)


def test_a_folder_as_results_jsonl_is_one_line(tmp_path, capsys):
    out = tmp_path / "sweep"
    (out / RESULTS_NAME).mkdir(parents=True)
    rc = main(["sweep", "report", str(out)])
    assert rc == 2
    one_line(capsys, rc, "sweep report", out / RESULTS_NAME)


# --------------------------------------------------------------------------- #
# folders numbacnn writes are its own
# --------------------------------------------------------------------------- #


def test_a_symlink_as_the_lock_file_is_refused_and_its_target_kept(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).symlink_to(victim)
    with pytest.raises(OutputError) as refused:
        open_output_folder(out)
    assert "symlink" in str(refused.value) and str(out / LOCK_NAME) in str(refused.value)
    assert victim.read_text() == "precious\n"


def test_a_symlink_as_results_jsonl_is_refused_and_its_target_kept(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "sweep"
    out.mkdir()
    (out / RESULTS_NAME).symlink_to(victim)
    with pytest.raises(OutputError):
        append_result(out, done_record())
    assert victim.read_text() == "precious\n"
    with pytest.raises(RecordError):
        load_results(out)


def test_the_sweep_report_replaces_symlinks_never_writes_through_them(tmp_path):
    out = sweep_folder(tmp_path, [])
    victims = {}
    for name in ("summary.md", "results.csv"):
        victims[name] = tmp_path / f"victim-{name}"
        victims[name].write_text("precious\n")
        (out / name).symlink_to(victims[name])
    write_report(out)
    for name, victim in victims.items():
        assert victim.read_text() == "precious\n"
        assert not (out / name).is_symlink() and (out / name).stat().st_size > 10
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_dangling_symlink_as_out_is_exit_2_for_every_command(tmp_path, png, good_checkpoint, capsys):
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    rc = main(["train", "--out", str(dangling), "--image-size", "8", "--no-progress"])
    assert rc == 2
    one_line(capsys, rc, "train", dangling, "symlink")
    rc = main(["explain", "report", str(good_checkpoint), str(png), "--out", str(dangling), "--device", "cpu"])
    assert rc == 2
    one_line(capsys, rc, "explain report", dangling, "symlink")
    from numbacnn.sweep import run

    with pytest.raises(OutputError, match="symlink"):
        run({"seed": [0]}, BASE, dangling, workers=0, log=None)
    assert not (tmp_path / "nowhere").exists()


def test_two_sweeps_on_one_folder_the_second_is_refused(tmp_path):
    """Two sweeps each recorded every trial (8 lines for 4 trials): sweeps now lock as train does."""
    from numbacnn.sweep import run

    out = sweep_folder(tmp_path, [])
    with FolderLock(out):  # a sweep running in another process holds this
        with pytest.raises(FolderInUseError, match="another numbacnn run"):
            run({"seed": [0, 1]}, BASE, out, workers=0, log=None)
        with pytest.raises(FolderInUseError):
            write_report(out)
    assert len(load_results(out).records) == 1


# --------------------------------------------------------------------------- #
# names and text that broke the output
# --------------------------------------------------------------------------- #


def test_summary_markdown_escapes_markup_and_table_bars():
    attack = '<img src=x onerror="alert(1)">'
    failed = done_record(seed=1, status="failed", message=f"ValueError: {attack}")
    del failed["test_accuracy"]
    records = [done_record(), failed]
    for record in records:
        record["config"] = dict(record["config"], data_dir="a|b")
    summary = summary_markdown(records, ["seed"])
    assert "<img" not in summary and "&lt;img" in summary
    for line in summary.splitlines():
        if line.startswith("| ") and "a|b" not in line:
            assert line.count(" | ") == summary.splitlines()[summary.splitlines().index(line)].count(" | ")
    table = [line for line in summary.splitlines() if line.startswith("|")]
    header_cells = table[0].count("|") - table[0].count("\\|")
    assert all(line.count("|") - line.count("\\|") == header_cells for line in table[:4]), table
    assert md_text("a|b\nc") == "a\\|b c"


def test_printable_names():
    assert printable("caf\udce9") == "caf\\xe9"
    assert printable("shirt\ncoat") == "shirt\\ncoat"
    assert printable("T-shirt/top é") == "T-shirt/top é"


def test_predict_prints_one_line_per_image_for_odd_class_names(tmp_path, png, capsys):
    path = write_checkpoint(tmp_path / CHECKPOINT_NAME, classes=("shirt\ncoat", "caf\udce9", "c"))
    assert main(["predict", str(path), str(png), str(png), "--device", "cpu", "--top", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "shirt\\ncoat" in out[0] and "caf\\xe9" in out[0]


def test_a_non_utf8_class_name_gives_a_report_and_the_folder_stays_usable(tmp_path, png, capsys):
    from numbacnn.report import report_from_checkpoint

    path = write_checkpoint(tmp_path / CHECKPOINT_NAME, classes=("caf\udce9", "b", "c"))
    out = tmp_path / "report"
    for _ in range(2):  # the second report into the same folder is accepted
        report = report_from_checkpoint(path, png, out)
        page = report.index.read_bytes().decode("utf-8")  # valid UTF-8
        assert "caf\\xe9" in page
    assert not [p for p in out.rglob("*.tmp")]
    assert main(["explain", "report", str(path), str(png), "--out", str(out), "--device", "cpu"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("predicted: caf\\xe9 (")


def test_an_empty_index_html_left_by_an_older_numbacnn_is_replaced(tmp_path, png, good_checkpoint):
    from numbacnn.report import report_from_checkpoint

    out = tmp_path / "report"
    out.mkdir()
    (out / "index.html").write_bytes(b"")
    report_from_checkpoint(good_checkpoint, png, out)
    assert (out / "index.html").stat().st_size > 1000


# --------------------------------------------------------------------------- #
# environments, signals, temporary files
# --------------------------------------------------------------------------- #


def _cli(*args, env=None, cwd=None):
    full = {k: v for k, v in os.environ.items() if k not in ("NUMBACNN_DEBUG", "NUMBACNN_DATA")}
    full["PYTHONPATH"] = os.pathsep.join([str(REPO), full.get("PYTHONPATH", "")])
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "numbacnn", *map(str, args)], capture_output=True, text=True,
                          env=full, cwd=cwd, timeout=300)


@pytest.mark.parametrize("value", ["0", "abc", "-3", ""])
def test_a_bad_numba_num_threads_is_one_line_naming_it(value):
    result = _cli("info", env={"NUMBA_NUM_THREADS": value})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("numbacnn info: error: ") and "NUMBA_NUM_THREADS" in lines[0]


def test_a_read_only_install_with_an_unwritable_home_runs_without_the_disk_cache(tmp_path):
    """Read-only as root too: every __pycache__ is a file, HOME lies below /dev/null."""
    import shutil

    install = tmp_path / "install"
    shutil.copytree(REPO / "numbacnn", install / "numbacnn", ignore=shutil.ignore_patterns("__pycache__"))
    for folder in [install / "numbacnn", *[p for p in (install / "numbacnn").rglob("*") if p.is_dir()]]:
        (folder / "__pycache__").write_bytes(b"")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_CACHE", "XDG_CACHE"))}
    env.update(HOME="/dev/null/home", PYTHONPATH=str(install))
    result = subprocess.run([sys.executable, "-m", "numbacnn", "info"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if line]
    assert len(notes) == 1 and "disk cache" in notes[0] and "internal error" not in result.stderr
    assert "numba" in result.stdout


def test_sigterm_on_train_is_the_ctrl_c_line(monkeypatch, tmp_path, capsys):
    import numbacnn.train as train_package

    def killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the run")

    monkeypatch.setattr(train_package, "train", killed)
    rc = main(["train", "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 130
    one_line(capsys, 1, "train", "interrupted")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


def test_a_refused_resume_removes_the_killed_first_saves_temporary_file(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    tmp = out / ".checkpoint.npz.abc123.tmp"
    tmp.write_bytes(b"half a checkpoint")
    rc = main(["train", "--resume", "--out", str(out), "--no-progress"])
    assert rc == 2
    one_line(capsys, rc, "train", out / CHECKPOINT_NAME)
    assert not tmp.exists()


# --------------------------------------------------------------------------- #
# refusing valid runs; an explicit variable wins
# --------------------------------------------------------------------------- #


def _small_idx(folder, n_train=192, n_test=64, size=28):
    from numbacnn.data import write_idx

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (n, size, size), dtype=np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))
    return folder


@pytest.mark.parametrize("batch_size", [60000, 10**9])
def test_a_batch_larger_than_the_dataset_is_one_batch_not_a_refusal(tmp_path, batch_size):
    from numbacnn.train.memory import check_training_memory

    data = _small_idx(tmp_path / "data")
    config = TrainConfig(data_dir=str(data), batch_size=batch_size)
    estimate = check_training_memory(config, available=2**30)  # 1 GiB is plenty for 256 images
    assert estimate.total < 2**30
    # and the standard-size dataset's estimate still refuses what cannot fit
    from numbacnn.errors import ResourceError

    with pytest.raises(ResourceError, match="--batch-size"):
        check_training_memory(TrainConfig(data_dir=str(tmp_path / "none"), batch_size=60000), available=2**30)


def test_numbacnn_data_wins_over_the_checkpoints_folder_for_evaluate(tmp_path, monkeypatch, capsys):
    saved = _small_idx(tmp_path / "saved")
    meta = good_meta()
    meta["config"]["data_dir"] = str(saved)
    path = write_checkpoint(tmp_path / CHECKPOINT_NAME, meta=meta)
    for named in (tmp_path / "missing", _small_idx(tmp_path / "partial")):
        if named.exists():
            (named / "t10k-labels-idx1-ubyte").unlink()
        monkeypatch.setenv("NUMBACNN_DATA", str(named))
        rc = main(["evaluate", str(path), "--device", "cpu"])
        assert rc == 2
        one_line(capsys, rc, "evaluate", "$NUMBACNN_DATA", named)


# --------------------------------------------------------------------------- #
# PyTorch's explicit casts and empty batch norm (item 9)
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_an_explicit_softmax_dtype_casts_as_pytorch_does(name):
    torch = pytest.importorskip("torch")
    import numbacnn.functional as F

    x = np.random.default_rng(0).standard_normal((3, 5, 2)).astype(np.float32)
    expected = getattr(torch, name)(torch.from_numpy(x), 1, dtype=torch.float64).numpy()
    for dtype in (np.float64, "float64", torch.float64):
        y = getattr(F, name)(x, 1, dtype=dtype)
        assert y.dtype == np.float64
        np.testing.assert_allclose(y, expected, rtol=1e-13, atol=1e-13)
    down = getattr(F, name)(x.astype(np.float64), 1, dtype=np.float32)
    assert down.dtype == np.float32
    np.testing.assert_allclose(down, getattr(torch, name)(torch.from_numpy(x.astype(np.float64)), 1,
                                                          dtype=torch.float32).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (2, 3, 0, 4), (2, 0, 4, 4)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_on_an_empty_input_is_empty_as_in_pytorch(shape, training):
    torch = pytest.importorskip("torch")
    import numbacnn.functional as F

    channels = shape[1]
    mean, var = np.zeros(channels, np.float32), np.ones(channels, np.float32)
    y = F.batch_norm(np.zeros(shape, np.float32), mean, var, training=training)
    expected = torch.nn.functional.batch_norm(torch.zeros(shape), torch.zeros(channels), torch.ones(channels),
                                              training=training)
    assert y.shape == tuple(expected.shape) and y.dtype == np.float32
    assert np.array_equal(mean, np.zeros(channels)) and np.array_equal(var, np.ones(channels))
    gx, gw, gb = F.batch_norm_backward(np.zeros(shape, np.float32), np.zeros(shape, np.float32), mean, var,
                                       np.ones(channels, np.float32), training=training)
    assert gx.shape == shape and np.array_equal(gw, np.zeros(channels)) and np.array_equal(gb, np.zeros(channels))


# --------------------------------------------------------------------------- #
# misleading words (item 7)
# --------------------------------------------------------------------------- #


def test_big_endian_input_names_the_byte_order():
    import numbacnn.functional as F

    with pytest.raises(TypeError) as refused:
        F.relu(np.zeros((2, 3), ">f4"))
    assert "big-endian float32" in str(refused.value) and "expected float32 or float64" not in str(refused.value)


def test_a_too_large_image_says_so_and_pillows_warning_stays_quiet(tmp_path, monkeypatch):
    import warnings

    from PIL import Image

    from numbacnn.data import load_image
    from numbacnn.errors import ImageError

    path = tmp_path / "big.png"
    Image.new("L", (20, 20), 100).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 400 pixels > 2 x the limit: Pillow refuses
    with pytest.raises(ImageError) as refused:
        load_image(path, 8, 1)
    assert "too large" in str(refused.value) and "truncated" not in str(refused.value)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # between 1 and 2 x: Pillow warns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(path, 8, 1).shape == (1, 8, 8)


def test_a_float_image_with_nan_loads_without_warnings(tmp_path):
    import warnings

    from PIL import Image

    from numbacnn.data import load_image

    values = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    values[0, :3] = [np.nan, np.inf, -np.inf]
    path = tmp_path / "nan.tiff"
    Image.fromarray(values, mode="F").save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixels = load_image(path, 8, 1)
    assert pixels[0, 0, :3].tolist() == [0, 0, 0] and pixels.max() == 255


def test_a_single_class_image_folder_is_refused(tmp_path):
    from PIL import Image

    from numbacnn.data import load_dataset
    from numbacnn.errors import DatasetError

    for i in range(4):
        (tmp_path / "imgs" / "cat").mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8), 30 * i).save(tmp_path / "imgs" / "cat" / f"{i}.png")
    with pytest.raises(DatasetError, match="at least two"):
        load_dataset("imagefolder", tmp_path / "imgs", image_size=8, channels=1)


def test_a_folder_named_metrics_json_is_refused_before_training(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "metrics.json").mkdir(parents=True)
    rc = main(["train", "--out", str(out), "--data-dir", str(_small_idx(tmp_path / "data")), "--no-progress"])
    assert rc == 2
    one_line(capsys, rc, "train", out / "metrics.json", "a folder")
    assert not (out / CHECKPOINT_NAME).exists()


def test_a_failed_metrics_write_says_the_checkpoint_was_written(tmp_path):
    import errno

    from numbacnn.train.job import _save_failed

    error = _save_failed(OSError(errno.ENOSPC, "No space left on device"), tmp_path / "metrics.json", 3)
    assert "epoch 3 was written" in str(error) and "no earlier checkpoint" not in str(error)
    error = _save_failed(OSError(errno.ENOSPC, "No space left on device"), tmp_path / CHECKPOINT_NAME, 1)
    assert "no earlier checkpoint exists" in str(error)


# --------------------------------------------------------------------------- #
# fault injection, extended to sweeps and reports
# --------------------------------------------------------------------------- #


def _fail_on(monkeypatch, module, name, after=0):
    """Make ``module.name`` raise ENOSPC (the disk filled) on its call number ``after``."""
    import errno

    real = getattr(module, name)
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > after:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, failing)


@pytest.mark.parametrize("stage", ["csv", "summary", "plot"])
def test_a_sweep_report_failing_mid_way_keeps_the_previous_files(tmp_path, monkeypatch, stage):
    import numbacnn.sweep.report as report_module

    out = sweep_folder(tmp_path, [])
    write_report(out)
    before = {name: (out / name).read_bytes() for name in ("results.csv", "summary.md", "sweep.png")}
    append_result(out, done_record(seed=1, test_accuracy=0.75))  # the next report would differ
    if stage == "plot":
        _fail_on(monkeypatch, report_module, "plot")
    else:  # the csv is the first atomic text write, the summary the second
        _fail_on(monkeypatch, report_module, "atomic_write_text", after=0 if stage == "csv" else 1)
    with pytest.raises(OSError):
        write_report(out)
    for name, data in before.items():
        if stage == "summary" and name == "results.csv" or stage == "plot" and name != "sweep.png":
            continue  # written before the failure: complete new files
        assert (out / name).read_bytes() == data, name
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    write_report(out)  # and the next report is whole
    assert "75.00%" in (out / "summary.md").read_text()


def test_an_explain_report_failing_mid_way_keeps_the_previous_page(tmp_path, png, good_checkpoint, monkeypatch):
    from numbacnn import viz
    from numbacnn.report import report_from_checkpoint

    out = tmp_path / "report"
    report_from_checkpoint(good_checkpoint, png, out)
    page = (out / "index.html").read_bytes()
    _fail_on(monkeypatch, viz, "save_kernels")  # the last picture before the page
    with pytest.raises(OSError):
        report_from_checkpoint(good_checkpoint, png, out)
    assert (out / "index.html").read_bytes() == page
    assert not [p for p in out.rglob("*.tmp")]
    monkeypatch.undo()
    report_from_checkpoint(good_checkpoint, png, out)  # the folder is still a numbacnn report


def test_a_sweep_killed_with_sigkill_resumes_each_trial_once(tmp_path):
    """kill -9 of the sweep command after its first record; the rerun takes the lock over,
    runs only the missing trials, and every trial is recorded exactly once."""
    import time

    data = _small_idx(tmp_path / "data", n_train=64, n_test=32)
    out = tmp_path / "sweep"
    args = [sys.executable, "-m", "numbacnn", "sweep", "--grid", "seed=0,1,2", "--epochs", "1", "--workers", "0",
            "--filters", "2", "--batch-size", "32", "--device", "cpu", "--data-dir", str(data), "--out", str(out),
            "--no-progress"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 400
    while time.time() < deadline and process.poll() is None:
        if (out / RESULTS_NAME).exists() and load_results(out).records:
            break
        time.sleep(0.05)
    process.kill()
    _, errors = process.communicate()
    first = load_results(out).records
    assert 1 <= len(first) <= 3, errors.decode(errors="replace")[-2000:]
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr
    records = load_results(out).records
    assert sorted(r["trial"] for r in records) == sorted({r["trial"] for r in records}) and len(records) == 3
    assert records[:len(first)] == first
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
