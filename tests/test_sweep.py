"""numbacnn.sweep: grid, identity, records, resume, Dask (LocalCluster), report, CLI.

Trainings are 1 epoch on a generated 16x16 Fashion-MNIST-format dataset, so a
trial takes a fraction of a second once its kernels are compiled. Results are
compared *exactly* (every float of every record), never with a tolerance: a trial
must give the same numbers on any worker and in this process.
"""

from __future__ import annotations

import os
import time
import signal
import sys

import numpy as np
import pytest

from numbacnn.data import load_dataset, write_idx
from numbacnn.sweep import read_results, run, write_report
from numbacnn.sweep.driver import append_result, finished
from numbacnn.sweep.grid import expand, parse_grid, trial_id
from numbacnn.sweep.report import compare, group, latest_records, paired_differences
from numbacnn.train import TrainConfig

distributed = pytest.importorskip("distributed")

# Fields that measure time or say where a trial ran: everything else must match exactly.
WHERE_AND_WHEN = {"seconds", "seconds_per_epoch", "compile_seconds", "worker", "numba_threads"}
GRID = {"kernel_size": [3, 5], "padding": [0, 1], "seed": [0, 1]}  # kernel 5 without padding is impossible at 16


def _write_dataset(folder, size=16, n_train=160, n_test=48, seed=0):
    """Fashion-MNIST's four IDX files with learnable images: class k has a bright row k."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
        images[np.arange(n), labels, :] = 220
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    return folder


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return _write_dataset(tmp_path_factory.mktemp("sweep") / "data")


@pytest.fixture(scope="module")
def base(data_dir):
    return TrainConfig(data_dir=str(data_dir), epochs=1, batch_size=32, device="cpu", lr=0.05)


@pytest.fixture(scope="module")
def sequential(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("sequential")
    result = run(GRID, base, out, workers=0, log=None)
    return out, result


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=40) as cluster, distributed.Client(cluster) as c:
        yield c


def _values(records):
    return {r["trial"]: {k: v for k, v in r.items() if k not in WHERE_AND_WHEN} for r in records}


# --------------------------------------------------------------------------- #
# grid and identity
# --------------------------------------------------------------------------- #


def test_parse_grid_types_and_names():
    grid = parse_grid(["kernel-size=3,5,7", "lr=0.1,1e-3", "optimizer=sgd,adam", "seed=0"])
    assert grid == {"kernel_size": [3, 5, 7], "lr": [0.1, 0.001], "optimizer": ["sgd", "adam"], "seed": [0]}
    assert type(grid["lr"][0]) is float and type(grid["kernel_size"][0]) is int


@pytest.mark.parametrize("items,match", [(["kernel_size"], "is not NAME=V1,V2"), (["foo=1"], "unknown hyperparameter"),
                                         (["kernel_size=a"], "expected an integer"),
                                         (["seed=1", "seed=2"], "given twice")])
def test_parse_grid_refuses(items, match):
    with pytest.raises(ValueError, match=match):
        parse_grid(items)


def test_expand_is_the_cartesian_product_with_stable_distinct_ids(base):
    trials = expand(GRID, base)
    assert [tuple(t.values.values()) for t in trials] == [(k, p, s) for k in (3, 5) for p in (0, 1) for s in (0, 1)]
    assert len({t.id for t in trials}) == 8
    assert [t.id for t in expand(GRID, base)] == [t.id for t in trials]  # same sweep, same identities
    assert all(t.id == trial_id(t.config) for t in trials)
    assert all(t.config["lr"] == 0.05 and t.config["epochs"] == 1 for t in trials)
    with pytest.raises(ValueError, match="not a valid configuration"):
        expand({"optimizer": ["sgd", "lbfgs"]}, base)


def test_dataset_location_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NUMBACNN_DATA", raising=False)
    [trial] = expand({"seed": [0]}, TrainConfig(data_dir="data"))
    assert trial.config["data_dir"] == str(tmp_path / "data")
    monkeypatch.setenv("NUMBACNN_DATA", "rel/fmnist")
    [trial] = expand({"seed": [0]}, TrainConfig())
    assert trial.config["data_dir"] == str(tmp_path / "rel" / "fmnist")


# --------------------------------------------------------------------------- #
# records
# --------------------------------------------------------------------------- #


def test_sequential_sweep_records_every_trial_once(sequential, base):
    out, result = sequential
    records = read_results(out)
    assert result.ran == 8 and result.skipped == 0
    assert sorted(r["trial"] for r in records) == sorted(t.id for t in expand(GRID, base))
    by_values = {tuple(r["values"].values()): r for r in records}
    for (kernel, padding, seed), r in by_values.items():
        if (kernel, padding) == (5, 0):  # 16 -> 12 -> 8 -> 4: conv_2_1's 5x5 kernel does not fit
            assert r["status"] == "impossible" and "conv_2_1 gets a 4x4 input" in r["message"]
            continue
        assert r["status"] == "done", r["message"]
        assert 0 <= r["test_accuracy"] <= 1 and np.isfinite(r["test_loss"]) and r["seconds_per_epoch"] > 0
        assert r["slides"] == "symmetric" and r["versions"]["numba"]
        # parameters: 4 convs (k*k*cin*10 + 10) and the classifier on the final feature map
        final = r["feature_sizes"][-1]
        expected = (kernel * kernel * 1 * 10 + 10) + 3 * (kernel * kernel * 10 * 10 + 10) + (10 * final * final * 10 + 10)
        assert r["parameters"] == expected
    # the trained accuracy depends on the seed (different weights), so seeds are not silently ignored
    assert by_values[(3, 1, 0)]["test_loss"] != by_values[(3, 1, 1)]["test_loss"]


def test_diverging_and_dataset_less_trials_are_recorded_not_fatal(base, tmp_path):
    out = tmp_path / "sweep"
    result = run({"lr": [0.05, 1e12]}, base, out, workers=0, log=None, report=False)
    statuses = {r["values"]["lr"]: r for r in read_results(out)}
    assert result.ran == 2
    assert statuses[0.05]["status"] == "done"
    assert statuses[1e12]["status"] == "diverged" and "Try a smaller --lr" in statuses[1e12]["message"]
    # a worker without the dataset fails that trial with the loader's own message
    missing = tmp_path / "nowhere"
    run({"seed": [0]}, TrainConfig(data_dir=str(missing), epochs=1, device="cpu"), out, workers=0, log=None,
        report=False)
    failed = read_results(out)[-1]
    assert failed["status"] == "failed"
    with pytest.raises(FileNotFoundError) as loader:
        load_dataset("fashion-mnist", str(missing))
    assert failed["message"] == str(loader.value) and str(missing) in failed["message"]


def test_failed_trials_run_again_finished_ones_do_not(base, tmp_path):
    out = tmp_path / "sweep"
    [trial] = expand({"seed": [0]}, base)
    append_result(out.mkdir() or out, {"trial": trial.id, "values": trial.values, "status": "failed",
                                       "message": "worker lost", "config": trial.config})
    assert finished(read_results(out)) == {}
    result = run({"seed": [0]}, base, out, workers=0, log=None, report=False)
    assert result.ran == 1 and [r["status"] for r in read_results(out)] == ["failed", "done"]
    assert [r["status"] for r in latest_records(read_results(out))] == ["done"]
    assert run({"seed": [0]}, base, out, workers=0, log=None, report=False).ran == 0


def test_interrupted_sweep_resumes_without_repeating(sequential, base, tmp_path):
    out = tmp_path / "sweep"
    seen = []

    def interrupt_after_three(record):
        seen.append(record["trial"])
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(GRID, base, out, workers=0, log=None, on_result=interrupt_after_three, report=False)
    assert [r["trial"] for r in read_results(out)] == seen
    with open(out / "results.jsonl", "a") as f:
        f.write('{"trial": "half-written li')  # a client killed mid-write leaves a partial line
    result = run(GRID, base, out, workers=0, log=None, report=False)
    assert (result.skipped, result.ran) == (3, 5)
    records = read_results(out)
    assert len(records) == 8 and len({r["trial"] for r in records}) == 8
    assert _values(records) == _values(read_results(sequential[0]))


# --------------------------------------------------------------------------- #
# Dask
# --------------------------------------------------------------------------- #


def test_local_cluster_gives_exactly_the_sequential_results(sequential, base, client, tmp_path):
    out = tmp_path / "sweep"
    result = run(GRID, base, out, client=client, log=None, report=False)
    records = read_results(out)
    assert result.ran == 8
    assert _values(records) == _values(read_results(sequential[0]))  # every float, bit for bit
    workers = {r["worker"] for r in records}
    assert workers <= set(client.scheduler_info()["workers"]) and len(workers) == 2
    # two single-threaded workers on this host share its cores: one Numba thread per trial
    cores = min(os.cpu_count(), 2)
    assert {r["numba_threads"] for r in records} == {max(1, cores // 2)}
    # each future was released once written: the scheduler keeps no trial result
    # (the client's release of the last future reaches the scheduler asynchronously: wait for it)
    deadline = time.monotonic() + 10
    while True:
        keys = client.run_on_scheduler(lambda dask_scheduler: [str(k) for k in dask_scheduler.tasks])
        held = [k for k in keys if "numbacnn-trial" in k]
        if not held or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not held


def test_killed_worker_still_yields_every_trial_once(sequential, base, tmp_path):
    out = tmp_path / "sweep"
    grid = {"kernel_size": [3], "padding": [1], "seed": [0, 1, 2, 3, 4, 5]}
    killed = []
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=50) as cluster, distributed.Client(cluster) as client:
        def kill_a_busy_worker(record):
            if killed:
                return
            busy = [w for w, keys in client.processing().items() if keys] or list(client.scheduler_info()["workers"])
            pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

        result = run(grid, base, out, client=client, log=None, on_result=kill_a_busy_worker, report=False)
        assert killed
        pids = set(client.run(os.getpid).values())
    assert killed[0] not in pids  # the nanny started a new process
    records = read_results(out)
    assert result.ran == 6 and sorted(r["values"]["seed"] for r in records) == [0, 1, 2, 3, 4, 5]
    assert {r["status"] for r in records} == {"done"}
    expected = {t.id for t in expand(grid, base)}
    assert {r["trial"] for r in records} == expected
    # and the re-trained trial is the same trial: compare with a sequential run of the same grid
    again = run(grid, base, tmp_path / "sequential", workers=0, log=None, report=False)
    assert again.ran == 6
    assert _values(records) == _values(read_results(tmp_path / "sequential"))


def test_sweep_workers_have_the_pitfalls_handled(base, tmp_path, monkeypatch):
    from numbacnn.sweep import local_cluster

    # a value an earlier default LocalCluster left in this process's environment must not reach sweep workers
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    with local_cluster(2) as cluster, distributed.Client(cluster) as client:
        def probe():
            import dask

            return (os.environ.get("NUMBA_NUM_THREADS"), os.environ.get("MALLOC_TRIM_THRESHOLD_"),
                    dask.config.get("distributed.worker.profile.enabled"))

        assert set(client.run(probe).values()) == {("1", None, False)}
        assert len(client.scheduler_info()["workers"]) == 2
        run({"seed": [0]}, base, tmp_path / "sweep", client=client, log=None, report=False)
    [record] = read_results(tmp_path / "sweep")
    assert record["status"] == "done" and record["numba_threads"] == 1


def test_without_distributed_the_sequential_sweep_works_and_dask_says_what_to_install(base, tmp_path,
                                                                                        monkeypatch):
    from numbacnn.sweep.driver import import_distributed

    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r'pip install "numbacnn\[distributed\]"'):
        import_distributed()
    with pytest.raises(ImportError, match="distributed"):
        run({"seed": [0]}, base, tmp_path / "a", workers=2, log=None, report=False)
    assert run({"seed": [0]}, base, tmp_path / "b", workers=0, log=None, report=False).ran == 1


# --------------------------------------------------------------------------- #
# report
# --------------------------------------------------------------------------- #


def test_report_tables_match_the_records(sequential):
    out, _ = sequential
    records = read_results(out)
    summary = (out / "summary.md").read_text()
    for heading in ("## Configurations", "## By kernel_size", "## By padding", "Smaller kernels", "Padding preserves"):
        assert heading in summary
    accuracies = [r["test_accuracy"] for r in records if r["config"]["kernel_size"] == 3 and r["config"]["padding"] == 1]
    mean, std = np.mean(accuracies), np.std(accuracies, ddof=1)
    assert f"| 3 | 1 | 2/2 | {100 * mean:.2f}% ± {100 * std:.2f} |" in summary
    assert "| 5 | 0 | 0/2 | – |" in summary and "2 impossible" in summary
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0].startswith("trial,status,kernel_size,padding,seed,test_accuracy") and len(rows) == 9
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = (out / "summary.md").read_text()
    write_report(out)
    assert (out / "summary.md").read_text() == before


def _record(kernel, seed, accuracy):
    config = dict(TrainConfig().__dict__, kernel_size=kernel, seed=seed)
    return {"trial": f"{kernel}-{seed}", "values": {"kernel_size": kernel, "seed": seed}, "status": "done",
            "test_accuracy": accuracy, "seconds_per_epoch": 1.0, "config": config}


def test_lesson_verdicts_use_paired_trials_and_the_seed_spread():
    records = [_record(3, s, a) for s, a in enumerate([0.90, 0.88, 0.91])] + \
              [_record(5, s, a) for s, a in enumerate([0.85, 0.84, 0.86])]
    differences = paired_differences(records, "kernel_size", 3, 5)
    assert sorted(differences) == pytest.approx(sorted([0.05, 0.04, 0.05]), abs=1e-15)
    assert compare(differences)[0] == "higher"
    assert compare(paired_differences(records, "kernel_size", 5, 3))[0] == "lower"
    assert compare([0.01, -0.012, 0.003])[0] == "noise"
    from numbacnn.sweep.report import lessons

    [kernel_lesson, _] = lessons(records)
    assert "agrees with the lesson" in kernel_lesson and "+4.67 points" in kernel_lesson
    flipped = [dict(r, test_accuracy=1 - r["test_accuracy"]) for r in records]
    assert "the data disagree with the lesson" in lessons(flipped)[0]
    [row3, row5] = group(records, ["kernel_size"])
    assert row3["accuracy"][0] == pytest.approx(np.mean([0.90, 0.88, 0.91]), abs=1e-15)
    assert row5["accuracy"][1] == pytest.approx(np.std([0.85, 0.84, 0.86], ddof=1), abs=1e-15)


# --------------------------------------------------------------------------- #
# command line
# --------------------------------------------------------------------------- #


def test_cli_sweep_report_and_one_line_errors(data_dir, tmp_path, capsys):
    from numbacnn.cli import main

    out = tmp_path / "cli"
    argv = ["sweep", "--grid", "padding=0,1", "--epochs", "1", "--batch-size", "32", "--lr", "0.05",
            "--data-dir", str(data_dir), "--device", "cpu", "--workers", "0", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    records = read_results(out)
    assert [r["values"] for r in records] == [{"padding": 0}, {"padding": 1}]
    assert {r["config"]["batch_size"] for r in records} == {32} and {r["config"]["lr"] for r in records} == {0.05}
    assert "2 trials in" in capsys.readouterr().out
    assert main(argv) == 0 and "0 trials in" in capsys.readouterr().out and len(read_results(out)) == 2
    (out / "summary.md").unlink()
    assert main(["sweep", "report", str(out)]) == 0 and (out / "summary.md").is_file()
    for bad, what in [(["sweep", "--grid", "foo=1", "--workers", "0"], "unknown hyperparameter 'foo'"),
                      (["sweep", "--workers", "0"], "no --grid given"),
                      (["sweep", "report", str(tmp_path / "none")], "no results.jsonl")]:
        capsys.readouterr()
        assert main(bad) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("numbacnn sweep: error: ") and what in err[0]
        assert err[0].endswith(")")


@pytest.mark.parametrize("where", [["--workers", "0"], ["--workers", "2"], []])
def test_cli_checks_the_dataset_before_any_trial(where, tmp_path, capsys):
    """Trials on this machine (in-process or local workers): a missing dataset is one line
    and exit 2, as `numbacnn train` says it, before any trial, cluster or results file."""
    from numbacnn.cli import main

    missing, out = tmp_path / "nope", tmp_path / "out"
    assert main(["sweep", "--grid", "seed=0,1", "--data-dir", str(missing), "--out", str(out), *where]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    with pytest.raises(Exception) as loader:
        load_dataset("fashion-mnist", str(missing))
    assert captured.err == f"numbacnn sweep: error: {loader.value}\n"
    assert captured.err.startswith("numbacnn sweep: error: fashion-mnist: the data folder does not exist, ")
    assert not out.exists()


def test_cli_without_distributed_says_what_to_install(monkeypatch, capsys):
    from numbacnn.cli import main

    monkeypatch.setitem(sys.modules, "distributed", None)
    assert main(["sweep", "--grid", "seed=0", "--workers", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ('numbacnn sweep: error: Dask distributed is not installed, needed for --workers N and '
                   '--cluster (pip install "numbacnn[distributed]", or --workers 0 to run the trials in this process)')


def test_cli_runs_on_an_existing_cluster_with_a_progress_bar(data_dir, client, tmp_path, capsys):
    from numbacnn.cli import main

    out = tmp_path / "cluster"
    argv = ["sweep", "--grid", "seed=0,1", "--epochs", "1", "--batch-size", "32", "--data-dir", str(data_dir),
            "--device", "cpu", "--cluster", client.scheduler.address, "--out", str(out), "--progress"]
    assert main(argv) == 0
    records = read_results(out)
    assert len(records) == 2 and {r["worker"] for r in records} <= set(client.scheduler_info()["workers"])
    err = capsys.readouterr().err
    assert "trials" in err and "done=2" in err and "failed=0" in err
    assert client.status == "running"  # the command closed its own connection, not the cluster


def test_sigterm_stops_the_command_like_ctrl_c_and_a_rerun_resumes(data_dir, tmp_path):
    import subprocess

    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "numbacnn", "sweep", "--grid", "seed=0,1,2,3,4,5,6,7", "--epochs", "1",
               "--batch-size", "32", "--data-dir", str(data_dir), "--device", "cpu", "--workers", "0",
               "--out", str(out), "--no-progress"]
    # started the way `nohup ... &` starts it: SIGINT ignored, so only SIGTERM can stop it cleanly
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    for line in process.stdout:
        if line.startswith("[1/8]"):
            break
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "interrupted" in err and "run the same command again to resume" in err
    first = read_results(out)
    assert 1 <= len(first) < 8
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"{len(first)} already done" in done.stdout
    records = read_results(out)
    assert len(records) == 8 and len({r["trial"] for r in records}) == 8
