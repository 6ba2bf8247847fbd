"""The explore page in a real browser (headless Chromium via Selenium, tests/browser.py):
it loads with no console error, shows every layer and class, switching images changes
the maps, a clicked conv pixel's products plus bias equal numbacnn's conv2d there,
the hyperparameter view agrees with shapes.explain_conv on thousands of cases, and
nothing is fetched. Screenshots of each view go to NUMBACNN_SCREENSHOTS (docs/ for
the README) when that is set."""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

import numpy as np
import pytest

from numbacnn import functional as F
from numbacnn.report import describe_layers
from numbacnn.models import tiny_vgg
from numbacnn.shapes import explain_conv
from numbacnn.train import load_checkpoint
from browser import browser, browser_missing, console_errors, full_page_screenshot  # noqa: F401  (fixture)
from explore_fixtures import (grey_checkpoint, grey_page, page_data, trained_checkpoint,  # noqa: F401
                              write_colour_folder)
from test_data import write_fake_idx_dataset

pytest.importorskip("PIL")
pytestmark = pytest.mark.skipif(bool(browser_missing()), reason=f"no browser: {browser_missing()}")


def open_page(driver, path: Path) -> None:
    driver.get(Path(path).resolve().as_uri())
    assert driver.execute_script("return document.body.getAttribute('data-ready')") == "true"


def click_map_pixel(driver, layer: int, channel: int, i: int, j: int) -> None:
    """Real mouse clicks: the overview map, then pixel (i, j) of the enlarged map."""
    from selenium.webdriver.common.action_chains import ActionChains

    driver.find_element("css selector", f'.maps canvas[data-layer="{layer}"][data-channel="{channel}"]').click()
    canvas = driver.find_element("id", "detail-canvas")
    cell = int(canvas.get_attribute("data-cell"))
    width, height = int(canvas.get_attribute("width")), int(canvas.get_attribute("height"))
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    ActionChains(driver).move_to_element_with_offset(
        canvas, round((j + 0.5) * cell - width / 2), round((i + 0.5) * cell - height / 2)).click().perform()


def kernel_maps(checkpoint: Path, page: dict, image: int) -> dict[int, np.ndarray]:
    """numbacnn's own output of every leaf layer for the page's image (its layers' forward in
    eval mode, one after another), by leaf index; -1 is the normalised input."""
    from numbacnn.nn import leaf_layers

    loaded = load_checkpoint(checkpoint)
    model = loaded.build_model("cpu")
    model.eval()
    pixels = np.frombuffer(__import__("base64").b64decode(page["images"][image]["pixels"]), np.uint8)
    x = loaded.normalizer(pixels.reshape(page["input_shape"])[None], dtype=np.float32)
    outputs = {-1: x[0]}
    for index, (_, layer) in enumerate(leaf_layers(model)):
        x = layer.forward(x)
        outputs[index] = np.asarray(x)[0].copy()
    return outputs


def assert_page_maps_are_the_kernels(driver, checkpoint: Path, data: dict, image: int) -> None:
    """Every map the page draws (stored or rebuilt in JavaScript) equals numbacnn's, bit for bit."""
    maps = kernel_maps(checkpoint, data, image)
    for layer in (layer for layer in data["layers"] if layer["has_maps"]):
        shown = driver.execute_script(f"return Array.from(mapsOf({image}, {layer['index']}))")
        expected = maps[layer["index"]].ravel()
        assert np.array_equal(np.asarray(shown, dtype=expected.dtype), expected), layer["explainer_name"]
        assert [float(v) for v in expected] == shown, layer["explainer_name"]


def test_page_loads_with_every_layer_and_class_and_no_error(browser, grey_checkpoint, grey_page):
    open_page(browser, grey_page)
    assert console_errors(browser) == []
    data = page_data(grey_page)
    described = describe_layers(load_checkpoint(grey_checkpoint).build_model("cpu"), data["input_shape"])
    shown = [e.get_attribute("data-name") for e in browser.find_elements("css selector", ".layer[data-name]")]
    assert shown == [d.explainer_name for d in described]
    text = browser.find_element("tag name", "body").text
    for d in described:
        assert f"{d.explainer_name} {d.kind} {'x'.join(map(str, d.output_shape[1:]))}" in text
    assert_page_maps_are_the_kernels(browser, grey_checkpoint, data, image=2)
    rows = browser.find_elements("css selector", "#softmax-table tr[data-class]")
    assert [row.get_attribute("data-class") for row in rows] == data["classes"]


def test_switching_images_changes_the_maps(browser, grey_page):
    open_page(browser, grey_page)
    picture = "return document.querySelector('.maps canvas[data-layer=\"0\"][data-channel=\"0\"]').toDataURL()"
    before = browser.execute_script(picture)
    browser.find_element("css selector", '.thumb[data-image="5"]').click()
    assert browser.execute_script("return STATE.image") == 5
    assert browser.execute_script(picture) != before
    assert console_errors(browser) == []


@pytest.mark.parametrize("image, layer, channel, i, j", [(0, 2, 1, 3, 4), (7, 0, 2, 0, 11), (3, 5, 0, 5, 0)])
def test_conv_pixel_products_plus_bias_equal_numbacnns_conv2d(browser, grey_checkpoint, grey_page,
                                                              image, layer, channel, i, j):
    data = page_data(grey_page)
    open_page(browser, grey_page)
    browser.find_element("css selector", f'.thumb[data-image="{image}"]').click()
    click_map_pixel(browser, layer, channel, i, j)
    assert browser.execute_script("return STATE.pixel") == [i, j]
    products = [float(td.get_attribute("data-value"))
                for td in browser.find_elements("css selector", "#conv-view table.products td")]
    bias = float(browser.find_element("id", "conv-bias").get_attribute("data-value"))
    shown = browser.find_element("id", "conv-kernel-value")

    conv = data["layers"][layer]
    maps = kernel_maps(grey_checkpoint, data, image)
    model = load_checkpoint(grey_checkpoint).build_model("cpu")
    module = dict(model.named_modules())[conv["name"]]
    expected = F.conv2d(maps[conv["input_index"]][None], module.weight.data, module.bias.data,
                        stride=module.stride, padding=module.padding)[0, channel, i, j]
    kh, kw = conv["hyper"]["kernel"]
    assert len(products) == conv["weight_shape"][1] * kh * kw
    assert abs(sum(products) + bias - float(expected)) <= 1e-5 * (1 + abs(float(expected)))
    assert float(shown.get_attribute("data-value")) == float(expected)  # the kernel's float32, exactly
    assert shown.text == f"{float(expected):.4f}"
    assert browser.find_element("id", "conv-recomputed").text == shown.text  # equal to the printed precision


def test_relu_and_max_pool_views(browser, grey_checkpoint, grey_page):
    data = page_data(grey_page)
    open_page(browser, grey_page)
    maps = kernel_maps(grey_checkpoint, data, 0)
    click_map_pixel(browser, 1, 2, 4, 7)  # relu_1_1
    x = float(browser.find_element("id", "relu-input").get_attribute("data-value"))
    y = float(browser.find_element("id", "relu-output").get_attribute("data-value"))
    assert x == float(maps[0][2, 4, 7]) and y == max(0.0, x) == float(maps[1][2, 4, 7])
    click_map_pixel(browser, 4, 1, 2, 3)  # max_pool_1 (2x2, stride 2)
    window = [float(td.get_attribute("data-value")) for td in browser.find_elements("css selector", "table.window td")]
    winner = browser.find_element("css selector", "table.window td.winner")
    assert window == [float(v) for v in maps[3][1, 4:6, 6:8].ravel()]
    pooled = float(browser.find_element("id", "pool-output").get_attribute("data-value"))
    assert pooled == max(window) == float(winner.get_attribute("data-value")) == float(maps[4][1, 2, 3])


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def test_hyperparameter_view_agrees_with_explain_conv(browser, grey_page):
    """The page's verdicts are explain_conv's, looked up: checked on 3,000 random cases of
    the view's range and its corners, field by field, then in the view itself."""
    from numbacnn.explore.slides import LIMITS

    open_page(browser, grey_page)
    rng = np.random.default_rng(19)
    corners = list(itertools.product((1, LIMITS["input"]), (1, LIMITS["kernel"]), (1, LIMITS["stride"]),
                                     (0, LIMITS["padding"])))
    cases = corners + [(int(rng.integers(1, LIMITS["input"] + 1)), int(rng.integers(1, LIMITS["kernel"] + 1)),
                        int(rng.integers(1, LIMITS["stride"] + 1)), int(rng.integers(0, LIMITS["padding"] + 1)))
                       for _ in range(3000)]
    page = browser.execute_script("return arguments[0].map(c => explainConv(...c))", [list(c) for c in cases])
    for (size, kernel, stride, padding), answer in zip(cases, page):
        e = explain_conv(size, kernel, stride, padding)
        assert {"output_size", "symmetric", "uncovered", "suggested_paddings", "suggested_strides"} <= set(answer)
        assert answer == {name: _plain(getattr(e, name)) for name in answer}, (size, kernel, stride, padding)
    outside = browser.execute_script("return [explainConv(65, 3, 1, 0), explainConv(7, 3, 9, 0), explainConv(7, 3, 1, 11)]")
    assert outside == [None, None, None]
    # and the view itself, typed into its fields
    for size, padding, kernel, stride in [(7, 0, 3, 3), (7, 0, 3, 2), (28, 1, 3, 2), (5, 0, 7, 1), (64, 0, 11, 4),
                                          (64, 10, 5, 8)]:
        for key, value in (("input", size), ("padding", padding), ("kernel", kernel), ("stride", stride)):
            field = browser.find_element("id", f"hyper-{key}")
            field.clear()
            field.send_keys(str(value))
        e = explain_conv(size, kernel, stride, padding)
        accepted = getattr(e, "sound", e.symmetric)
        verdict = browser.find_element("id", "hyper-verdict")
        assert verdict.get_attribute("data-accepted") == str(accepted).lower()
        assert int(verdict.get_attribute("data-output")) == e.output_size[0]
        shown = [(li.get_attribute("data-padding"), li.get_attribute("data-stride"))
                 for li in browser.find_elements("css selector", "#hyper-suggestions li")]
        expected = ([(str(p[0]), None) for p in e.suggested_paddings] + [(None, str(s[0])) for s in e.suggested_strides]
                    if not accepted and min(e.output_size) >= 1 else [])
        assert shown == expected, (size, padding, kernel, stride)
    browser.find_element("id", "hyper-animate").click()
    assert console_errors(browser) == []


def test_no_request_leaves_the_page(browser, grey_page):
    open_page(browser, grey_page)
    click_map_pixel(browser, 2, 0, 1, 1)
    browser.find_element("id", "animate").click()
    browser.find_element("css selector", '#saliency-classes button[data-class="3"]').click()
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources == []
    assert not re.search(r"https?://", grey_page.read_text(encoding="utf-8"))
    assert console_errors(browser) == []


@pytest.fixture(scope="module", params=["imagefolder-rgb", "k5-p2-s2-batchnorm"])
def variant(request, tmp_path_factory):
    """The acceptance's other models: 3-channel imagefolder, and --kernel-size 5 --padding 2
    --stride 2 --batch-norm (on 28x28 grey data), each with its page."""
    from numbacnn.explore import explore

    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "imagefolder-rgb":
        data = write_colour_folder(folder / "pictures")
        checkpoint = trained_checkpoint(folder, dataset="imagefolder", data_dir=str(data), image_size=16,
                                        channels=3, padding=1)
    else:
        data = write_fake_idx_dataset(folder / "mnist", n_train=40, n_test=20, size=28)
        checkpoint = trained_checkpoint(folder, dataset="mnist", data_dir=str(data), kernel_size=5, padding=2,
                                        stride=2, batch_norm=True)
    out = folder / "explore.html"
    explore(checkpoint, out, samples=4, progress=False)
    return checkpoint, out


def test_other_models_show_every_layer_and_their_conv_arithmetic(browser, variant):
    checkpoint, page = variant
    data = page_data(page)
    open_page(browser, page)
    assert console_errors(browser) == []
    described = describe_layers(load_checkpoint(checkpoint).build_model("cpu"), data["input_shape"])
    shown = [e.get_attribute("data-name") for e in browser.find_elements("css selector", ".layer[data-name]")]
    assert shown == [d.explainer_name for d in described]
    text = browser.find_element("tag name", "body").text
    assert all(name in text for name in data["classes"])
    assert_page_maps_are_the_kernels(browser, checkpoint, data, image=1)
    maps = kernel_maps(checkpoint, data, 1)
    browser.find_element("css selector", '.thumb[data-image="1"]').click()
    for layer in (layer for layer in data["layers"] if layer["kind"] == "BatchNorm2d"):
        browser.execute_script(f"selectMap({layer['index']}, 2); selectPixel(1, 1);")
        x = float(browser.find_element("id", "bn-input").get_attribute("data-value"))
        y = float(browser.find_element("id", "bn-output").get_attribute("data-value"))
        assert x == float(maps[layer["input_index"]][2, 1, 1]) and y == float(maps[layer["index"]][2, 1, 1])
    for layer in (layer for layer in data["layers"] if layer["kind"] == "Conv2d"):
        _, h, w = layer["output_shape"]
        browser.execute_script(f"selectMap({layer['index']}, 1); selectPixel({h - 1}, {w - 1});")
        recomputed = float(browser.find_element("id", "conv-recomputed").get_attribute("data-value"))
        kernel = float(browser.find_element("id", "conv-kernel-value").get_attribute("data-value"))
        assert abs(recomputed - kernel) <= 1e-5 * (1 + abs(kernel)), layer["explainer_name"]
    assert console_errors(browser) == []


def test_screenshots_of_each_view(browser, grey_page, tmp_path):
    """Not blank, and for the README: NUMBACNN_SCREENSHOTS=docs NUMBACNN_EXPLORE_PAGE=explore.html
    takes them of a real model's page."""
    from PIL import Image

    page = Path(os.environ.get("NUMBACNN_EXPLORE_PAGE", grey_page))
    folder = Path(os.environ.get("NUMBACNN_SCREENSHOTS", tmp_path))
    open_page(browser, page)
    data = page_data(page)
    conv = next(layer for layer in data["layers"] if layer["kind"] == "Conv2d" and layer["input_index"] >= 0)
    _, h, w = conv["output_shape"]
    click_map_pixel(browser, conv["index"], 0, h // 2, w // 2)
    full_page_screenshot(browser, folder / "explore-page.png")
    for view in ("overview", "detail", "output-view", "saliency-view", "training-view", "hyper-view"):
        element = browser.find_element("id", view)
        browser.execute_script("arguments[0].scrollIntoView()", element)
        path = folder / f"explore-{view.replace('-view', '')}.png"
        element.screenshot(str(path))
        pixels = np.asarray(Image.open(path).convert("RGB"))
        assert pixels.std() > 10 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20, view
    assert console_errors(browser) == []


def test_kernel_links_and_progress_bar(browser, grey_checkpoint, tmp_path, capsys):
    """The slot `numbacnn info --kernels` will fill: a layer's kernel file:line beside it."""
    from numbacnn.explore import explore

    out = tmp_path / "linked.html"
    explore(grey_checkpoint, out, samples=2, progress=True,
            kernel_sources={"features.0": "numbacnn/kernels/cpu/conv.py:42"})
    assert "explore" in capsys.readouterr().err  # tqdm's bar, on stderr
    open_page(browser, out)
    links = {e.get_attribute("data-name"): e.find_element("css selector", ".kernel-source").text
             for e in browser.find_elements("css selector", ".layer[data-name]")}
    assert links["conv_1_1"] == "kernel: numbacnn/kernels/cpu/conv.py:42" and links["conv_1_2"] == ""
    assert console_errors(browser) == []


def test_float64_model_with_random_weights(browser, tmp_path):
    """The page reads float64 maps too (a model trained with --dtype float64); built from
    random weights through the package's functions, no training."""
    from numbacnn.data import Normalizer
    from numbacnn.explore import build_page_data, collect_image, describe_page_layers, input_gradients, render_page
    from numbacnn.explore.collect import conv_parameters
    from numbacnn.explore.slides import slide_table
    from numbacnn.nn import leaf_layers

    model = tiny_vgg(in_channels=1, num_classes=3, image_size=12, filters=2, padding=1, dtype=np.float64, seed=7)
    normalizer = Normalizer((0.5,), (0.25,))
    rng = np.random.default_rng(2)
    records = []
    for n in range(2):
        record = collect_image(model, rng.integers(0, 256, (1, 12, 12)).astype(np.uint8), normalizer, np.float64,
                               label=n, source=f"random {n}")
        record.saliency = input_gradients(model, record.input[None])
        records.append(record)
    data = build_page_data(title="float64", source="random weights", classes=["a", "b", "c"],
                           layers=describe_page_layers(model, (1, 12, 12)), params=conv_parameters(model),
                           records=records, history=[], confusion={"missing": "random weights"},
                           slides=slide_table({"input": 8, "kernel": 3, "stride": 2, "padding": 1}))
    page = tmp_path / "float64.html"
    page.write_text(render_page(data), encoding="utf-8")
    open_page(browser, page)
    assert console_errors(browser) == []
    x = records[1].input[None]
    model.eval()
    for index, (_, layer) in enumerate(leaf_layers(model)):
        x = layer.forward(x)
        if data["layers"][index]["has_maps"]:
            shown = browser.execute_script(f"return Array.from(mapsOf(1, {index}))")
            assert shown == [float(v) for v in x[0].ravel()], data["layers"][index]["explainer_name"]
    browser.execute_script("STATE.image = 1; selectMap(2, 1); selectPixel(11, 0);")
    recomputed = float(browser.find_element("id", "conv-recomputed").get_attribute("data-value"))
    kernel = float(browser.find_element("id", "conv-kernel-value").get_attribute("data-value"))
    assert abs(recomputed - kernel) <= 1e-12 * (1 + abs(kernel))
    assert browser.execute_script("return explainConv(9, 3, 1, 0)") is None  # outside these limits
