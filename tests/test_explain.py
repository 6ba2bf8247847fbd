"""`numbacnn explain conv | model`: the printed arithmetic, verdicts, suggestions and layer tables."""

from __future__ import annotations

import re

import pytest

from numbacnn.cli import main
from numbacnn.models import tiny_vgg
from numbacnn.nn import leaf_layers
from numbacnn.report import describe_layers, explainer_names
from numbacnn.shapes import receptive_field_step


def explain(capsys, *argv: str) -> tuple[int, str]:
    code = main(["explain", *argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# (arguments, exit code, lines that must appear in the output)
CONV_CASES = [
    # CNN Explainer's stride lesson: stride 2 fits a 7x7 input, stride 3 drops the last row/column.
    (["--input", "7", "--kernel", "3", "--stride", "2", "--padding", "0"], 0,
     ["height: (7 + 2*0 - 3) / 2 + 1 = 3", "width:  (7 + 2*0 - 3) / 2 + 1 = 3", "output 3x3",
      "verdict: symmetric"]),
    (["--input", "7", "--kernel", "3", "--stride", "3", "--padding", "0"], 0,
     ["(7 + 2*0 - 3) / 3 + 1 = 2  (floor of 2.33333)", "verdict: NOT symmetric",
      "the last input row (row 6, counting from 0)", "the last input column (column 6, counting from 0)",
      "are never covered", "--padding 1: output 3x3", "--stride 2: output 3x3"]),
    # padding lesson: "same"-style padding keeps the size
    (["--input", "5", "--kernel", "3", "--padding", "1"], 0,
     ["(5 + 2*1 - 3) / 1 + 1 = 5", "output 5x5", "verdict: symmetric"]),
    # two lost rows are numbered as a range
    (["--input", "8", "--kernel", "3", "--stride", "3"], 0,
     ["the last 2 input rows (rows 6-7, counting from 0)", "--padding 2: output 4x4"]),
    # only a padding row is dropped: lopsided, not a loss of input pixels
    (["--input", "6", "--kernel", "3", "--stride", "2", "--padding", "1"], 0,
     ["the last padding row and the last padding column", "Only zero padding is dropped",
      "--stride 1: output 6x6"]),
    # per-axis stride and padding (HEIGHT,WIDTH)
    (["--input", "7,6", "--kernel", "3", "--stride", "3,2", "--padding", "0,1"], 0,
     ["stride 3,2, padding 0,1", "height: (7 + 2*0 - 3) / 3 + 1 = 2", "width:  (6 + 2*1 - 3) / 2 + 1 = 3",
      "the last input row (row 6, counting from 0) and the last padding column", "--stride 4,1: output 2x6"]),
    (["--input", "7x6", "--kernel", "3", "--stride", "2,1"], 0, ["output 3x4", "verdict: symmetric"]),
    # dilation widens the kernel
    (["--input", "9", "--kernel", "3", "--dilation", "2", "--stride", "2"], 0,
     ["dilation 2", "(9 + 2*0 - 5) / 2 + 1 = 3", "verdict: symmetric"]),
    # impossible: kernel larger than the padded input
    (["--input", "3", "--kernel", "5"], 1, ["output -1x-1", "verdict: IMPOSSIBLE", "larger than the padded input"]),
    # bad arguments
    (["--input", "0", "--kernel", "3"], 2, ["error: explain_conv: input_size must be >= 1"]),
]


@pytest.mark.parametrize("argv, exit_code, expected", CONV_CASES, ids=[" ".join(c[0]) for c in CONV_CASES])
def test_explain_conv_prints_arithmetic_verdict_and_fixes(capsys, argv, exit_code, expected):
    code, out = explain(capsys, "conv", *argv)
    assert code == exit_code, out
    for line in expected:
        assert line in out, f"{line!r} missing from:\n{out}"


def test_explain_conv_suggestions_really_are_symmetric(capsys):
    code, out = explain(capsys, "conv", "--input", "7", "--kernel", "3", "--stride", "3")
    suggested = re.findall(r"--(padding|stride) (\d+): output", out)
    assert suggested, out
    for name, value in suggested:
        other = ["--stride", "3"] if name == "padding" else ["--padding", "0"]
        code, fixed = explain(capsys, "conv", "--input", "7", "--kernel", "3", f"--{name}", value, *other)
        assert code == 0 and "verdict: symmetric" in fixed


def test_explain_conv_rejects_malformed_pairs(capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(["explain", "conv", "--input", "7,6,5", "--kernel", "3"])
    assert excinfo.value.code == 2
    assert "expected an int or a pair" in capsys.readouterr().err


def test_explain_conv_png_is_written(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "slide.png"
    code, out = explain(capsys, "conv", "--input", "7", "--kernel", "3", "--stride", "3", "--png", str(png))
    assert code == 0 and f"wrote {png}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_explain_without_what_prints_help(capsys):
    code, out = explain(capsys)
    assert code == 2 and "conv" in out and "model" in out and "report" in out


# --------------------------------------------------------------------------- #
# explain model
# --------------------------------------------------------------------------- #


def table_rows(out: str) -> dict[str, str]:
    """Layer table rows keyed by CNN Explainer name (the first line naming each
    layer; the explanations after the table name layers again)."""
    rows: dict[str, str] = {}
    for line in out.splitlines():
        if re.match(r"^(conv|relu|max_pool|flatten|output)", line):
            rows.setdefault(line.split()[0], line)
    return rows


def test_explain_model_default_is_cnn_explainers_tiny_vgg(capsys):
    code, out = explain(capsys, "model")
    assert code == 0, out
    rows = table_rows(out)
    assert list(rows) == ["conv_1_1", "relu_1_1", "conv_1_2", "relu_1_2", "max_pool_1",
                          "conv_2_1", "relu_2_1", "conv_2_2", "relu_2_2", "max_pool_2", "flatten", "output"]
    # CNN Explainer's sizes 64 -> 62 -> 60 -> 30 -> 28 -> 26 -> 13, its 19,920 parameters
    for name, shape in (("conv_1_1", "(1, 10, 62, 62)"), ("conv_1_2", "(1, 10, 60, 60)"),
                        ("max_pool_1", "(1, 10, 30, 30)"), ("conv_2_2", "(1, 10, 26, 26)"),
                        ("max_pool_2", "(1, 10, 13, 13)"), ("output", "(1, 10)")):
        assert shape in rows[name], rows[name]
    assert "total parameters: 19,920" in out
    assert " 280 " in rows["conv_1_1"] and "2,114,200" in rows["conv_1_1"]  # 2*62*62*10*27 + 62*62*10
    # receptive fields: 3, 5, pool 6, 10, 14, pool 16
    for name, field in (("conv_1_1", "3x3"), ("conv_1_2", "5x5"), ("max_pool_1", "6x6"),
                        ("conv_2_1", "10x10"), ("conv_2_2", "14x14"), ("max_pool_2", "16x16"),
                        ("output", "whole input")):
        assert field in rows[name], rows[name]
    assert "every kernel slides symmetrically" in out


def test_explain_model_flags_asymmetric_pooling(capsys):
    code, out = explain(capsys, "model", "--image-size", "63", "--in-channels", "1")
    assert code == 1, out
    rows = table_rows(out)
    assert "ASYMMETRIC" in rows["max_pool_1"] and "ASYMMETRIC" in rows["max_pool_2"]
    assert "ASYMMETRIC" not in rows["conv_1_1"]
    assert "(1, 10, 29, 29)" in rows["max_pool_1"]
    assert "max_pool_1 (features.4, MaxPool2d): kernel 2x2 with stride (2, 2)" in out
    assert "tiny_vgg refuses this combination" in out


def test_explain_model_padding_one_keeps_sizes(capsys):
    code, out = explain(capsys, "model", "--image-size", "28", "--padding", "1", "--in-channels", "1")
    assert code == 0, out
    rows = table_rows(out)
    assert "(1, 10, 28, 28)" in rows["conv_1_2"] and "(1, 10, 7, 7)" in rows["max_pool_2"]


@pytest.mark.parametrize("argv, exit_code, text", [
    (["--image-size", "8"], 1, "impossible: tiny_vgg(image_size=8"),
    # max_pool_1 also slides asymmetrically here, but what makes it impossible is conv_2_1's 1x1 input
    (["--image-size", "7"], 1, "layer conv_2_1 gets a 1x1 input"),
    (["--filters", "0"], 2, "--filters must be >= 1"),
    (["--padding", "-1"], 2, "--padding must be >= 0"),
])
def test_explain_model_impossible_and_bad_values(capsys, argv, exit_code, text):
    code, out = explain(capsys, "model", *argv)
    assert code == exit_code and text in out, out


def test_receptive_field_step_matches_hand_arithmetic():
    # 3x3 conv on a field of 6 with jump 2 (after a 2x2 pool): 6 + 2*2 = 10, jump stays 2
    assert receptive_field_step((6, 6), (2, 2), (3, 3), (1, 1), (1, 1)) == ((10, 10), (2, 2))
    # dilation 2 makes a 3x3 kernel span 5; stride 2 doubles the jump
    assert receptive_field_step((1, 1), (1, 1), (3, 3), (2, 1), (2, 1)) == ((5, 3), (2, 1))


def test_describe_layers_names_and_slides():
    model = tiny_vgg(in_channels=1, num_classes=3, image_size=12, filters=2, padding=1)
    described = describe_layers(model, (1, 12, 12))
    assert [d.explainer_name for d in described] == explainer_names([layer for _, layer in leaf_layers(model)])
    assert all(d.symmetric for d in described)
    assert described[-1].output_shape == (1, 3) and described[-1].receptive_field is None
