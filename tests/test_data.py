"""Loaders on small files the tests write themselves; batching, splits, normalisation."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from numbacnn import data
from numbacnn.data import (
    BatchLoader,
    Dataset,
    DatasetNotFoundError,
    Normalizer,
    load_dataset,
    read_idx,
    stratified_split,
    write_idx,
)


def write_fake_idx_dataset(folder, n_train=40, n_test=20, size=12, gz=True, seed=0):
    """Four IDX files in ``folder`` with images whose brightness encodes the label."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n, dtype=np.uint8) % 10
        images = (rng.integers(0, 40, (n, size, size)) + labels[:, None, None] * 20).astype(np.uint8)
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", labels)
    return folder


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, array)
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, array)
    ints = np.array([[1, -2], [300000, 4]], dtype=np.int32)
    write_idx(tmp_path / "i.idx", ints)
    np.testing.assert_array_equal(read_idx(tmp_path / "i.idx"), ints)


def test_idx_rejects_garbage(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((4, 2), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(ValueError, match="data bytes"):
        read_idx(tmp_path / "short")


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_data_dir(tmp_path, gz):
    write_fake_idx_dataset(tmp_path / "fm", gz=gz)
    splits = load_dataset("fashion-mnist", tmp_path / "fm")
    assert splits.train.images.shape == (40, 1, 12, 12) and splits.train.images.dtype == np.uint8
    assert splits.test.labels.shape == (20,) and splits.test.labels.dtype == np.int64
    assert splits.classes[0] == "T-shirt/top" and len(splits.classes) == 10


def test_fashion_mnist_from_environment(tmp_path, monkeypatch):
    write_fake_idx_dataset(tmp_path / "fashion-mnist")
    monkeypatch.setenv("NUMBACNN_DATA", str(tmp_path))
    assert len(load_dataset("fashion-mnist").train) == 40


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMBACNN_DATA", raising=False)
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion-mnist")
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message and "--data-dir" in message
    assert "never downloads" in message and "\n" not in message


@pytest.mark.parametrize("how", ["env", "data_dir"])
def test_a_named_data_folder_is_used_or_refused_never_skipped(tmp_path, monkeypatch, how):
    """A missing or incomplete folder the user named is refused, even though the
    system folder (here a complete one) exists."""
    write_fake_idx_dataset(tmp_path / "system")
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "system")
    monkeypatch.delenv("NUMBACNN_DATA", raising=False)
    assert len(load_dataset("fashion-mnist").train) == 40  # nothing named: the system folder
    partial = write_fake_idx_dataset(tmp_path / "partial")
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    for folder, missing in ((tmp_path / "absent", "does not exist"), (partial, "t10k-labels-idx1-ubyte[.gz] missing")):
        if how == "env":
            monkeypatch.setenv("NUMBACNN_DATA", str(folder))
        with pytest.raises(DatasetNotFoundError) as info:
            load_dataset("fashion-mnist", folder if how == "data_dir" else None)
        message = str(info.value)
        assert missing in message and str(folder) in message
        assert ("$NUMBACNN_DATA" if how == "env" else "--data-dir") in message


def test_mnist_loader(tmp_path):
    write_fake_idx_dataset(tmp_path / "m", gz=False)
    splits = load_dataset("mnist", tmp_path / "m")
    assert splits.classes == tuple("0123456789") and len(splits.test) == 20
    with pytest.raises(DatasetNotFoundError, match="mnist"):
        load_dataset("mnist", tmp_path / "empty")


def test_cifar10_loader(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, n in [(f"data_batch_{i}", 4) for i in range(1, 6)] + [("test_batch", 3)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(range(n))}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    splits = load_dataset("cifar10", tmp_path)
    assert splits.train.images.shape == (20, 3, 32, 32) and splits.test.images.shape == (3, 3, 32, 32)
    assert splits.classes[3] == "c3"
    with open(folder / "test_batch", "rb") as f:
        raw = pickle.load(f)[b"data"]
    np.testing.assert_array_equal(splits.test.images[1, 2].reshape(-1), raw[1, 2048:])


def _write_png(path, value, size=(10, 8), mode="RGB"):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def test_imagefolder_loader_split_and_resize(tmp_path):
    pytest.importorskip("PIL")
    for cls, color in (("cat", (200, 10, 10)), ("dog", (10, 200, 10))):
        for i in range(5):
            _write_png(tmp_path / "imgs" / cls / f"{i}.png", color)
    (tmp_path / "imgs" / "dog" / "notes.txt").write_text("ignored")
    splits = load_dataset("imagefolder", tmp_path / "imgs", image_size=16, seed=1)
    assert splits.classes == ("cat", "dog")
    assert splits.train.images.shape[1:] == (3, 16, 16)
    assert len(splits.train) + len(splits.test) == 10 and len(splits.test) == 2
    assert splits.train.images[splits.train.labels == 0][:, 0].min() == 200  # red channel of cats


def test_imagefolder_train_test_layout_and_grey(tmp_path):
    pytest.importorskip("PIL")
    for split in ("train", "test"):
        for cls in ("a", "b"):
            _write_png(tmp_path / split / cls / "x.jpg", 128, mode="L")
    splits = load_dataset("imagefolder", tmp_path, image_size=8, channels=1)
    assert splits.train.images.shape == (2, 1, 8, 8) and splits.test.images.shape == (2, 1, 8, 8)


def test_imagefolder_without_classes(tmp_path):
    pytest.importorskip("PIL")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no class subfolders"):
        load_dataset("imagefolder", tmp_path / "empty")


def test_unknown_dataset():
    with pytest.raises(ValueError, match="expected one of"):
        load_dataset("imagenet")


def test_stratified_split_is_seeded_and_disjoint():
    labels = np.repeat(np.arange(4), 10)
    keep, held = stratified_split(labels, 0.2, seed=7)
    assert len(held) == 8 and np.bincount(labels[held]).tolist() == [2, 2, 2, 2]
    assert not set(keep) & set(held) and len(keep) + len(held) == 40
    again = stratified_split(labels, 0.2, seed=7)
    np.testing.assert_array_equal(again[1], held)
    assert not np.array_equal(stratified_split(labels, 0.2, seed=8)[1], held)


def test_normalizer():
    images = np.random.default_rng(0).integers(0, 256, (50, 2, 4, 4)).astype(np.uint8)
    norm = Normalizer.fit(images)
    out = norm(images)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, atol=1e-4)
    assert norm(images, np.float64).dtype == np.float64
    with pytest.raises(TypeError, match="uint8"):
        norm(images.astype(np.float32))
    np.testing.assert_allclose(Normalizer.scale_only(2)(images), images / np.float32(255), rtol=1e-6)


def test_batch_loader_order_depends_on_seed_and_epoch_only():
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
    ds = Dataset(images, np.arange(10, dtype=np.int64))
    norm = Normalizer((0.0,), (1 / 255,))  # identity on the values
    loader = BatchLoader(ds, 4, norm, seed=3)
    assert len(loader) == 3
    loader.set_epoch(1)
    batches = [labels.tolist() for _, labels in loader]
    assert sorted(sum(batches, [])) == list(range(10)) and [len(b) for b in batches] == [4, 4, 2]
    other = BatchLoader(ds, 4, norm, seed=3)
    other.set_epoch(0)
    other.set_epoch(1)
    assert [labels.tolist() for _, labels in other] == batches
    loader.set_epoch(2)
    assert [labels.tolist() for _, labels in loader] != batches
    x, labels = next(iter(BatchLoader(ds, 4, norm, shuffle=False)))
    np.testing.assert_allclose(x.reshape(-1), [0, 1, 2, 3])
    assert len(BatchLoader(ds, 4, norm, drop_last=True)) == 2
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(ds, 0, norm)


def test_real_fashion_mnist_when_installed():
    if not data.FASHION_MNIST_SYSTEM_DIR.is_dir():
        pytest.skip("dataset-fashion-mnist is not installed")
    splits = data.load_fashion_mnist(data.FASHION_MNIST_SYSTEM_DIR)
    assert splits.train.images.shape == (60000, 1, 28, 28) and len(splits.test) == 10000
    assert np.bincount(splits.test.labels).tolist() == [1000] * 10
