"""The Module API (issue 9, class 8): misuse raises a TypeError / ValueError /
IndexError / KeyError whose message names the argument and what is accepted,
instead of an AttributeError or an unpacking error from deep inside a layer."""

from __future__ import annotations

import pytest

from numbacnn.models import tiny_vgg
from numbacnn.report import describe_layers


@pytest.fixture(scope="module")
def model():
    return tiny_vgg(in_channels=1, num_classes=3, image_size=12, filters=4, padding=1)


@pytest.mark.parametrize("x, match", [
    ([[1.0, 2.0]], r"Sequential: input must be a NumPy array or a CUDA device array, got list"),
    (3.0, r"got float"),
    (None, r"got NoneType"),
])
def test_calling_a_model_on_a_non_array_names_what_it_takes(model, x, match):
    with pytest.raises(TypeError, match=match):
        model(x)


def test_sequential_indexing_names_the_layers(model):
    assert model[-1] is model["classifier"]
    with pytest.raises(IndexError, match=r"Sequential: index 2 is out of range for 2 layers"):
        model[2]
    with pytest.raises(KeyError, match=r"Sequential has no layer named 'head'; its layers are "
                                       r"\['features', 'classifier'\]"):
        model["head"]
    with pytest.raises(TypeError, match=r"Sequential: index must be an int or a layer name, got float"):
        model[1.0]


def test_train_mode_must_be_a_bool(model):
    with pytest.raises(TypeError, match=r"Sequential\.train: mode must be True or False, got 'no'"):
        model.train("no")
    assert model.training  # unchanged
    model.eval()
    assert not model.training
    model.train()


@pytest.mark.parametrize("walk", [lambda m, s: m.summary(s, print_fn=None), describe_layers],
                         ids=["summary", "describe_layers"])
def test_shape_walks_name_the_layer_that_cannot_take_the_shape(model, walk):
    with pytest.raises(ValueError, match=r"layer features\.0 \(Conv2d\) cannot take an input of shape \(1, 12\)"):
        walk(model, (1, 12))
    with pytest.raises(TypeError, match=r"input_shape must be a sequence of ints such as \(3, 64, 64\)"):
        walk(model, "1,12,12")
    with pytest.raises(ValueError, match=r"input_shape must not have negative sizes"):
        walk(model, (1, -12, 12))
    # too small for the second block: the layer whose output drops below 1x1 is named
    with pytest.raises(ValueError, match=r"layer features\.\d+ \(\w+\) cannot take an input of shape"):
        walk(model, (1, 1, 3, 3))
    assert walk(model, (1, 12, 12)) is not None
