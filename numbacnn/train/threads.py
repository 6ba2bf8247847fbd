"""How many threads the CPU training step uses: fixed, or adapted to what the machine gives.

Why adapt (issue 18, "Under load"): every Numba parallel region ends at a barrier
that waits for its slowest thread. When another process takes one of the cores,
a descheduled worker holds up the regions it belongs to for up to a scheduler
slice, and the step at the full thread count became 4.7x slower (2.43 -> 11.44 ms
on 2 cores) while one thread (4.39 ms) did not care. ``benchmarks/busy_step.py
--regions`` shows it on one tiny region: at 2 threads with a busy process its median
stays at 2-3 us but its mean rises to 0.06-2 ms (up to 100% of regions over 100 us,
maxima of 10-36 ms), while at 1 thread it stays at 1.4 us. How much a machine's load
costs depends on the load and on libgomp's spinning (GOMP_SPINCOUNT), so
:class:`ThreadGovernor` measures instead of guessing: at the start of each epoch
and then every ``every`` steps it times ``probe`` steps at each other candidate
count (the full count, half, 1) and keeps the fastest, fewer threads on a tie, so a
step is not slower than at one thread for longer than one probe interval, and the
full count comes back when the machine frees up.

The thread count never changes the numbers: every kernel's reductions are split
into a fixed number of partial sums, whatever the thread count
(tests/test_parallel_regions.py), so switching mid-run keeps training bit for bit
identical to a fixed count (tests/test_threads.py).
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from contextlib import contextmanager
from typing import Callable, Iterator

import numba

from numbacnn.errors import UsageError

# Steps between probes: short at first and after a switch (react within a fraction
# of a second to a process that starts or stops), doubling up to MAX_EVERY while the
# choice holds, so an idle machine pays for a probe every 400 steps only.
EVERY = 50
MAX_EVERY = 400
# Steps timed per candidate; the median of 3 ignores one step hit by a page fault or
# a tick of another process.
PROBE = 3
# Hysteresis, one-sided: a smaller count wins as soon as it is faster (the step must
# never be slower than at one thread, and fewer threads leave cores to the others),
# a larger count only when at least this much faster. Two counts within noise of each
# other therefore settle on the smaller one instead of flipping at every probe.
MARGIN = 0.1


def _candidates(top: int) -> tuple[int, ...]:
    """The thread counts tried, largest first: the full count, half of it, and 1."""
    return tuple(sorted({top, max(1, top // 2), 1}, reverse=True))


def parse_threads(value: str | int) -> str | int:
    """``"auto"`` or a thread count from ``--threads`` (or ``fit(threads=...)``), checked.

    Raises
    ------
    UsageError
        Neither "auto" nor an integer in [1, NUMBA_NUM_THREADS].
    """
    if value == "auto":
        return value
    limit = numba.config.NUMBA_NUM_THREADS
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = None
    if count is None or isinstance(value, bool) or str(count) != str(value).strip() or not 1 <= count <= limit:
        raise UsageError(f"threads must be 'auto' or a count from 1 to {limit}, got {value!r}", "--threads",
                         f"use --threads auto, or a count up to NUMBA_NUM_THREADS={limit}")
    return count


_default_threads: str | int = "auto"


def set_default_threads(threads: str | int) -> str | int:
    """Set what ``fit`` uses when given no ``threads`` (``numbacnn train --threads``);
    returns the previous setting, to put back.

    Raises
    ------
    UsageError
        See :func:`parse_threads`.
    """
    global _default_threads
    previous, _default_threads = _default_threads, parse_threads(threads)
    return previous


def default_threads() -> str | int:
    """The ``threads`` that ``fit`` uses when given none: "auto" unless set."""
    return _default_threads


class ThreadGovernor:
    """Chooses ``numba.set_num_threads`` during CPU training, step by step.

    Use as a context manager around a run of training steps; it yields a function
    to call at the start of every step::

        governor = ThreadGovernor("auto")          # once per fit: the choice lasts
        with governor as on_step:                  # per epoch: sets the chosen count
            for batch in loader:
                on_step()                          # times the previous step, may switch
                ...
        # the caller's thread count is back here

    The time between two ``on_step`` calls is the step that ran in between, at the
    count that was set; the first step after any switch is not timed (a resized
    pool wakes threads). At the start of each run of steps (each epoch), and then
    every ``every`` steps, the other candidates get ``probe`` steps each, and the
    fastest median is compared with the current count's last ``probe`` steps: a
    smaller count wins if faster at all, a larger one if at least ``margin`` faster. ``every`` restarts at its base after a switch and doubles up
    to ``max_every`` while the choice holds.

    Parameters
    ----------
    threads : "auto" or int
        "auto" adapts between the caller's count (``numba.get_num_threads()`` at
        construction), half of it and 1; an int fixes the count during training.
    every, max_every, probe, margin
        See the module constants.
    clock, set_threads, get_threads
        Seconds, and Numba's thread-count setters (replaced by fakes in the tests).
    """

    def __init__(self, threads: str | int = "auto", *, every: int = EVERY, max_every: int = MAX_EVERY,
                 probe: int = PROBE, margin: float = MARGIN, clock: Callable[[], float] = time.perf_counter,
                 set_threads: Callable[[int], None] = numba.set_num_threads,
                 get_threads: Callable[[], int] = numba.get_num_threads) -> None:
        if not 1 <= probe < every <= max_every:
            raise ValueError(f"ThreadGovernor: need 1 <= probe < every <= max_every, got {probe}, {every}, {max_every}")
        threads = parse_threads(threads)
        self._clock, self._set, self._get = clock, set_threads, get_threads
        self.candidates = _candidates(get_threads()) if threads == "auto" else (threads,)
        self.chosen = self.candidates[0]
        self.base_every, self.max_every, self.every = every, max_every, every
        self.probe, self.margin = probe, margin
        self.decisions: list[dict] = []  # one per probe round: step, median seconds per count, chosen
        self.steps_at: dict[int, int] = {c: 0 for c in self.candidates}  # steps run at each count
        self._step = 0
        self._saved: int | None = None
        self._reset()

    @property
    def adaptive(self) -> bool:
        return len(self.candidates) > 1

    def _reset(self) -> None:
        """Forget timings at the start of each run of steps (an epoch): the load may have
        changed while the caller did something else (evaluation, a checkpoint), so the
        run starts with a probe round as soon as the chosen count has ``probe`` steps."""
        self._samples = {c: deque(maxlen=self.probe) for c in self.candidates}
        self._queue: list[int] = []  # candidates still to probe in this round
        self._since_probe = self.every
        self._last: float | None = None
        self._skip = True

    def _switch(self, count: int) -> None:
        if count != self._get():
            self._set(count)
        self.current = count
        self._skip = True

    def __enter__(self) -> Callable[[], None]:
        self._saved = self._get()
        self._reset()
        self._switch(self.chosen)
        return self.on_step

    def __exit__(self, *exc) -> None:
        self._set(self._saved)

    def on_step(self) -> None:
        """Call at the start of every training step (see the class docstring)."""
        now = self._clock()
        if self._last is not None:  # the step since the last call is done
            self.steps_at[self.current] += 1
            self._step += 1
            if self._skip:
                self._skip = False
            else:
                self._samples[self.current].append(now - self._last)
            if self.adaptive:
                self._advance()
        self._last = self._clock()  # after a switch, so its cost is not counted either

    def _advance(self) -> None:
        """Move the probing state machine on by one finished step."""
        if not self._queue:  # running at the chosen count
            self._since_probe += 1
            if self._since_probe >= self.every and len(self._samples[self.chosen]) == self.probe:
                self._queue = [c for c in self.candidates if c != self.chosen]
                for c in self._queue:
                    self._samples[c].clear()
                self._switch(self._queue[0])
            return
        if len(self._samples[self.current]) < self.probe:
            return
        self._queue.pop(0)
        if self._queue:
            self._switch(self._queue[0])
            return
        self._decide()

    def _decide(self) -> None:
        medians = {c: statistics.median(self._samples[c]) for c in self.candidates}
        fastest = min(self.candidates, key=lambda c: (medians[c], c))  # a tie goes to fewer threads
        needed = 1.0 if fastest < self.chosen else 1 - self.margin
        if fastest != self.chosen and medians[fastest] < needed * medians[self.chosen]:
            self.chosen, self.every = fastest, self.base_every
        else:
            self.every = min(2 * self.every, self.max_every)
        self.decisions.append({"step": self._step, "seconds": medians, "chosen": self.chosen})
        self._samples[self.chosen].clear()  # the next round compares fresh steps
        self._since_probe = 0
        self._switch(self.chosen)


@contextmanager
def governed(governor: ThreadGovernor | None) -> Iterator[Callable[[], None]]:
    """``with governor as on_step`` when there is one (CPU training), else a no-op ``on_step``."""
    if governor is None:
        yield lambda: None
        return
    with governor as on_step:
        yield on_step
