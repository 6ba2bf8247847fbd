"""fit / evaluate / checkpoints / resume / NaN handling / CLI, on small generated data."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import numbacnn.train as train_module
from numbacnn.cli import main
from numbacnn.train import (
    CHECKPOINT_NAME,
    METRICS_NAME,
    TrainConfig,
    TrainingDiverged,
    atomic_write,
    load_checkpoint,
    save_checkpoint,
    train,
)
from test_data import write_fake_idx_dataset

TIMING_KEYS = ("seconds", "images_per_second")


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    return write_fake_idx_dataset(tmp_path_factory.mktemp("data") / "mnist", n_train=48, n_test=16, size=12)


def small_config(idx_dir, **overrides):
    base = dict(dataset="mnist", data_dir=str(idx_dir), epochs=2, batch_size=8, lr=0.05, padding=1,
                filters=4, val_fraction=0.25, device="cpu", seed=1)
    base.update(overrides)
    return TrainConfig(**base)


def _without_timing(history):
    return [{k: v for k, v in h.items() if k not in TIMING_KEYS} for h in history]


def _weights(out):
    return load_checkpoint(out / CHECKPOINT_NAME).model_state


@pytest.fixture(scope="module")
def full_run(idx_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    return out, train(small_config(idx_dir), out=out, progress=False, log=None)


def test_fit_writes_metrics_and_checkpoint(full_run):
    out, metrics = full_run
    on_disk = json.loads((out / METRICS_NAME).read_text())
    assert on_disk["test_accuracy"] == metrics["test_accuracy"]
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_images"] == 16
    assert [h["epoch"] for h in on_disk["history"]] == [1, 2]
    for record in on_disk["history"]:
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds", "images_per_second"):
            assert np.isfinite(record[key]), key

    assert metrics["history"][1]["train_loss"] < metrics["history"][0]["train_loss"] * 1.5
    ckpt = load_checkpoint(out / CHECKPOINT_NAME)
    assert ckpt.epoch == 2 and ckpt.config.epochs == 2 and ckpt.classes == tuple("0123456789")
    assert ckpt.optimizer_state["type"] == "SGD" and ckpt.optimizer_state["step_count"] == 2 * 5
    assert not list(out.glob("*.tmp"))


def test_fit_draws_training_curves_when_matplotlib_is_installed(full_run):
    pytest.importorskip("matplotlib")
    out, _ = full_run
    curves = out / "curves.png"
    assert curves.exists() and curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_seed_gives_identical_metrics(idx_dir, full_run, tmp_path):
    out, metrics = full_run
    again = train(small_config(idx_dir), out=tmp_path, progress=False, log=None)
    assert _without_timing(again["history"]) == _without_timing(metrics["history"])
    assert again["test_accuracy"] == metrics["test_accuracy"]
    for k, v in _weights(out).items():
        np.testing.assert_array_equal(_weights(tmp_path)[k], v)


def test_resume_matches_uninterrupted_run(idx_dir, full_run, tmp_path):
    out, metrics = full_run
    logs = []
    train(small_config(idx_dir, epochs=1), out=tmp_path, progress=False, log=None)
    config = load_checkpoint(tmp_path / CHECKPOINT_NAME).config
    config.epochs = 2
    resumed = train(config, out=tmp_path, resume=tmp_path / CHECKPOINT_NAME, progress=False, log=logs.append)
    assert any("resuming" in line for line in logs)
    assert _without_timing(resumed["history"]) == _without_timing(metrics["history"])
    assert resumed["test_accuracy"] == metrics["test_accuracy"]
    for k, v in _weights(out).items():
        np.testing.assert_array_equal(_weights(tmp_path)[k], v)


def test_resume_with_dropout_matches_uninterrupted_run(idx_dir, tmp_path):
    """The dropout masks' generator state is saved with each checkpoint, so a resumed
    dropout run draws the masks the uninterrupted run drew: bit-identical weights."""
    whole, split = tmp_path / "whole", tmp_path / "split"
    uninterrupted = train(small_config(idx_dir, dropout=0.5), out=whole, progress=False, log=None)
    train(small_config(idx_dir, dropout=0.5, epochs=1), out=split, progress=False, log=None)
    checkpoint = load_checkpoint(split / CHECKPOINT_NAME)
    assert set(checkpoint.meta["dropout_generators"]) == {"classifier.1"}
    config = checkpoint.config
    config.epochs = 2
    resumed = train(config, out=split, resume=split / CHECKPOINT_NAME, progress=False, log=None)
    assert _without_timing(resumed["history"]) == _without_timing(uninterrupted["history"])
    for k, v in _weights(whole).items():
        np.testing.assert_array_equal(_weights(split)[k], v)


def test_resume_with_a_different_model_is_refused(idx_dir, full_run, tmp_path):
    out, _ = full_run
    config = small_config(idx_dir, epochs=3, filters=5)
    with pytest.raises(ValueError, match="differs from this run's"):
        train(config, out=tmp_path, resume=out / CHECKPOINT_NAME, progress=False, log=None)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(idx_dir, tmp_path, monkeypatch):
    real = train_module.F.softmax_cross_entropy
    calls = {"train": 0}
    batches_per_epoch = 5  # 36-37 train images / batch 8

    def poisoned(logits, labels):
        loss, grad = real(logits, labels)
        if len(labels) <= 8:  # training batches (validation has 12 images, test 16, in one batch each)
            calls["train"] += 1
            if calls["train"] == batches_per_epoch + 2:
                return float("nan"), grad
        return loss, grad

    monkeypatch.setattr(train_module.F, "softmax_cross_entropy", poisoned)
    with pytest.raises(TrainingDiverged) as info:
        train(small_config(idx_dir, epochs=3), out=tmp_path, progress=False, log=None)
    message = str(info.value)
    assert "nan at epoch 2, batch 2/5" in message and "smaller --lr" in message
    assert "last good checkpoint (epoch 1)" in message
    ckpt = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert ckpt.epoch == 1 and all(np.isfinite(v).all() for v in ckpt.model_state.values())
    metrics = json.loads((tmp_path / METRICS_NAME).read_text())
    assert "stopped" in metrics and len(metrics["history"]) == 1


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "file.bin"
    atomic_write(target, lambda f: f.write(b"old"))

    def crash(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, crash)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_checkpoint_loading_checks(full_run, tmp_path):
    out, _ = full_run
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.npz")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot be read"):
        load_checkpoint(tmp_path / "garbage.npz")
    np.savez(tmp_path / "foreign.npz", x=np.zeros(2))
    with pytest.raises(ValueError, match="not a numbacnn checkpoint"):
        load_checkpoint(tmp_path / "foreign.npz")
    ckpt = load_checkpoint(out)  # a folder means its checkpoint.npz
    model = ckpt.build_model("cpu")
    ckpt.model_state["classifier.1.weight"] = ckpt.model_state["classifier.1.weight"][:, :-1]
    with pytest.raises(ValueError, match="classifier.1.weight has shape"):
        ckpt.build_model("cpu")
    ckpt.model_state["classifier.1.weight"] = model.state_dict()["classifier.1.weight"].astype(np.float64)
    with pytest.raises(TypeError, match="dtype float64, expected float32"):
        ckpt.build_model("cpu")


def test_save_checkpoint_round_trips_optimizer_state(full_run, tmp_path):
    from numbacnn.optim import SGD

    out, _ = full_run
    ckpt = load_checkpoint(out)
    model = ckpt.build_model()
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt.load_state_dict(ckpt.optimizer_state)
    save_checkpoint(tmp_path / "c.npz", model, opt, dict(ckpt.meta))
    again = load_checkpoint(tmp_path / "c.npz")
    for k, v in ckpt.optimizer_state["buffers"].items():
        np.testing.assert_array_equal(again.optimizer_state["buffers"][k], v)
    assert dataclasses.asdict(again.config) == dataclasses.asdict(ckpt.config)


def test_cli_train_resume_evaluate_predict(idx_dir, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--dataset", "mnist", "--data-dir", str(idx_dir), "--batch-size", "8", "--padding", "1",
              "--filters", "4", "--device", "cpu", "--out", str(out), "--no-progress"]
    assert main(["train", "--epochs", "1", *common]) == 0
    assert main(["train", "--resume", "--epochs", "2", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "resuming" in text and "epoch 2/2" in text and "test accuracy" in text
    assert load_checkpoint(out).epoch == 2

    assert main(["evaluate", str(out / CHECKPOINT_NAME), "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] == pytest.approx(json.loads((out / METRICS_NAME).read_text())["test_accuracy"])

    pil = pytest.importorskip("PIL.Image")
    image = tmp_path / "img.png"
    pil.new("L", (20, 20), 180).save(image)
    assert main(["predict", str(out), str(image), str(image), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(image)) and lines[0].count("%") == 3


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "never downloads" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "none.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_ctrl_c_inside_a_checkpoint_write_stays_a_ctrl_c(tmp_path):
    """Ctrl-C inside np.savez makes zipfile's cleanup raise a ValueError that hid the
    interrupt (the CLI then printed a zipfile message with exit 2, not exit 130):
    atomic_write re-raises the KeyboardInterrupt and leaves no temporary file."""
    from numbacnn.train.checkpoint import atomic_write

    def interrupted_write(f):
        try:
            f.write(b"PK half")
            raise KeyboardInterrupt
        finally:
            raise ValueError("Can't close the ZIP file while there is an open writing handle on it.")

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "checkpoint.npz", interrupted_write)
    assert list(tmp_path.iterdir()) == []
