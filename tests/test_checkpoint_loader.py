"""Each check of the checkpoint loader, one file edit at a time.

``load_checkpoint`` is the one gate between a file on disk (untrusted input) and a
model: every entry is checked there, before a command builds anything. The CLI
tests edit a few entries; the training tests change weights in memory after loading,
which tests ``load_state_dict``, not the loader. Here a valid checkpoint is written
with ``save_checkpoint``, then one entry of the *file* is changed (the arrays are
rewritten with ``np.savez``, as another program would), and the loader must refuse
it with a ``CheckpointError`` whose one-line message names the file and the entry.
The unedited file loads, so each refusal is the edit's doing.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from numbacnn.errors import CheckpointError
from numbacnn.models import STRIDE_RULE, tiny_vgg
from numbacnn.train.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint

KWARGS = dict(in_channels=1, num_classes=3, image_size=12, filters=4, kernel_size=3, padding=1, dtype="float32",
              seed=0)


def _meta(kwargs=KWARGS):
    return dict(format=CHECKPOINT_FORMAT, epoch=1, model=dict(name="tiny_vgg", kwargs=dict(kwargs)), config={},
                classes=["a", "b", "c"][:kwargs["num_classes"]], normalizer=dict(mean=[0.5], std=[0.25]),
                history=[{"epoch": 1, "loss": 1.0}])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A valid checkpoint's arrays and metadata, as save_checkpoint wrote them."""
    path = tmp_path_factory.mktemp("ckpt") / "good.npz"
    save_checkpoint(path, tiny_vgg(**KWARGS), None, _meta())
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return path, arrays


def _write(path, arrays, meta=None):
    arrays = dict(arrays)
    if meta is not None:
        arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    return path


def _refused(path, key):
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert "\n" not in message, message
    assert str(path) in message and key in message, message
    return message


def test_the_unedited_checkpoint_loads(saved, tmp_path):
    path, arrays = saved
    copy = _write(tmp_path / "copy.npz", arrays)
    checkpoint = load_checkpoint(copy)
    for name, value in tiny_vgg(**KWARGS).state_dict().items():
        np.testing.assert_array_equal(checkpoint.model_state[name], value, err_msg=name)


# ---- the weights, checked against the model the settings build


def _weight_edits(arrays):
    w = arrays["model/features.0.weight"]  # (4, 1, 3, 3)
    return {
        # same size, another shape: only the shape check can see it
        "wrong shape, same size": ("model/features.0.weight", w.reshape(1, 4, 3, 3)),
        "wrong shape, larger": ("model/features.0.weight", np.zeros((4, 1, 5, 5), w.dtype)),
        "wrong shape, bias": ("model/features.0.bias", np.zeros(5, np.float32)),
        "wrong shape, classifier": ("model/classifier.1.weight",
                                    arrays["model/classifier.1.weight"].T.copy()),
        "wrong dtype": ("model/features.0.weight", w.astype(np.float64)),
        "wrong dtype, int": ("model/features.2.bias", np.zeros(4, np.int32)),
    }


@pytest.mark.parametrize("edit", ["wrong shape, same size", "wrong shape, larger", "wrong shape, bias",
                                  "wrong shape, classifier", "wrong dtype", "wrong dtype, int"])
def test_a_weight_of_the_wrong_shape_or_dtype_in_the_file_is_refused(saved, tmp_path, edit):
    _, arrays = saved
    key, value = _weight_edits(arrays)[edit]
    edited = dict(arrays, **{key: value})
    message = _refused(_write(tmp_path / "edited.npz", edited), f"[{key}]")
    assert ("shape" if "shape" in edit else "dtype") in message


def test_a_missing_weight_is_refused(saved, tmp_path):
    _, arrays = saved
    edited = {k: v for k, v in arrays.items() if k != "model/features.2.weight"}
    assert "missing" in _refused(_write(tmp_path / "edited.npz", edited), "[model/features.2.weight]")


def test_an_unexpected_weight_is_refused(saved, tmp_path):
    _, arrays = saved
    edited = dict(arrays, **{"model/features.9.weight": np.zeros((4, 4, 3, 3), np.float32)})
    assert "unexpected" in _refused(_write(tmp_path / "edited.npz", edited), "[model/features.9.weight]")


@pytest.mark.parametrize("prefix", ["model/features.0.weight", "optim/0.velocity"])
def test_non_finite_weights_and_buffers_are_refused(saved, tmp_path, prefix):
    path, arrays = saved
    if prefix.startswith("optim/"):  # a checkpoint with an optimizer buffer
        from numbacnn.optim import SGD

        model = tiny_vgg(**KWARGS)
        for p in model.parameters():
            p.accumulate(np.ones(p.shape, p.dtype))
        opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
        opt.step()
        save_checkpoint(tmp_path / "with_optim.npz", model, opt, _meta())
        with np.load(tmp_path / "with_optim.npz", allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        assert load_checkpoint(tmp_path / "with_optim.npz").optimizer_state is not None
    bad = arrays[prefix].copy()
    bad.reshape(-1)[3] = np.nan
    edited = _write(tmp_path / "edited.npz", dict(arrays, **{prefix: bad}))
    assert "NaN" in _refused(edited, f"[{prefix}]")
    loaded = load_checkpoint(edited, check_finite=False)  # loads, for inspecting a broken run
    kept = (loaded.model_state if prefix.startswith("model/") else loaded.optimizer_state["buffers"])
    assert np.isnan(kept[prefix.split("/", 1)[1]]).sum() == 1


# ---- the metadata


def _meta_edits():
    """name -> (function editing a copy of the metadata, the key the message names)."""
    def kwargs(**changes):
        def edit(meta):
            meta["model"]["kwargs"].update(changes)
            for k, v in changes.items():
                if v is None:
                    del meta["model"]["kwargs"][k]
        return edit

    def set_(key, value):
        def edit(meta):
            meta[key] = value
        return edit

    def drop(key):
        return lambda meta: meta.pop(key)

    return {
        "no format": (drop("format"), "[meta.format]"),
        "other format": (set_("format", CHECKPOINT_FORMAT + 1), "[meta.format]"),
        "no epoch": (drop("epoch"), "[meta.epoch]"),
        "negative epoch": (set_("epoch", -1), "[meta.epoch]"),
        "float epoch": (set_("epoch", 1.5), "[meta.epoch]"),
        "other model": (set_("model", {"name": "resnet", "kwargs": {}}), "[meta.model]"),
        "unknown setting": (kwargs(width=3), "[meta.model.kwargs.width]"),
        "zero filters": (kwargs(filters=0), "[meta.model.kwargs.filters]"),
        "bool kernel": (kwargs(kernel_size=True), "[meta.model.kwargs.kernel_size]"),
        "negative padding": (kwargs(padding=-1), "[meta.model.kwargs.padding]"),
        "missing image size": (kwargs(image_size=None), "[meta.model.kwargs.image_size]"),
        "bad stride": (kwargs(stride=0), "[meta.model.kwargs.stride]"),
        "stride without rule": (kwargs(stride=2), "[meta.model.kwargs.stride]"),
        "float16": (kwargs(dtype="float16"), "[meta.model.kwargs.dtype]"),
        "classes not names": (set_("classes", [1, 2, 3]), "[meta.classes]"),
        "classes count": (set_("classes", ["a", "b"]), "[meta.classes]"),
        "normalizer std 0": (set_("normalizer", {"mean": [0.0], "std": [0.0]}), "[meta.normalizer]"),
        "normalizer channels": (set_("normalizer", {"mean": [0.0, 0.0], "std": [1.0, 1.0]}), "[meta.normalizer]"),
        "normalizer NaN": (set_("normalizer", {"mean": [float("nan")], "std": [1.0]}), "[meta.normalizer]"),
        "config not a dict": (set_("config", [1]), "[meta.config]"),
        "config invalid": (set_("config", {"epochs": -3}), "[meta.config]"),
        "history not a list": (set_("history", {"epoch": 1}), "[meta.history]"),
        "optimizer not a dict": (set_("optimizer", [0]), "[meta.optimizer]"),
        # the settings ask for a model whose weights the file does not hold
        "more filters": (kwargs(filters=5), "[model/features.0.weight]"),
        "huge filters": (kwargs(filters=10**6), "[meta.model.kwargs]"),
        "impossible image": (kwargs(image_size=2, padding=0), "[meta.model.kwargs]"),
    }


@pytest.mark.parametrize("edit", sorted(_meta_edits()))
def test_each_metadata_check_refuses_its_edit(saved, tmp_path, edit):
    _, arrays = saved
    meta = json.loads(str(arrays["meta"]))
    change, key = _meta_edits()[edit]
    change(meta)
    _refused(_write(tmp_path / "edited.npz", arrays, meta), key)


def test_stride_with_its_rule_loads_and_without_it_is_refused(tmp_path):
    kwargs = dict(KWARGS, stride=2)
    meta = _meta(kwargs)
    meta["model"]["stride_rule"] = STRIDE_RULE
    path = tmp_path / "strided.npz"
    save_checkpoint(path, tiny_vgg(**kwargs), None, meta)
    assert load_checkpoint(path).model_state["features.0.weight"].shape == (4, 1, 3, 3)


@pytest.mark.parametrize("content", [b"", b"not a zip", None], ids=["empty", "text", "no meta"])
def test_files_that_are_not_checkpoints_are_refused(saved, tmp_path, content):
    _, arrays = saved
    path = tmp_path / "bad.npz"
    if content is None:
        np.savez(path, **{k: v for k, v in arrays.items() if k != "meta"})
    else:
        path.write_bytes(content)
    _refused(path, str(path))
