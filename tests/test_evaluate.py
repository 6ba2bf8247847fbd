"""numbacnn evaluate's per-class results and pictures, the report's test-set card,
the diverging-loss warning and --keep-best (issue 21, item 7), on small generated data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from numbacnn.cli import main
from numbacnn.train import CHECKPOINT_NAME, TrainConfig, load_checkpoint, train
from numbacnn.train.loop import diverging_warning
from test_data import write_fake_idx_dataset

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    data = write_fake_idx_dataset(tmp_path_factory.mktemp("data") / "mnist", n_train=60, n_test=30, size=12)
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(dataset="mnist", data_dir=str(data), epochs=2, batch_size=8, lr=0.05, filters=4,
                         val_fraction=0.25, device="cpu", seed=1)
    train(config, out=out, progress=False, log=None, keep_best=True)
    return out, data


def test_per_class_accuracy_and_confusion_matrix(run, capsys):
    out, data = run
    assert main(["evaluate", str(out), "--device", "cpu", "--json", "--out", str(out / "eval")]) == 0
    result = json.loads(capsys.readouterr().out)
    matrix = np.array(result["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == result["images"] == 30
    assert np.trace(matrix) / matrix.sum() == pytest.approx(result["accuracy"], abs=1e-12)
    for t, name in enumerate(result["classes"]):
        expected = matrix[t, t] / matrix[t].sum()
        assert result["per_class_accuracy"][name] == pytest.approx(expected, abs=1e-12)
    # the matrix against predictions made here, one image at a time, counted by hand
    ckpt = load_checkpoint(out / CHECKPOINT_NAME)
    model = ckpt.build_model("cpu").eval()
    from numbacnn.data import load_dataset

    test = load_dataset("mnist", str(data)).test
    counted = np.zeros((10, 10), dtype=np.int64)
    for image, label in zip(test.images, test.labels):
        logits = model(ckpt.normalizer(image[None], np.dtype("float32")))
        counted[int(label), int(np.argmax(logits[0]))] += 1
    np.testing.assert_array_equal(counted, matrix)


def test_evaluate_prints_per_class_lines_and_writes_the_pictures(run, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("PIL")
    out, _ = run
    assert main(["evaluate", str(out / CHECKPOINT_NAME), "--device", "cpu", "--out", str(tmp_path / "e"),
                 "--export-images", "12"]) == 0
    text = capsys.readouterr().out
    assert "per class:" in text and "most often mistaken for" in text
    assert sum(line.startswith("  ") and "%" in line for line in text.splitlines()) >= 9
    assert (tmp_path / "e" / "confusion.png").read_bytes()[:8] == PNG
    if "misclassified test images" in text:
        assert (tmp_path / "e" / "misclassified.png").read_bytes()[:8] == PNG
    exported = sorted((tmp_path / "e" / "images").glob("*/*.png"))
    assert len(exported) == 12 and exported[0].read_bytes()[:8] == PNG
    assert f"wrote 12 test images to {tmp_path / 'e' / 'images'}" in text


def test_evaluate_default_folder_is_beside_the_checkpoint_and_bad_options_are_one_line(run, capsys):
    pytest.importorskip("matplotlib")
    out, _ = run
    assert main(["evaluate", str(out), "--device", "cpu"]) == 0
    assert (out / "evaluation" / "confusion.png").exists()
    capsys.readouterr()
    assert main(["evaluate", str(out), "--export-images", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("numbacnn evaluate: error: export images must be")


def test_report_shows_the_evaluation_pictures(run, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("PIL")
    from numbacnn.report import write_report

    out, _ = run
    assert main(["evaluate", str(out), "--device", "cpu"]) == 0
    ckpt = load_checkpoint(out / CHECKPOINT_NAME)
    image = np.zeros((1, 12, 12), np.uint8)
    with_test = write_report(ckpt.build_model("cpu"), image, tmp_path / "a", ckpt.classes,
                             normalizer=ckpt.normalizer, evaluation=out / "evaluation")
    page = with_test.index.read_text()
    assert 'data-role="test-set"' in page and 'data-picture="confusion"' in page
    assert (tmp_path / "a" / "images" / "test_confusion.png").exists()
    without = write_report(ckpt.build_model("cpu"), image, tmp_path / "b", ckpt.classes, normalizer=ckpt.normalizer,
                           evaluation=tmp_path / "nothing")
    assert "Run <code>numbacnn evaluate CHECKPOINT</code>" in without.index.read_text()


def test_keep_best_is_the_epoch_with_the_best_validation_accuracy(run):
    out, _ = run
    best = load_checkpoint(out / "best.npz")
    history = best.meta["history"]
    accuracies = [h["val_accuracy"] for h in load_checkpoint(out / CHECKPOINT_NAME).meta["history"]]
    assert best.epoch == int(np.argmax(accuracies)) + 1 and len(history) == best.epoch


def test_keep_best_without_a_validation_split_is_refused(tmp_path, capsys):
    assert main(["train", "--keep-best", "--val-fraction", "0", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--keep-best" in err[0] and not (tmp_path / "o").exists()


def test_a_finite_loss_far_above_chance_warns():
    """--lr 1000 trained to chance with loss 6e11 and exit 0, no word said."""
    assert diverging_warning(6e11, 10, 1000.0).startswith("the training loss 6e+11 is more than 10x")
    assert "learning rate 1000" in diverging_warning(6e11, 10, 1000.0)
    assert diverging_warning(2.3, 10, 0.01) == "" and diverging_warning(22.0, 10, 0.01) == ""
    assert diverging_warning(23.1, 10, 0.01) != ""  # 10 * ln 10 = 23.03
    assert diverging_warning(float("nan"), 10, 0.01) == ""  # NaN stops training elsewhere


def test_fit_logs_the_warning_and_records_it(run, tmp_path, monkeypatch):
    """fit's path, made certain: with the factor lowered to 0.5, any loss above
    0.5 ln 10 = 1.15 counts as diverging (a real lr that stays finite but huge
    depends on the data)."""
    import numbacnn.train.loop as loop

    _, data = run
    monkeypatch.setattr(loop, "DIVERGING_LOSS_FACTOR", 0.5)
    lines = []
    config = TrainConfig(dataset="mnist", data_dir=str(data), epochs=1, batch_size=8, lr=0.05,
                         filters=4, val_fraction=0.25, device="cpu", seed=1)
    metrics = train(config, out=tmp_path / "o", progress=False, log=lines.append)
    record = metrics["history"][0]
    assert record["train_loss"] > 0.5 * np.log(10)
    assert record["warning"].startswith("the training loss") and f"warning: {record['warning']}" in lines


def test_a_text_file_as_checkpoint_is_refused_without_numpys_pickle_advice(tmp_path, capsys):
    """`numbacnn evaluate README.md` passed on NumPy's 'allow_pickle' advice."""
    text = tmp_path / "README.md"
    text.write_text("# numbacnn\n")
    assert main(["evaluate", str(text)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an .npz (zip) archive" in err[0] and "pickle" not in err[0]
