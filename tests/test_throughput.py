"""Sliding-window rates and the thread that publishes them into gauges."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry, Gauge

from verisolve.throughput import RateTracker, ThroughputPublisher


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("events", "at", "expected"),
    [
        pytest.param([], 0.0, 0.0, id="nothing happened"),
        pytest.param([(0.0, 60.0)], 0.0, 1.0, id="60 in a 60 s window is 1/s"),
        pytest.param([(0.0, 30.0), (10.0, 30.0)], 10.0, 1.0, id="events add up"),
        pytest.param([(0.0, 60.0)], 59.0, 1.0, id="still inside the window"),
        pytest.param([(0.0, 60.0)], 61.0, 0.0, id="decays to 0 after the window"),
        pytest.param([(0.0, 60.0), (45.0, 120.0)], 70.0, 2.0, id="only the recent event stays"),
    ],
)
def test_rate_over_a_sliding_window(
    events: list[tuple[float, float]], at: float, expected: float
) -> None:
    clock = FakeClock()
    tracker = RateTracker(window=60.0, clock=clock)
    start = clock.now
    for offset, amount in events:
        clock.now = start + offset
        tracker.add(amount)
    clock.now = start + at
    assert tracker.rate() == pytest.approx(expected)


def test_memory_stays_bounded_whatever_the_event_rate() -> None:
    clock = FakeClock()
    tracker = RateTracker(window=60.0, clock=clock)
    for step in range(100_000):
        clock.now = 1000.0 + step * 0.01  # 100 events per second for 1000 s
        tracker.add()
    assert len(tracker._buckets) <= 61
    assert tracker.rate() == pytest.approx(100.0, rel=0.03)


def test_a_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateTracker(window=0)


def test_publish_writes_each_series_and_reports_when_all_are_idle() -> None:
    registry = CollectorRegistry()
    plain = Gauge("t_rate", "a rate", registry=registry)
    labelled = Gauge("t_rate_by_stage", "a rate", ["stage"], registry=registry)
    clock = FakeClock()
    publisher = ThroughputPublisher(window=10.0, interval=3600.0, clock=clock)
    publisher.add(plain, 20.0)
    publisher.add(labelled, 5.0, "generate")
    publisher.add(labelled, 10.0, "score")
    assert publisher.publish() is True
    assert registry.get_sample_value("t_rate") == pytest.approx(2.0)
    assert registry.get_sample_value("t_rate_by_stage", {"stage": "generate"}) == 0.5
    assert registry.get_sample_value("t_rate_by_stage", {"stage": "score"}) == 1.0
    clock.now += 11.0
    assert publisher.publish() is False
    assert registry.get_sample_value("t_rate") == 0.0
    assert registry.get_sample_value("t_rate_by_stage", {"stage": "score"}) == 0.0


def test_the_thread_keeps_the_gauge_current_and_lets_it_decay() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("t_live_rate", "a rate", registry=registry)
    publisher = ThroughputPublisher(window=0.5, interval=0.02)
    publisher.add(gauge, 5.0)
    assert _eventually(lambda: (registry.get_sample_value("t_live_rate") or 0.0) > 0)
    assert _eventually(lambda: registry.get_sample_value("t_live_rate") == 0.0, timeout=3.0)


def _eventually(check: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False
