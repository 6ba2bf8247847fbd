"""A sweep's report: ``results.csv``, ``summary.md`` and ``sweep.png`` from ``results.jsonl``.

The summary has one table of configurations (mean ± std test accuracy over
seeds, parameters, FLOPs, seconds per epoch), one table per hyperparameter, and
CNN Explainer's hyperparameter lessons, each stated with the measured figures.
Lessons are judged on *paired* trials, which differ only in the one
hyperparameter (same seed, same everything else), so a difference is not an
artefact of which other settings happened to be trainable; a difference smaller
than twice its standard error over the pairs is called seed noise, and where the
data go against a lesson the summary says so.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from numbacnn.files import atomic_write_text
from numbacnn.sweep.records import RESULTS_NAME, load_results, read_sweep_grid
from numbacnn.train.outdir import FolderLock, clean_stale_temp_files

CSV_NAME = "results.csv"
SUMMARY_NAME = "summary.md"
PLOT_NAME = "sweep.png"
LESSON_FIELDS = ("kernel_size", "padding", "stride")
CSV_METRICS = ("test_accuracy", "val_accuracy", "test_loss", "val_loss", "train_loss", "parameters", "flops",
               "seconds_per_epoch", "seconds", "numba_threads", "slides", "feature_sizes", "worker", "message")


def latest_records(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One record per trial: its last final record, else its last ``failed`` one; file order kept."""
    chosen: dict[str, dict[str, Any]] = {}
    for record in records:
        previous = chosen.get(record["trial"])
        if previous is None or record.get("status") != "failed" or previous.get("status") == "failed":
            chosen[record["trial"]] = dict(record)
    return list(chosen.values())


def varied_fields(records: Sequence[Mapping[str, Any]], grid: Sequence[str] = ()) -> list[str]:
    """Config fields that take more than one value across the records, grid order first, seed excluded."""
    names = list(grid) + sorted({k for r in records for k in r.get("config", {})} - set(grid))
    varied = []
    for name in names:
        values = {json.dumps(r.get("config", {}).get(name)) for r in records}
        if len(values) > 1 and name != "seed":
            varied.append(name)
    return varied


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def _pct(mean: float, std: float | None = None) -> str:
    return f"{100 * mean:.2f}%" + (f" ± {100 * std:.2f}" if std is not None else "")


def _key(record: Mapping[str, Any], names: Sequence[str]) -> tuple:
    return tuple(record["config"].get(name) for name in names)


def group(records: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[dict[str, Any]]:
    """Records grouped by the values of ``names`` (over seeds and anything else), sorted.

    Returns
    -------
    list of dict
        ``values`` (dict), ``trials``, ``trained``, ``statuses`` (status -> count),
        and over the trained trials: ``accuracy`` (mean, std), ``parameters``,
        ``flops``, ``seconds_per_epoch`` (means), ``feature_sizes`` (of the first
        trial that has them), ``message`` (of the first untrained trial).
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for record in records:
        groups.setdefault(_key(record, names), []).append(record)
    rows = []
    for key in sorted(groups, key=lambda k: tuple((v is None, str(type(v)), v) for v in k)):
        members = groups[key]
        trained = [r for r in members if r["status"] == "done"]
        statuses: dict[str, int] = {}
        for r in members:
            statuses[r["status"]] = statuses.get(r["status"], 0) + 1
        row: dict[str, Any] = {"values": dict(zip(names, key)), "trials": len(members), "trained": len(trained),
                               "statuses": statuses}
        described = [r for r in members if r.get("parameters") is not None]
        if described:
            row["parameters"] = _mean_std([r["parameters"] for r in described])[0]
            row["flops"] = _mean_std([r["flops"] for r in described])[0]
            row["feature_sizes"] = described[0].get("feature_sizes")
        if trained:
            row["accuracy"] = _mean_std([r["test_accuracy"] for r in trained])
            row["seconds_per_epoch"] = _mean_std([r["seconds_per_epoch"] for r in trained])[0]
        untrained = [r for r in members if r["status"] != "done"]
        if untrained:
            row["message"] = untrained[0].get("message", "")
        rows.append(row)
    return rows


def paired_differences(records: Sequence[Mapping[str, Any]], name: str, a: Any, b: Any) -> list[float]:
    """test accuracy(name=a) - test accuracy(name=b) over pairs of trained trials whose
    configurations differ only in ``name``."""
    by_rest: dict[str, dict[Any, float]] = {}
    for r in records:
        if r["status"] != "done":
            continue
        rest = json.dumps({k: v for k, v in r["config"].items() if k != name}, sort_keys=True)
        by_rest.setdefault(rest, {})[r["config"][name]] = r["test_accuracy"]
    return [accs[a] - accs[b] for accs in by_rest.values() if a in accs and b in accs]


def compare(differences: Sequence[float]) -> tuple[str, str]:
    """(verdict, figures) for paired differences: 'higher', 'lower' or 'noise' (|mean| < 2 standard errors)."""
    mean, std = _mean_std(differences)
    error = std / math.sqrt(len(differences)) if len(differences) > 1 else float("inf")
    verdict = "noise" if abs(mean) < 2 * error else ("higher" if mean > 0 else "lower")
    return verdict, (f"{100 * mean:+.2f} points on average over {len(differences)} paired trial(s) "
                     f"(std {100 * std:.2f}, standard error {100 * error:.2f})")


def _clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary, with an
    ellipsis when cut (messages were cut mid-word: "larger than th")."""
    if len(text) <= limit:
        return text
    cut = text[:limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:(")
    return cut + "…"


# Settings that only mean something for the image-folder dataset; the built-in
# datasets have fixed sizes and channels, so the summary does not list them.
IMAGEFOLDER_ONLY = ("image_size", "channels")


def md_text(value: Any) -> str:
    """``value`` as inert Markdown text on one line: HTML markup escaped (a failed trial's
    message may hold ``<img onerror=...>``, which Markdown viewers would render), ``|``
    escaped so it cannot add a table column, newlines and other control characters
    made spaces."""
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", str(value))
    return html.escape(text, quote=False).replace("|", "\\|")


def _fmt_int(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


def _row_status(row: Mapping[str, Any]) -> str:
    statuses = dict(row["statuses"])
    statuses.pop("done", None)
    text = ", ".join(f"{n} {s}" for s, n in statuses.items())
    if statuses and row.get("message"):
        text += f": {_clip(row['message'].split('. ')[0], 140)}"
    return md_text(text)


def _table(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[str]:
    header = list(names) + ["trained", "test accuracy (mean ± std)", "parameters", "FLOPs/image", "s/epoch",
                            "feature map", "not trained"]
    lines = ["| " + " | ".join(md_text(h) for h in header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        accuracy = _pct(*row["accuracy"]) if "accuracy" in row else "–"
        spe = f"{row['seconds_per_epoch']:.1f}" if "seconds_per_epoch" in row else "–"
        sizes = row.get("feature_sizes")
        cells = [md_text(row["values"][n]) for n in names] + [
            f"{row['trained']}/{row['trials']}", accuracy, _fmt_int(row.get("parameters")),
            _fmt_int(row.get("flops")), spe, f"{sizes[-1]}x{sizes[-1]}" if sizes else "", _row_status(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _ordered_values(records: Sequence[Mapping[str, Any]], name: str) -> list[Any]:
    return sorted({r["config"][name] for r in records if name in r["config"]})


def lessons(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """CNN Explainer's hyperparameter lessons as Markdown paragraphs with the measured figures."""
    text = []
    untrainable = {s: sum(r["status"] == s for r in records) for s in ("impossible", "asymmetric")}

    def pairs_text(name: str, a: Any, b: Any, lesson_sign: str) -> str | None:
        differences = paired_differences(records, name, a, b)
        if not differences:
            return None
        verdict, figures = compare(differences)
        if len(differences) < 2:
            # one pair has no spread to compare with: "within seed noise" would be a guess
            judgement = "one paired trial only, too few to judge (add seeds to the grid)"
        elif verdict == "noise":
            judgement = "within seed noise: the data neither confirm nor contradict the lesson here"
        elif verdict == lesson_sign:
            judgement = "agrees with the lesson"
        else:
            judgement = "**the data disagree with the lesson here**"
        return f"{name} {a} vs {b}: {figures}; {judgement}."

    kernels = _ordered_values(records, "kernel_size")
    if len(kernels) > 1:
        lines = [pairs_text("kernel_size", small, large, "higher") for small, large in zip(kernels, kernels[1:])]
        lines = [line for line in lines if line]
        sizes = group(records, ["kernel_size"])
        cost = "; ".join(f"k={row['values']['kernel_size']}: {_fmt_int(row.get('parameters'))} parameters, "
                         f"{_fmt_int(row.get('flops'))} FLOPs/image" for row in sizes if row.get("parameters"))
        text.append("**Smaller kernels usually do better** (CNN Explainer). Test accuracy of the smaller minus "
                    "the larger kernel, same padding, stride and seed: "
                    + (" ".join(lines) if lines else "no pair of trained trials differs only in kernel size, "
                       "so the data cannot judge it.") + (f" Cost: {cost}." if cost else ""))
    paddings = _ordered_values(records, "padding")
    first_stride = (_ordered_values(records, "stride") or [1])[0]  # the borders at one stride, not a mix
    if len(paddings) > 1:
        lines = [pairs_text("padding", large, small, "higher") for small, large in zip(paddings, paddings[1:])]
        lines = [line for line in lines if line]
        maps = "; ".join(f"padding {row['values']['padding']}: feature maps "
                         f"{' -> '.join(str(s) for s in row['feature_sizes'])}"
                         for row in group([r for r in records if r.get("feature_sizes")
                                           and r["config"].get("kernel_size") == kernels[0]
                                           and r["config"].get("stride", 1) == first_stride], ["padding"])
                         if row.get("feature_sizes")) if kernels else ""
        text.append("**Padding preserves the borders and helps accuracy.** "
                    + (f"Borders ({kernels[0]}x{kernels[0]} kernels, stride {first_stride}): {maps}. " if maps else "")
                    + "Test accuracy of more minus less padding, same kernel, stride and seed: "
                    + (" ".join(lines) if lines else "no pair of trained trials differs only in padding."))
    strides = _ordered_values(records, "stride")
    if len(strides) > 1:
        lines = [pairs_text("stride", small, large, "higher") for small, large in zip(strides, strides[1:])]
        lines = [line for line in lines if line]
        # the shrinking, shown on the first configuration trained at every stride (else over all)
        trained_at: dict[str, set] = {}
        for r in records:
            if r["status"] == "done":
                rest = json.dumps({k: v for k, v in r["config"].items() if k not in ("stride", "seed")},
                                  sort_keys=True)
                trained_at.setdefault(rest, set()).add(r["config"]["stride"])
        paired = next((rest for rest, seen in trained_at.items() if len(seen) == len(strides)), None)
        shown = records if paired is None else [
            r for r in records if json.dumps({k: v for k, v in r["config"].items() if k not in ("stride", "seed")},
                                             sort_keys=True) == paired]
        where = "" if paired is None else "kernel {kernel_size}, padding {padding}: ".format(**json.loads(paired))
        trainable = "; ".join(f"stride {row['values']['stride']}: {row['trained']}/{row['trials']} trainable"
                              for row in group(records, ["stride"]))
        rows = group(shown, ["stride"])
        shrink = where + "; ".join(
            f"stride {row['values']['stride']}"
            + (f": feature maps {' -> '.join(str(s) for s in row['feature_sizes'])}, "
               f"{_fmt_int(row.get('flops'))} FLOPs/image, {_fmt_int(row.get('parameters'))} parameters"
               + (f", {row['seconds_per_epoch']:.1f} s/epoch" if "seconds_per_epoch" in row else "")
               if row.get("feature_sizes") else "")
            + (f" (untrainable: {_clip(row['message'].split('. ')[0], 200)})" if row.get("message") and not row["trained"]
               else "")
            for row in rows)
        text.append("**A larger stride extracts less and shrinks the layers faster.** " + shrink
                    + f" (over the grid: {trainable}). Test accuracy of the smaller minus the larger stride, same "
                      "kernel, padding and seed: "
                    + (" ".join(lines) if lines else
                       "no pair of trained trials differs only in stride, so its effect on accuracy is not "
                       "measured here; that every larger-stride configuration is untrainable on these images is "
                       "itself the shrinking the lesson describes."))
    if untrainable["impossible"] or untrainable["asymmetric"]:
        text.append(f"**Kernels must fit and slide symmetrically.** {untrainable['impossible']} trial(s) were "
                    f"impossible (a layer's output below 1x1) and {untrainable['asymmetric']} refused because a "
                    f"kernel would drop border pixels (see the tables' last column).")
    trained = [r for r in records if r["status"] == "done"]
    if trained:
        best = max(trained, key=lambda r: r["test_accuracy"])
        fastest = min(trained, key=lambda r: r["seconds_per_epoch"])
        text.append(f"**Accuracy vs time.** Best trial: {best['values']} at {_pct(best['test_accuracy'])}, "
                    f"{best['seconds_per_epoch']:.1f} s/epoch; fastest: {fastest['values']} at "
                    f"{fastest['seconds_per_epoch']:.1f} s/epoch, {_pct(fastest['test_accuracy'])}.")
    return text


def summary_markdown(records: Sequence[Mapping[str, Any]], grid: Sequence[str] = (),
                     meta: Mapping[str, Any] | None = None) -> str:
    """The whole ``summary.md`` text."""
    names = varied_fields(records, grid)
    statuses: dict[str, int] = {}
    for r in records:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    seeds = _ordered_values(records, "seed")
    lines = ["# Sweep summary", "",
             f"{len(records)} trials ({', '.join(f'{n} {s}' for s, n in statuses.items())}); "
             f"seeds {', '.join(str(s) for s in seeds)}; mean ± std over seeds (sample std); FLOPs are one "
             f"image's forward pass (multiply-add = 2); s/epoch is the mean training epoch time of the trials "
             f"(they ran concurrently, so it depends on the load).", ""]
    if records:
        base = records[0]["config"]
        fixed = {k: v for k, v in base.items() if k not in names and k != "seed"
                 and not (k in IMAGEFOLDER_ONLY and base.get("dataset") != "imagefolder")}
        lines += ["Fixed settings: " + md_text(", ".join(f"{k}={v}" for k, v in fixed.items())), ""]
        versions = records[0].get("versions")
        if versions:
            lines += ["Versions: " + md_text(", ".join(f"{k} {v}" for k, v in versions.items())), ""]
    if meta:
        lines += [f"Run: {md_text(meta)}", ""]
    lines += ["## Configurations", ""] + _table(group(records, names), names) + [""]
    for name in names:
        lines += [f"## By {name}", "", "(over every other setting and seed that could be trained)", ""]
        lines += _table(group(records, [name]), [name]) + [""]
    lesson_text = lessons(records)
    if lesson_text:
        lines += ["## CNN Explainer's lessons, measured", ""]
        for paragraph in lesson_text:
            lines += [paragraph, ""]
    failed = [r for r in records if r["status"] == "failed"]
    if failed:
        lines += ["## Failed trials (run again on a re-run)", ""]
        lines += [f"- {md_text(r['values'])}: {md_text(_clip(r.get('message', ''), 300))}" for r in failed] + [""]
    return "\n".join(lines)


def write_csv(records: Sequence[Mapping[str, Any]], path: str | os.PathLike, names: Sequence[str]) -> None:
    """One row per trial: id, status, the varied fields and seed, metrics."""
    columns = ["trial", "status"] + list(names) + ["seed"] + list(CSV_METRICS)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for r in records:
        row = [r["trial"], r["status"]] + [r["config"].get(n) for n in list(names) + ["seed"]]
        for metric in CSV_METRICS:
            value = r.get(metric)
            row.append("x".join(str(v) for v in value) if isinstance(value, list) else value)
        writer.writerow(["" if v is None else v for v in row])
    atomic_write_text(path, buffer.getvalue())  # never through a symlink, never half a file


def plot(records: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """sweep.png: accuracy vs kernel size per padding (and stride), accuracy vs stride,
    accuracy vs seconds per epoch; mean ± std over seeds. Needs matplotlib."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4.5), layout="constrained")
    axes = fig.subplots(1, 3)
    trained = [r for r in records if r["status"] == "done"]

    def lines(ax, x_name: str, series: Sequence[str]) -> None:
        for row_key in sorted({_key(r, series) for r in trained}, key=str):
            members = [r for r in trained if _key(r, series) == row_key]
            xs = _ordered_values(members, x_name)
            stats = [_mean_std([100 * r["test_accuracy"] for r in members if r["config"][x_name] == x]) for x in xs]
            label = ", ".join(f"{n}={v}" for n, v in zip(series, row_key)) or "all"
            ax.errorbar(xs, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=3, label=label)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)

    lines(axes[0], "kernel_size", [n for n in ("padding", "stride") if len(_ordered_values(records, n)) > 1])
    # integer hyperparameters: ticks at the values tried, not matplotlib's 3.25 or 1.2
    axes[0].set_xticks(_ordered_values(trained, "kernel_size") or _ordered_values(records, "kernel_size"))
    axes[0].set_xlabel("kernel size")
    axes[0].set_title("accuracy vs kernel size, per padding")
    lines(axes[1], "stride", [n for n in ("kernel_size", "padding") if len(_ordered_values(records, n)) > 1])
    axes[1].set_xticks(_ordered_values(records, "stride"))
    axes[1].set_xlabel("stride")
    axes[1].set_title("accuracy vs stride")
    untrained = sorted({r["config"].get("stride") for r in records if r["status"] != "done"} -
                       {r["config"].get("stride") for r in trained} - {None})
    if untrained:
        axes[1].text(0.02, 0.02, f"stride {', '.join(map(str, untrained))}: no trainable configuration",
                     transform=axes[1].transAxes, fontsize=8)
    for kernel in _ordered_values(trained, "kernel_size"):
        members = [r for r in trained if r["config"]["kernel_size"] == kernel]
        axes[2].scatter([r["seconds_per_epoch"] for r in members], [100 * r["test_accuracy"] for r in members],
                        label=f"kernel_size={kernel}")
    axes[2].set_xlabel("seconds per epoch")
    axes[2].set_ylabel("test accuracy (%)")
    axes[2].set_title("accuracy vs time (one point per trial)")
    axes[2].grid(alpha=0.3)
    if trained:
        axes[2].legend(fontsize=8)
    from numbacnn.viz import save_figure  # atomic: a killed report leaves the previous picture

    save_figure(fig, path)


def write_report(out: str | os.PathLike, locked: bool = False) -> dict[str, Path]:
    """Write ``results.csv``, ``summary.md`` and (with matplotlib) ``sweep.png`` in ``out``.

    Every file is written atomically (a temporary file renamed over the name, never
    through a symlink), holding the folder's lock (``OUT/.numbacnn.lock``) unless the
    caller does (``locked``). Malformed lines of ``results.jsonl`` are skipped, as on
    resume.

    Returns
    -------
    dict name -> path of what was written.

    Raises
    ------
    FileNotFoundError
        ``out/results.jsonl`` does not exist.
    numbacnn.errors.RecordError
        ``sweep.json`` is damaged (names the file and the entry).
    numbacnn.errors.FolderInUseError
        A sweep is running into ``out``.
    ImportError
        matplotlib is missing (after the CSV and the summary are written).
    """
    out = Path(out)
    if not os.path.lexists(out / RESULTS_NAME):
        raise FileNotFoundError(f"no {RESULTS_NAME} in {out}")
    if locked:
        return _write_report_files(out)
    lock = FolderLock(out).acquire()
    try:
        clean_stale_temp_files(out)
        return _write_report_files(out)
    finally:
        lock.release()


def _write_report_files(out: Path) -> dict[str, Path]:
    loaded = load_results(out)
    records = latest_records(loaded.records)
    grid = read_sweep_grid(out)
    names = varied_fields(records, grid)
    written = {"csv": out / CSV_NAME, "summary": out / SUMMARY_NAME}
    write_csv(records, written["csv"], names)
    summary = summary_markdown(records, grid)
    if loaded.skipped:
        summary += "\n" + md_text(loaded.describe_skipped(RESULTS_NAME)) + "\n"
    atomic_write_text(written["summary"], summary)
    plot(records, out / PLOT_NAME)
    written["plot"] = out / PLOT_NAME
    return written


__all__ = ["CSV_NAME", "PLOT_NAME", "SUMMARY_NAME", "compare", "group", "latest_records", "lessons", "md_text",
           "paired_differences", "summary_markdown", "varied_fields", "write_csv", "write_report"]
