"""The horizon benchmark's stall: the intervals during which a task was due and none started,
computed from (enqueued, started) pairs. A pure function of its input; no timing here."""

from __future__ import annotations

import pytest

from benchmarks.scenarios_horizon import stall_summary, stalls


def test_no_pickups_no_stall() -> None:
    assert stalls([]) == []
    assert stall_summary([], 0.0)["worst_s"] is None


def test_an_idle_gap_is_no_stall() -> None:
    # Each task starts 1 ms after its enqueue; nothing is due between them.
    pickups = [(0.0, 0.001), (5.0, 5.001)]
    assert stalls(pickups) == [(0.0, 0.001), (5.0, 5.001)]
    assert stall_summary(stalls(pickups), 0.0)["worst_s"] == pytest.approx(0.001)


def test_a_stall_runs_from_the_last_start_to_the_next() -> None:
    # Tasks due at 1.0, 1.1 and 1.2; the first starts at once, the others only at 3.0.
    pickups = [(1.0, 1.0), (1.1, 3.0), (1.2, 3.0)]
    assert stalls(pickups) == [(1.1, 3.0)]
    summary = stall_summary(stalls(pickups), 1.0)
    assert summary["worst_s"] == pytest.approx(1.9)
    assert summary["worst_at_s"] == pytest.approx(0.1)
    assert summary["over_limit"] == 1


def test_a_task_waiting_across_other_starts_stalls_only_between_starts() -> None:
    # The task due at 0.0 waits until 2.0, but another starts at 1.0: two stalls of ~1 s
    # (from its due time to 1.0, then from 1.0 to 2.0), not one of 2 s.
    pickups = [(0.0, 2.0), (0.9, 1.0)]
    assert stalls(pickups) == [(0.0, 1.0), (1.0, 2.0)]
    assert stall_summary(stalls(pickups), 0.0)["worst_s"] == pytest.approx(1.0)


def test_starts_out_of_enqueue_order() -> None:
    # Started in another order than enqueued: the earliest task still waiting counts.
    pickups = [(0.0, 0.5), (0.2, 0.3), (0.4, 0.45)]
    assert stalls(pickups) == [(0.0, 0.3), (0.3, 0.45), (0.45, 0.5)]
