"""The adaptive thread count of CPU training (numbacnn/train/threads.py, issue 18 "Under load").

The governor's decisions are checked on a fake machine (a fake clock whose step
time depends on the thread count set), so they are exact and fast; one real
training run checks that switching the count mid-run changes no bit.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

from numbacnn.data import BatchLoader, Dataset, Normalizer
from numbacnn.errors import UsageError, error_line
from numbacnn.models import tiny_vgg
from numbacnn.optim import SGD
from numbacnn.train.loop import fit
from numbacnn.train.threads import EVERY, MAX_EVERY, PROBE, ThreadGovernor, parse_threads

# ms per step of the main job measured in issue 18 (2 cores): idle 2 threads, 1 thread; busy 2 threads
IDLE_2, ONE, BUSY_2 = 2.43, 4.39, 11.44


class FakeMachine:
    """A thread count, and a clock that advances by one step's cost at each reading.

    ThreadGovernor.on_step reads the clock twice: when the step has finished (the
    reading that counts) and after any switch. ``cost[threads]`` is the step time at
    that count; the load can be changed by replacing ``cost``.
    """

    def __init__(self, threads: int, cost: dict[int, float], jitter: float = 0.0, seed: int = 0) -> None:
        self.threads, self.cost, self.now, self.jitter = threads, cost, 0.0, jitter
        self.rng = np.random.default_rng(seed)
        self.sets: list[int] = []
        self._pending = True  # the next reading ends a step (readings alternate: step end, after a switch)

    def clock(self) -> float:
        if self._pending:
            noise = 1 + self.jitter * (self.rng.random() - 0.5) * 2
            self.now += self.cost[self.threads] * noise
        self._pending = not self._pending
        return self.now

    def set_threads(self, count: int) -> None:
        self.sets.append(count)
        self.threads = count

    def get_threads(self) -> int:
        return self.threads

    def governor(self, threads="auto", **kwargs) -> ThreadGovernor:
        return ThreadGovernor(threads, clock=self.clock, set_threads=self.set_threads,
                              get_threads=self.get_threads, **kwargs)

    def run(self, on_step, steps: int) -> list[int]:
        """``steps`` steps; the thread count each one ran at."""
        counts = []
        for _ in range(steps):
            on_step()
            counts.append(self.threads)
        return counts


def test_a_busy_machine_gets_one_thread_after_the_first_probe_round():
    machine = FakeMachine(2, {2: BUSY_2, 1: ONE})
    governor = machine.governor()
    assert governor.candidates == (2, 1)
    with governor as on_step:
        counts = machine.run(on_step, 200)
    # each run of steps starts with a probe round: PROBE timed steps at 2 (after the untimed first
    # step), then the untimed switch step and PROBE steps at 1
    decided = governor.decisions[0]["step"]
    assert governor.decisions[0]["chosen"] == 1 and decided == 2 * (PROBE + 1)
    assert set(counts[decided:decided + EVERY - PROBE - 1]) == {1}  # until the next probe of 2
    assert governor.decisions[0]["seconds"] == {2: pytest.approx(BUSY_2), 1: pytest.approx(ONE)}
    assert machine.threads == 2  # the caller's count is back


def test_the_full_count_comes_back_when_the_machine_frees_up():
    machine = FakeMachine(2, {2: BUSY_2, 1: ONE})
    governor = machine.governor()
    with governor as on_step:
        machine.run(on_step, 1000)  # long enough for the interval to have grown
        assert governor.chosen == 1 and governor.every == MAX_EVERY
        freed_at, interval = sum(governor.steps_at.values()), governor.every
        machine.cost = {2: IDLE_2, 1: ONE}  # the other process ends
        machine.run(on_step, 3 * MAX_EVERY)
    later = [d for d in governor.decisions if d["step"] > freed_at]
    assert [d["chosen"] for d in later] == [2] * len(later)
    assert later[0]["step"] - freed_at <= interval + PROBE + 2  # within one interval and its probe


def test_an_idle_machine_stays_at_the_full_count_and_pays_under_2_percent():
    # the main job: 3 epochs of 891 steps (57,000 training images, batch 64), one governor as in fit
    machine = FakeMachine(2, {2: IDLE_2, 1: ONE}, jitter=0.05)
    governor = machine.governor()
    counts = []
    for epoch in range(3):
        with governor as on_step:
            counts += machine.run(on_step, 891)
        overhead = sum({2: IDLE_2, 1: ONE}[c] for c in counts) / (len(counts) * IDLE_2) - 1  # without the jitter
        assert 0 < overhead < 0.02, (epoch, overhead)  # every epoch so far, the first included
    assert all(d["chosen"] == 2 for d in governor.decisions)
    assert governor.every == MAX_EVERY
    assert counts.count(1) == governor.steps_at[1] > 0  # it did probe


def test_fewer_threads_win_when_faster_at_all_more_only_by_the_margin():
    # 1 thread 5% faster than 2 (a loaded machine): the step must not be slower than at one thread
    machine = FakeMachine(2, {2: 1.00, 1: 0.95}, jitter=0.03, seed=3)
    governor = machine.governor()
    with governor as on_step:
        machine.run(on_step, 5000)
    assert governor.decisions[0]["chosen"] == 1
    assert {d["chosen"] for d in governor.decisions[1:]} == {1}
    # now 2 threads 5% faster: within the margin, it stays at 1 instead of flipping back and forth
    machine.cost = {2: 0.95, 1: 1.00}
    with governor as on_step:
        machine.run(on_step, 5000)
    assert governor.chosen == 1 and governor.every == MAX_EVERY
    machine.cost = {2: 0.85, 1: 1.00}  # 15% faster: worth the second thread
    with governor as on_step:
        machine.run(on_step, 100)
    assert governor.chosen == 2


def test_it_never_switches_back_and_forth_every_step():
    # a load that comes and goes every 7 steps: noisy, but the choice holds for at least EVERY steps
    machine = FakeMachine(2, {2: IDLE_2, 1: ONE})
    governor = machine.governor()
    chosen_at = []
    with governor as on_step:
        for step in range(3000):
            machine.cost = {2: BUSY_2 if (step // 7) % 2 else IDLE_2, 1: ONE}
            on_step()
            chosen_at.append(governor.chosen)
    changes = [i for i in range(1, len(chosen_at)) if chosen_at[i] != chosen_at[i - 1]]
    assert all(b - a >= EVERY for a, b in zip(changes, changes[1:]))
    assert len(machine.sets) <= 2 * 3000 / EVERY * 2  # a probe and a return per round at most


def test_timings_restart_with_each_epoch_and_the_choice_lasts():
    machine = FakeMachine(2, {2: BUSY_2, 1: ONE})
    governor = machine.governor()
    with governor as on_step:
        machine.run(on_step, 100)
    assert governor.chosen == 1 and machine.threads == 2
    machine.clock(), machine.clock()  # evaluation between epochs: not a training step
    with governor as on_step:
        assert machine.threads == 1  # the next epoch starts at the chosen count
        machine.run(on_step, 10)
    assert sum(governor.steps_at.values()) == 100 - 1 + 10 - 1  # the step before each first call is none


def test_more_cores_try_half_the_count_too():
    machine = FakeMachine(8, {8: 5.0, 4: 2.0, 1: 3.0})
    governor = machine.governor()
    assert governor.candidates == (8, 4, 1)
    with governor as on_step:
        machine.run(on_step, 100)
    assert governor.chosen == 4


def test_a_fixed_count_is_set_once_and_the_callers_count_restored_even_on_error():
    machine = FakeMachine(2, {2: BUSY_2, 1: ONE})
    governor = machine.governor(1)
    assert governor.candidates == (1,)
    with pytest.raises(KeyboardInterrupt):
        with governor as on_step:
            assert set(machine.run(on_step, 500)) == {1}
            raise KeyboardInterrupt
    assert machine.sets == [1, 2] and governor.decisions == []


@pytest.mark.parametrize("value", ["0", "x", "1.5", 0, -1, True, numba.config.NUMBA_NUM_THREADS + 1, None])
def test_a_bad_thread_count_is_one_line_naming_the_option(value):
    with pytest.raises(UsageError) as info:
        parse_threads(value)
    line = error_line("train", info.value)
    assert "\n" not in line and "--threads" in line and "NUMBA_NUM_THREADS" in line


def test_good_thread_counts_are_accepted():
    assert parse_threads("auto") == "auto"
    assert parse_threads(1) == 1 and parse_threads("1") == 1
    assert parse_threads(str(numba.config.NUMBA_NUM_THREADS)) == numba.config.NUMBA_NUM_THREADS


def _train(threads, epochs=2):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (96, 1, 12, 12), dtype=np.uint8)
    labels = rng.integers(0, 10, 96).astype(np.int64)
    dataset = Dataset(images, labels)
    normalizer = Normalizer.fit(dataset.images)
    train = BatchLoader(dataset, 8, normalizer, shuffle=True, seed=1, dtype=np.float32)
    val = BatchLoader(dataset, 16, normalizer, shuffle=False, dtype=np.float32)
    model = tiny_vgg(1, 10, 12, 4, padding=1, dtype=np.float32, seed=2)
    history = fit(model, SGD(model.parameters(), lr=0.05), train, val, epochs=epochs, progress=False, log=None,
                  threads=threads)
    weights = [p.data.copy() for p in model.parameters()]
    return [{k: v for k, v in h.items() if k not in ("seconds", "images_per_second")} for h in history], weights


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs NUMBA_NUM_THREADS >= 2 to switch")
def test_switching_threads_mid_training_changes_no_bit():
    full = numba.get_num_threads()
    fixed_history, fixed_weights = _train(full)
    # a clock on which whatever count is not the chosen one looks twice as fast, so every
    # probe round (2 steps, then 1 probed step) switches: the hardest case for bit identity
    class Contrarian:
        governor = None
        now = 0.0

        def __call__(self) -> float:
            self.now += 1.0 if numba.get_num_threads() != self.governor.chosen else 2.0
            return self.now

    clock = Contrarian()
    governor = ThreadGovernor("auto", every=2, max_every=2, probe=1, clock=clock)
    clock.governor = governor
    history, weights = _train(governor)
    assert numba.get_num_threads() == full  # restored
    assert governor.steps_at[1] > 0 and governor.steps_at[full] > 0
    assert len({d["chosen"] for d in governor.decisions}) == 2  # it really switched
    assert history == fixed_history
    for a, b in zip(weights, fixed_weights):
        np.testing.assert_array_equal(a, b)


def test_cli_threads_option_reaches_fit_and_is_put_back(tmp_path, monkeypatch, capsys):
    from numbacnn.cli import main
    from numbacnn.train import loop, threads as threads_module
    from test_data import write_fake_idx_dataset

    idx_dir = write_fake_idx_dataset(tmp_path / "mnist", n_train=24, n_test=8, size=12)
    made = []

    class Recording(ThreadGovernor):
        def __init__(self, threads="auto", **kwargs):
            made.append(threads)
            super().__init__(threads, **kwargs)

    monkeypatch.setattr(loop, "ThreadGovernor", Recording)
    common = ["--dataset", "mnist", "--data-dir", str(idx_dir), "--batch-size", "8", "--filters", "4",
              "--epochs", "1", "--device", "cpu", "--no-progress", "--val-fraction", "0"]
    assert main(["train", *common, "--out", str(tmp_path / "one"), "--threads", "1"]) == 0
    assert main(["train", *common, "--out", str(tmp_path / "auto")]) == 0
    assert made == [1, "auto"]
    assert threads_module.default_threads() == "auto"
    capsys.readouterr()
    assert main(["train", *common, "--out", str(tmp_path / "bad"), "--threads", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("numbacnn train: error: threads must be 'auto' or a count from 1 to")
    assert len(err.splitlines()) == 1 and not (tmp_path / "bad").exists()  # refused before any work
