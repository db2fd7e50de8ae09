"""Sliding-window rates, and the thread that writes them into throughput gauges.

A gauge computed at scrape time (``set_function``) cannot work in prometheus_client's
multiprocess mode: the process that serves /metrics is not the one that recorded the events.
So each recording process keeps its own RateTracker per series, fed on every event, and a
daemon thread of that process writes the rates into ``livesum`` gauges once per interval. The
served value is the sum over a worker's live processes; after the last event it decays to 0
within one window, and the thread then sleeps until the next event, so an idle worker costs
nothing. The same path serves single-process workers, where the gauge is an ordinary one.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable

from prometheus_client import Gauge

DEFAULT_WINDOW_SECONDS = 60.0
DEFAULT_INTERVAL_SECONDS = 1.0
_BUCKETS_PER_WINDOW = 60


class RateTracker:
    """Amount per second over the last `window` seconds, summed in small buckets; thread-safe."""

    def __init__(
        self, window: float = DEFAULT_WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if window <= 0:
            raise ValueError(f"the window must be positive, got {window}")
        self.window = window
        self._clock = clock
        # Buckets bound memory at _BUCKETS_PER_WINDOW entries whatever the event rate.
        self._width = window / _BUCKETS_PER_WINDOW
        self._lock = threading.Lock()
        self._buckets: deque[list[float]] = deque()  # [bucket index, amount]

    def add(self, amount: float = 1.0) -> None:
        """Count `amount` (events, tokens...) as happening now."""
        now = self._clock()
        index = math.floor(now / self._width)
        with self._lock:
            if self._buckets and self._buckets[-1][0] == index:
                self._buckets[-1][1] += amount
            else:
                self._buckets.append([index, amount])
            self._prune(now)

    def rate(self) -> float:
        """The amount per second over the window ending now (0 when nothing happened in it)."""
        with self._lock:
            self._prune(self._clock())
            return sum(amount for _, amount in self._buckets) / self.window

    def reset(self) -> None:
        """Forget every event and take a fresh lock (a forked child must not inherit either)."""
        self._lock = threading.Lock()
        self._buckets = deque()

    def _prune(self, now: float) -> None:
        oldest = math.floor((now - self.window) / self._width)
        while self._buckets and self._buckets[0][0] <= oldest:
            self._buckets.popleft()


class ThroughputPublisher:
    """Feeds one RateTracker per gauge series and writes their rates from a daemon thread."""

    def __init__(
        self,
        window: float = DEFAULT_WINDOW_SECONDS,
        interval: float = DEFAULT_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window = window
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._series: dict[tuple[int, tuple[str, ...]], tuple[RateTracker, Gauge]] = {}
        self._wakeup = threading.Event()
        self._thread_pid: int | None = None
        os.register_at_fork(after_in_child=self._after_fork_in_child)

    def add(self, gauge: Gauge, amount: float, *labels: str) -> None:
        """Count `amount` on the series of `gauge` with these label values."""
        self._tracker(gauge, labels).add(amount)
        self._wake()

    def publish(self) -> bool:
        """Write every series' rate into its gauge now; True while any rate is above 0."""
        with self._lock:
            series = list(self._series.values())
        busy = False
        for tracker, child in series:
            rate = tracker.rate()
            child.set(rate)
            busy = busy or rate > 0
        return busy

    def _tracker(self, gauge: Gauge, labels: tuple[str, ...]) -> RateTracker:
        key = (id(gauge), labels)
        with self._lock:
            entry = self._series.get(key)
            if entry is None:
                child = gauge.labels(*labels) if labels else gauge
                entry = (RateTracker(self._window, self._clock), child)
                self._series[key] = entry
            return entry[0]

    def _wake(self) -> None:
        # Started lazily in the process that records: a thread never survives fork().
        if self._thread_pid != os.getpid():
            with self._lock:
                if self._thread_pid != os.getpid():
                    self._thread_pid = os.getpid()
                    threading.Thread(
                        target=self._run, name="verisolve-throughput", daemon=True
                    ).start()
        self._wakeup.set()

    def _run(self) -> None:
        while True:
            self._wakeup.clear()
            busy = self.publish()
            # Idle: sleep until an event arrives, after writing the zeros once.
            self._wakeup.wait(self._interval if busy else None)

    def _after_fork_in_child(self) -> None:
        # The parent's lock may have been held at fork time, and its events are not the child's.
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        for tracker, _ in self._series.values():
            tracker.reset()
