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
      "the last input row (row 6, counting from 0) and the last padding column", "--stride 2,1: output 3x6"]),
    (["--input", "7x6", "--kernel", "3", "--stride", "2,1"], 0, ["output 3x4", "verdict: symmetric"]),
    # dilation widens the kernel; with stride 2 its holes fall on the same rows every time
    (["--input", "9", "--kernel", "3", "--dilation", "2", "--stride", "2"], 0,
     ["dilation 2", "(9 + 2*0 - 5) / 2 + 1 = 3", "verdict: NOT symmetric", "4 input rows and 4 input columns never read",
      "--stride 1: output 5x5"]),
    (["--input", "9", "--kernel", "3", "--dilation", "2"], 0, ["output 5x5", "verdict: symmetric"]),
    # a stride longer than the kernel skips rows (issue 21: was called symmetric)
    (["--input", "7", "--kernel", "3", "--stride", "4"], 0,
     ["verdict: NOT symmetric", "1 input row and 1 input column never read", "stride 4 > kernel 3",
      "--stride 2: output 3x3"]),
    # impossible: kernel larger than the padded input
    (["--input", "3", "--kernel", "5"], 1, ["output -1x-1", "verdict: IMPOSSIBLE", "larger than the padded input"]),
    # bad arguments
    (["--input", "0", "--kernel", "3"], 2,
     ["numbacnn explain conv: error: input must be >= 1 on both axes, got 0, --input (use --input 1 or more)"]),
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


@pytest.mark.parametrize("png", ["/proc/slide.png", "/proc/self/nowhere/slide.png"])
def test_explain_conv_checks_the_png_destination_before_printing(capsys, png):
    """/proc passes a permission check (root may write anywhere) but takes no new file:
    the destination is proved with a probe file before the explanation is printed."""
    code = main(["explain", "conv", "--input", "7", "--kernel", "3", "--png", png])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("numbacnn explain conv: error: cannot write in /proc")
    assert err[0].endswith(f", --png {png} (choose a writable folder)")


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


def test_explain_model_stride_of_each_blocks_first_conv(capsys):
    """--stride as numbacnn train's: each block's first conv. 28x28, 3x3, padding 1, stride 2
    skips only the last padding row/column: built (exit 0), flagged, and said to be padding only."""
    code, out = explain(capsys, "model", "--image-size", "28", "--padding", "1", "--stride", "2",
                        "--in-channels", "1")
    assert code == 0, out
    rows = table_rows(out)
    assert "(1, 10, 14, 14)" in rows["conv_1_1"] and "(1, 10, 14, 14)" in rows["conv_1_2"]
    assert "(1, 10, 4, 4)" in rows["conv_2_1"] and "(1, 10, 2, 2)" in rows["max_pool_2"]
    assert "ASYMMETRIC" in rows["conv_1_1"] and "ASYMMETRIC" not in rows["conv_1_2"]
    assert "they are zero padding, so every input pixel is still read" in out
    assert "silently dropped" not in out and "tiny_vgg refuses" not in out
    assert "skip only zero padding" in out
    # padding 0: stride 2 drops real input rows (64 -> 31 at conv_1_1, 14 -> 6 at conv_2_1): refused
    code, out = explain(capsys, "model", "--image-size", "64", "--stride", "2")
    assert code == 1, out
    assert "so those pixels are silently dropped" in out and "tiny_vgg refuses this combination" in out


@pytest.mark.parametrize("argv, exit_code, text", [
    (["--stride", "0"], 2, "numbacnn explain model: error: stride must be >= 1, got 0, --stride"),
    (["--image-size", "8"], 1, "impossible: tiny_vgg(image_size=8"),
    # max_pool_1 also slides asymmetrically here, but what makes it impossible is conv_2_1's 1x1 input
    (["--image-size", "7"], 1, "layer conv_2_1 gets a 1x1 input"),
    (["--filters", "0"], 2, "numbacnn explain model: error: filters must be >= 1, got 0, --filters "
                            "(use --filters 1 or more)"),
    (["--padding", "-1"], 2, "padding must be >= 0, got -1, --padding"),
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


# --------------------------------------------------------------------------- #
# issue 9, class 7: huge values answer at once, pictures and folders are checked
# first, every error is one line naming the option or file, inputs are untouched
# --------------------------------------------------------------------------- #

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from numbacnn import shapes  # noqa: E402

HUGE = "1000000000"


def run_cli(*argv: str, cwd: Path | None = None, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    """``numbacnn argv...`` in a fresh process, as a user runs it; (result, seconds)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "numbacnn.cli", *argv], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)
    return done, time.perf_counter() - start


def assert_one_error_line(done: subprocess.CompletedProcess, command: str, *names: str) -> str:
    """rc 2 and exactly one stderr line in the project's format, naming each of ``names``."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"numbacnn explain {command}: error: ") and lines[0].endswith(")"), lines[0]
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def _old_axis_fixes(in_size, kernel, stride, padding, dilation, search=4):
    """The scan explain_conv used before (O(padding + stride)), each candidate put
    through the lesson's three checks by listing every tap (issue 21: exact slides
    that skipped rows or made windows of only padding were suggested): the
    reference for small values."""
    from tests.test_explain_rule import brute_sound

    paddings = sorted((p for p in range(0, padding + search * stride + 1)
                       if brute_sound(in_size, kernel, stride, p, dilation)),
                      key=lambda p: (abs(p - padding), p))
    strides = sorted((s for s in range(1, max(stride + search, 2 * stride) + 1)
                      if brute_sound(in_size, kernel, s, padding, dilation)),
                     key=lambda s: (abs(s - stride), -s))
    return paddings[:3], strides[:3]


def test_suggestions_equal_the_exhaustive_scan_on_small_values():
    checked = 0
    for in_size in range(1, 26):
        for kernel in range(1, 7):
            for stride in range(1, 11):
                for padding in range(0, 6):
                    for dilation in (1, 2, 3):
                        expected = _old_axis_fixes(in_size, kernel, stride, padding, dilation)
                        assert shapes._axis_fixes(in_size, kernel, stride, padding, dilation) == expected, \
                            (in_size, kernel, stride, padding, dilation)
                        checked += 1
    assert checked == 25 * 6 * 10 * 6 * 3


@pytest.mark.parametrize("values", [dict(input_size=7, kernel_size=3, stride=10**9),
                                    dict(input_size=7, kernel_size=3, padding=10**9),
                                    dict(input_size=10**9, kernel_size=3, stride=10**9, padding=10**9),
                                    dict(input_size=10**18, kernel_size=5, stride=7, padding=10**18, dilation=3)])
def test_explain_conv_is_instant_for_huge_values_and_its_suggestions_are_symmetric(values):
    start = time.perf_counter()
    e = shapes.explain_conv(**values)
    assert time.perf_counter() - start < 0.5
    for padding in e.suggested_paddings:
        assert shapes.explain_conv(e.input_size, e.kernel_size, e.stride, padding, e.dilation).symmetric
    for stride in e.suggested_strides:
        assert shapes.explain_conv(e.input_size, e.kernel_size, stride, e.padding, e.dilation).symmetric


@pytest.mark.parametrize("argv, expected", [
    (["conv", "--input", "7", "--kernel", "3", "--stride", HUGE],
     ["(7 + 2*0 - 3) / 1000000000 + 1 = 1  (floor of 1 + 4/1000000000)", "--stride 2: output 3x3"]),
    # padding wider than the kernel: windows of only zeros (issue 21), the fix is a small padding
    (["conv", "--input", "7", "--kernel", "3", "--padding", HUGE], ["output 2000000005x2000000005",
                                                                    "verdict: NOT symmetric", "only zero padding",
                                                                    "--padding 1: output 7x7"]),
    (["conv", "--input", HUGE, "--kernel", "3", "--stride", HUGE, "--padding", HUGE], ["verdict: NOT symmetric"]),
])
def test_explain_conv_cli_answers_huge_values_at_once(argv, expected):
    done, seconds = run_cli("explain", *argv)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert seconds < 20  # a fresh interpreter importing numbacnn; the loop it replaced took minutes
    for text in expected:
        assert text in done.stdout, done.stdout


@pytest.mark.parametrize("argv, names", [
    (["--filters", HUGE], ["--filters 1000000000", "parameters", "of memory available"]),
    (["--padding", HUGE], ["--padding 1000000000", "parameters"]),
    (["--image-size", HUGE], ["--image-size 1000000000"]),
    (["--num-classes", "100000000000"], ["--num-classes 100000000000"]),
])
def test_explain_model_refuses_what_cannot_be_allocated_in_one_line(argv, names):
    done, seconds = run_cli("explain", "model", *argv)
    assert_one_error_line(done, "model", *names)
    assert done.stdout == "" and seconds < 20


def test_explain_model_parameter_count_matches_the_built_model():
    from numbacnn.models import tiny_vgg_parameter_count

    for settings in [{}, dict(in_channels=1, image_size=28, padding=1), dict(filters=7, kernel_size=5, padding=2,
                                                                           num_classes=3)]:
        assert tiny_vgg_parameter_count(**settings) == tiny_vgg(**settings, strict=False).num_parameters()


@pytest.mark.parametrize("argv, names", [
    (["--stride", "0"], ["stride must be >= 1", "--stride"]),
    (["--padding", "-1"], ["padding must be >= 0", "--padding"]),
    (["--dilation", "1,0"], ["dilation must be >= 1 on both axes, got 1,0", "--dilation"]),
])
def test_explain_conv_bad_values_name_the_option(argv, names):
    done, _ = run_cli("explain", "conv", "--input", "7", "--kernel", "3", *argv)
    assert_one_error_line(done, "conv", *names)
    assert done.stdout == ""


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("png, names", [
    ("slide.txt", ["the picture is a PNG, not a .txt file", "--png slide.txt"]),
    ("notes.md/slide.png", ["notes.md is a file", "--png notes.md/slide.png"]),
])
def test_explain_conv_png_refusals_are_one_line_and_write_nothing(tmp_path, png, names):
    (tmp_path / "notes.md").write_text("keep me")
    before = _files(tmp_path)
    done, _ = run_cli("explain", "conv", "--input", "7", "--kernel", "3", "--png", png, cwd=tmp_path)
    assert_one_error_line(done, "conv", *names)
    assert done.stdout == ""  # checked before the explanation is printed
    assert _files(tmp_path) == before


def test_explain_conv_png_too_large_to_draw_is_refused_before_allocating(tmp_path):
    done, seconds = run_cli("explain", "conv", "--input", HUGE, "--kernel", "3", "--png", "big.png", cwd=tmp_path)
    assert_one_error_line(done, "conv", "1000000000x1000000000 cells", "--png big.png", "at most 256")
    assert list(tmp_path.iterdir()) == [] and seconds < 20


@pytest.mark.parametrize("png, written", [
    ("pictures", "pictures/conv_slide.png"),          # an existing folder: a file inside it
    ("new_folder/", "new_folder/conv_slide.png"),     # a path ending in a separator: a folder
    ("slide", "slide.png"),                           # no suffix: .png added, and said
    ("Slide.PNG", "Slide.PNG"),
])
def test_explain_conv_png_says_the_file_it_really_wrote(tmp_path, png, written):
    pytest.importorskip("matplotlib")
    (tmp_path / "pictures").mkdir()
    done, _ = run_cli("explain", "conv", "--input", "7", "--kernel", "3", "--stride", "3", "--png", png,
                      cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == f"wrote {written}"
    assert (tmp_path / written).read_bytes().startswith(b"\x89PNG")
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == [written]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_explain_conv_png_in_a_read_only_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        done, _ = run_cli("explain", "conv", "--input", "7", "--kernel", "3", "--png", "locked/x.png", cwd=tmp_path)
    finally:
        locked.chmod(0o755)
    assert_one_error_line(done, "conv", "permission denied", "--png locked/x.png")


def test_explain_debug_shows_the_traceback_instead_of_the_line():
    done, _ = run_cli("explain", "conv", "--input", "7", "--kernel", "3", "--stride", "0", "--debug")
    assert done.returncode != 0
    assert "Traceback (most recent call last)" in done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith("stride must be >= 1 on both axes, got 0, --stride "
                                                          "(use --stride 1 or more)")
