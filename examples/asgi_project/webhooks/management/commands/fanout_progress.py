"""``python manage.py fanout_progress [--event ID]``: watch a fan-out until every delivery
is final, then print a summary.

On a terminal it redraws one progress bar in place (a carriage return and an ANSI
erase-line); into a pipe or a file it writes one plain line per second instead, so that a
log or a CI job gets readable output.
"""

from __future__ import annotations

import collections
import shutil
import time
from dataclasses import replace
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from webhooks.models import Event
from webhooks.progress import Tally, tally

#: Seconds between redraws on a terminal, and the window the rate is measured over.
_REDRAW = 0.2
_RATE_WINDOW = 1.0


class Command(BaseCommand):
    help = "Show the progress of an event's deliveries until all are final, then a summary."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--event", type=int, help="The event's id (default: the latest).")
        parser.add_argument(
            "--timeout",
            type=float,
            default=300.0,
            help="Give up (exit status 1) when deliveries are still pending after this many "
            "seconds (default 300).",
        )
        parser.add_argument(
            "--interval",
            type=float,
            default=1.0,
            help="Seconds between lines when the output is not a terminal (default 1).",
        )

    def handle(
        self, *args: Any, event: int | None, timeout: float, interval: float, **options: Any
    ) -> None:
        found = Event.objects.filter(pk=event) if event else Event.objects.order_by("-pk")
        subject = found.first()
        if subject is None:
            raise CommandError(f"No event {event}." if event else "No event yet.")
        on_terminal = self.stdout.isatty()
        deadline = time.monotonic() + timeout
        samples: collections.deque[tuple[float, int]] = collections.deque()
        next_line = 0.0
        while True:
            counts = tally(subject.pk)
            now = time.monotonic()
            samples.append((now, counts.finished))
            while now - samples[0][0] > _RATE_WINDOW and len(samples) > 2:
                samples.popleft()
            rate = _rate(samples)
            elapsed = (timezone.now() - subject.created_at).total_seconds()
            if on_terminal:
                self.stdout.write("\r\033[K" + _bar_line(counts, rate, elapsed), ending="")
                self.stdout.flush()
            elif counts.done or now >= next_line:
                self.stdout.write(_plain_line(counts, rate, elapsed))
                next_line = now + interval
            if counts.done:
                break
            if now > deadline:
                if on_terminal:
                    self.stdout.write("")
                raise CommandError(
                    f"{counts.pending} of {counts.total} deliveries still pending after "
                    f"{timeout:g} s (see `aiotaskq status` and the server's log)."
                )
            time.sleep(_REDRAW if on_terminal else min(_REDRAW, interval))
        if on_terminal:
            self.stdout.write("")
        self.stdout.write(summary(subject, counts))


def _rate(samples: collections.deque[tuple[float, int]]) -> float:
    (t0, n0), (t1, n1) = samples[0], samples[-1]
    return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


def _figures(counts: Tally, rate: float, elapsed: float) -> str:
    return (
        f" {counts.finished}/{counts.total}  delivered {counts.delivered}  failed "
        f"{counts.failed}  pending {counts.pending} ({counts.waiting} to retry)  "
        f"{rate:.0f}/s  {elapsed:.1f} s"
    )


def _bar_line(counts: Tally, rate: float, elapsed: float) -> str:
    # Fit the terminal (a line that wraps cannot be redrawn in place), and keep the bar's
    # width steady while the figures grow: size it for the widest figures it may show.
    n = counts.total
    widest = replace(counts, delivered=n, failed=0, pending=n, waiting=n)
    room = shutil.get_terminal_size().columns - len(_figures(widest, 99_999, 9_999.9)) - 3
    width = max(10, min(40, room))
    filled = width * counts.finished // n if n else width
    return f"[{'#' * filled}{'.' * (width - filled)}]{_figures(counts, rate, elapsed)}"


def _plain_line(counts: Tally, rate: float, elapsed: float) -> str:
    return (
        f"{elapsed:6.1f} s  {counts.finished}/{counts.total} final: {counts.delivered} "
        f"delivered, {counts.failed} failed; {counts.pending} pending ({counts.waiting} to "
        f"retry); {rate:.0f}/s"
    )


def summary(event: Event, counts: Tally) -> str:
    """The closing lines: outcomes, retries, snoozes, wall time and throughput."""
    end = counts.last_finished_at or timezone.now()
    wall = max((end - event.created_at).total_seconds(), 1e-6)
    return "\n".join(
        [
            f"{event}: {counts.total} deliveries, {counts.attempts} requests, all final in "
            f"{wall:.1f} s ({counts.total / wall:.0f} deliveries/s)",
            f"  delivered  {counts.delivered:6}",
            f"  failed     {counts.failed:6}  (after all their retries, or refused with a 4xx)",
            f"  retried    {counts.retried:6}  deliveries, {counts.retries} retries in all "
            "(network errors, HTTP 5xx)",
            f"  snoozed    {counts.snoozed:6}  deliveries, {counts.snoozes} times in all "
            "(HTTP 429, Retry-After; no retry spent)",
        ]
    )
