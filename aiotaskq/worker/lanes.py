"""Lanes: how one worker divides its ``concurrency`` between its queues.

The rule:

- A queue with a cap (``--queues exports:2``, else ``AIOTASKQ["QUEUES"]["exports"]
  ["concurrency"]``) is a lane of its own. Its cap is a ceiling (never more of its tasks at
  once) and a reservation (those slots are taken out of ``concurrency`` and never lent), so
  ``critical:10`` means ten slots that are always there for ``critical``, whatever the other
  queues hold.
- The queues without a cap share one lane: what the caps leave of ``concurrency``.
- No borrowing. A capped lane's idle slots stay idle rather than go to the shared lane: a
  borrowed slot is only returned when the borrowing task ends, and a task that borrowed a
  ``critical`` slot may be the 30-minute export that the lane exists to keep out. Reserving
  without borrowing costs some idle capacity; it is what makes the reservation a guarantee.
  (Give the slow queues caps and leave the fast ones uncapped: the fast ones then share
  everything else.)

The caps must leave the shared lane at least one slot when there are uncapped queues, and
may not add up to more than ``concurrency`` in any case: either is a
:class:`~aiotaskq.errors.InvalidWorkerOptions` naming the numbers.

Claims ask each lane for its own free slots in one statement (``claim`` in queries.sql), so
one lane's backlog cannot crowd another out of a batch. :class:`Slots` keeps the count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..conf import MAX_SLOTS, QueueSettings, get_settings, shown
from ..errors import InvalidWorkerOptions

__all__ = ["Lane", "LanePlan", "Slots", "fair_share", "plan_lanes"]


@dataclass(frozen=True, slots=True)
class Lane:
    """A set of queues that share ``capacity`` slots: one capped queue, or every uncapped
    queue of the worker together."""

    queues: tuple[str, ...]
    capacity: int
    capped: bool

    @property
    def refill(self) -> int:
        """A lane behind claims on its own once half its slots are free (one of two for
        ``exports:2``), whatever the other lanes have free: see :meth:`LanePlan.refill`."""
        return (self.capacity + 1) // 2

    def __str__(self) -> str:
        if self.capped:
            return f"{self.queues[0]}:{self.capacity}"
        return f"{','.join(self.queues)} (sharing {self.capacity})"


@dataclass(frozen=True, slots=True)
class LanePlan:
    """The lanes of one worker, and the per-queue settings it applies."""

    lanes: tuple[Lane, ...]
    #: The time limit of each queue that has one (``AIOTASKQ["QUEUES"]``).
    time_limits: Mapping[str, float]
    #: The size of each queue's own thread pool, for the queues that have one.
    threads: Mapping[str, int]

    @property
    def capacity(self) -> int:
        """The slots of all lanes: ``concurrency``, less the reserve of a worker whose
        queues are all capped and leave some of it unused."""
        return sum(lane.capacity for lane in self.lanes)

    @property
    def refill(self) -> int:
        """With more due tasks waiting, claim again once this many slots are free in the
        lanes that are behind, together: a few, so a batch is worth a round trip, but not so
        many that slots sit idle. Counted over the lanes together, so that four lanes cost
        no more round trips than one queue of the same slots."""
        return max(1, min(10, self.capacity // 20))

    def lane_of(self) -> dict[str, int]:
        """The index of each queue's lane."""
        return {queue: i for i, lane in enumerate(self.lanes) for queue in lane.queues}

    def describe(self, concurrency: int) -> str:
        """One line for the worker's start: each lane and its slots."""
        if not any(lane.capped for lane in self.lanes):
            return f"one lane of {concurrency} slots for every queue"
        unused = concurrency - self.capacity
        return str(self) + (f" ({unused} of {concurrency} unused)" if unused else "")

    def __str__(self) -> str:
        if not any(lane.capped for lane in self.lanes):
            return ",".join(q for lane in self.lanes for q in lane.queues)
        return ", ".join(str(lane) for lane in self.lanes)


def plan_lanes(queues: Sequence[str], caps: Mapping[str, int], concurrency: int) -> LanePlan:
    """The lanes for a worker of ``queues`` (in order) at ``concurrency``. ``caps`` come
    from the command line and win over ``AIOTASKQ["QUEUES"]``.

    Raises:
        InvalidWorkerOptions: a queue that ``QUEUES`` (when set) does not know, a cap that is
            not a positive integer or is given for a queue not in ``queues``, or caps that
            leave no slots for the uncapped queues or exceed ``concurrency``.
    """
    settings = get_settings()
    known = settings.QUEUES
    for queue in queues:
        if not settings.known_queue(queue):
            raise InvalidWorkerOptions(
                f'the queue {queue!r} is not in AIOTASKQ["QUEUES"] (known: '
                f"{', '.join(sorted({*known, settings.DEFAULT_QUEUE}))}): nothing can be "
                "enqueued to it; add it there to serve it"
            )
    if stray := sorted(set(caps) - set(queues)):
        raise InvalidWorkerOptions(
            f"caps are given for {', '.join(map(repr, stray))}, which this worker does not "
            f"serve (it serves {', '.join(queues)}): add the queue to its queues or drop the cap"
        )
    lanes: list[Lane] = []
    shared: list[str] = []
    sources: list[str] = []
    for queue in queues:
        options = known.get(queue, QueueSettings())
        cap = caps.get(queue, options.concurrency)
        if cap is None:
            shared.append(queue)
            continue
        if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= MAX_SLOTS:
            raise InvalidWorkerOptions(
                f"the cap of queue {queue!r} must be a positive integer (at most "
                f"{MAX_SLOTS:,}), got {shown(cap)}"
            )
        lanes.append(Lane((queue,), cap, capped=True))
        origin = "" if queue in caps else ' (AIOTASKQ["QUEUES"])'
        sources.append(f"{queue}:{cap}{origin}")
    reserved = sum(lane.capacity for lane in lanes)
    if reserved > concurrency or (shared and reserved >= concurrency):
        left = f"; the uncapped {', '.join(shared)} would have no slots" if shared else ""
        raise InvalidWorkerOptions(
            f"the queue caps {' + '.join(sources)} add up to {reserved}, "
            f"{'more than' if reserved > concurrency else 'all of'} the concurrency of "
            f"{concurrency}{left}: raise the concurrency or lower the caps"
        )
    if shared:
        lanes.append(Lane(tuple(shared), concurrency - reserved, capped=False))
    time_limits: dict[str, float] = {}
    threads: dict[str, int] = {}
    for queue in queues:
        options = known.get(queue, QueueSettings())
        if options.time_limit is not None:
            time_limits[queue] = options.time_limit
        if options.threads is not None:
            threads[queue] = options.threads
    return LanePlan(lanes=tuple(lanes), time_limits=time_limits, threads=threads)


def fair_share(wants: Sequence[int], budget: int) -> list[int]:
    """Split ``budget`` slots between lanes that want ``wants``: all they want when it
    fits, else the same share each (water-filling: a lane that wants less than its share
    leaves the rest to the others), the odd slots to the first lanes. Never more than a
    lane wants, never more than ``budget`` in all; every lane that wants some gets some
    while the budget lasts."""
    if budget <= 0:
        return [0] * len(wants)
    if sum(wants) <= budget:
        return list(wants)
    given = [0] * len(wants)
    left = budget
    hungry = [i for i, want in enumerate(wants) if want > 0]
    while left > 0 and hungry:
        share = left // len(hungry)
        if share == 0:
            for i in hungry[:left]:
                given[i] += 1
            break
        for i in hungry:
            take = min(share, wants[i] - given[i])
            given[i] += take
            left -= take
        hungry = [i for i in hungry if given[i] < wants[i]]
    return given


class Slots:
    """The slots in use in each lane of a worker; the executor takes and frees them."""

    def __init__(self, plan: LanePlan) -> None:
        self.plan = plan
        self._lane_of = plan.lane_of()
        self.used = [0] * len(plan.lanes)

    def lane(self, queue: str) -> int:
        return self._lane_of[queue]

    def take(self, queue: str) -> None:
        self.used[self._lane_of[queue]] += 1

    def free_one(self, queue: str) -> None:
        self.used[self._lane_of[queue]] -= 1

    def free(self, lane: int) -> int:
        return self.plan.lanes[lane].capacity - self.used[lane]

    def demands(self, budget: int) -> list[int]:
        """What each lane asks of the next claim: its free slots, shared out fairly when
        the ``budget`` (the worker's free slots after backpressure, at most one batch) is
        smaller."""
        wants = [max(0, self.free(i)) for i in range(len(self.plan.lanes))]
        return fair_share(wants, budget)
