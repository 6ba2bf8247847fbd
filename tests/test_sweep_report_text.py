"""The sweep report's text and picture (issue 21, item 8): no message cut mid-word,
one paired trial is not called "within seed noise", imagefolder-only settings are
not listed for Fashion-MNIST, and sweep.png's integer axes have integer ticks."""

from __future__ import annotations

import pytest

from numbacnn.sweep.report import _clip, lessons, plot, summary_markdown
from numbacnn.train import TrainConfig


def record(kernel, seed, accuracy, stride=1, status="done", message=""):
    config = dict(TrainConfig().__dict__, kernel_size=kernel, seed=seed, stride=stride)
    return {"trial": f"{kernel}-{seed}-{stride}", "values": {"kernel_size": kernel, "seed": seed, "stride": stride},
            "status": status, "test_accuracy": accuracy, "seconds_per_epoch": 1.0, "config": config,
            "message": message}


def test_clip_cuts_at_a_word_and_says_so():
    text = "kernel 7x7 (dilation (1, 1)) is larger than the padded input 4x4: output would be -2x-2"
    clipped = _clip(text, 60)
    assert len(clipped) <= 60 and clipped.endswith("…") and text.startswith(clipped[:-1])
    assert text[len(clipped) - 1] == " "  # the cut falls before a space, not inside a word
    assert _clip("short", 60) == "short"


def test_one_paired_trial_is_too_few_to_judge():
    records = [record(3, 0, 0.90), record(5, 0, 0.85)]
    [kernel_lesson, *_] = lessons(records)
    assert "one paired trial only, too few to judge" in kernel_lesson
    assert "within seed noise" not in kernel_lesson


def test_imagefolder_settings_are_not_listed_for_fashion_mnist():
    records = [record(3, s, 0.9) for s in (0, 1)] + [record(5, s, 0.8) for s in (0, 1)]
    fixed = [line for line in summary_markdown(records).splitlines() if line.startswith("Fixed settings")]
    assert fixed and "image_size" not in fixed[0] and "channels" not in fixed[0] and "padding=1" in fixed[0]


def test_untrainable_message_in_the_summary_is_not_cut_mid_word():
    long = "tiny_vgg(image_size=28, kernel_size=7, padding=0): layer conv_2_2 gets a 2x2 input: " + "x" * 30 + \
           " kernel 7x7 (dilation (1, 1)) is larger than the padded input 2x2: output would be -4x-4"
    records = [record(3, 0, 0.9), record(7, 0, 0.0, status="impossible", message=long)]
    text = summary_markdown(records)
    for line in text.splitlines():
        if "impossible" in line and "…" in line:
            cut = line.split("…")[0]
            assert cut.endswith(tuple("abcdefghijklmnopqrstuvwxyz0123456789)x")) and not cut.endswith(" th")


def test_sweep_png_ticks_are_the_values_tried(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import numbacnn.viz as viz

    seen = {}

    def keep(fig, path, dpi=100):
        seen["ticks"] = [list(ax.get_xticks()) for ax in fig.axes[:2]]

    monkeypatch.setattr(viz, "save_figure", keep)
    records = [record(k, s, 0.8 + 0.01 * k, stride=st) for k in (3, 5, 7) for s in (0, 1) for st in (1, 2)]
    plot(records, tmp_path / "sweep.png")
    assert seen["ticks"][0] == [3, 5, 7] and seen["ticks"][1] == [1, 2]
