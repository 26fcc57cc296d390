"""The task table. The models own the DDL; the worker talks to the table in plain SQL
(``aiotaskq/db/queries.sql``) and never through these models."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar, TypeVar

from django.db import models
from django.db.models.expressions import CombinedExpression
from django.db.models.functions import Now

from .conf import get_settings


class State(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    FAILED = "failed", "Failed"
    #: Only tasks that keep their result (Django's tasks framework) reach it; ours are deleted.
    SUCCEEDED = "succeeded", "Succeeded"


class Task(models.Model):
    """One enqueued call of a task.

    A row is ``queued`` until a worker claims it (*ready* once it is due and has its place,
    ``pos``, in its queue; a future task gets its place when it falls due), ``running``
    while a worker holds its lease (Active while ``alive_at`` is fresh, Dirty once it is
    older than ``DIRTY_AFTER``), and ``failed`` when its last attempt raised. A task that
    succeeds is deleted, unless it keeps its result (``succeeded``, until ``expires_at``;
    Django's tasks framework).

    The table is partitioned by a ``segment`` column that the model leaves out (migration
    0009, docs/storage.md): a ring of two partitions takes new rows in turn and workers
    rotate them, moving what still lives to a cold partition. The database fills it in;
    every query through the model reads all partitions.
    """

    id = models.UUIDField(primary_key=True)
    name = models.CharField(max_length=255, help_text="The registered task name.")
    queue = models.CharField(max_length=63, db_default="default")
    priority = models.IntegerField(db_default=0, help_text="Higher runs first.")
    state = models.CharField(max_length=16, choices=State.choices, db_default=State.QUEUED)
    args = models.JSONField(db_default=models.Value([], models.JSONField()))
    kwargs = models.JSONField(db_default=models.Value({}, models.JSONField()))
    created_at = models.DateTimeField(db_default=Now())
    execute_at = models.DateTimeField(db_default=Now(), help_text="Not run before this time.")
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="Dropped if not started by then."
    )
    attempt = models.IntegerField(db_default=0, help_text="Attempts started so far.")
    time_limit = models.FloatField(
        null=True, blank=True, help_text="Seconds an attempt may run (overrides the task's)."
    )
    worker_id = models.CharField(
        max_length=255, null=True, blank=True, help_text="The lease holder."
    )
    started_at = models.DateTimeField(null=True, blank=True)
    alive_at = models.DateTimeField(null=True, blank=True, help_text="The last heartbeat.")
    finished_at = models.DateTimeField(null=True, blank=True)
    return_value = models.JSONField(
        null=True, blank=True, help_text="The JSON-normalised return value, when kept."
    )
    pos = models.BigIntegerField(
        null=True,
        blank=True,
        editable=False,
        help_text=(
            "The task's place in its queue while it is ready (queued and due): taken from a "
            "sequence when it becomes ready, empty while it waits for its time."
        ),
    )
    retries = models.IntegerField(
        db_default=0, help_text="Failed attempts so far (the retries spent), lost ones included."
    )
    errors = models.JSONField(
        db_default=models.Value([], models.JSONField()),
        help_text=(
            "One entry per failed attempt (exception type, message, traceback): the first 10 "
            "and the last 10 of them."
        ),
    )

    checkpoint = models.JSONField(
        null=True,
        blank=True,
        help_text=(
            "What the task last saved with save_checkpoint(): kept across retries, rescue and "
            "re-runs, so that the next attempt resumes from it; gone with the row on success."
        ),
    )
    progress = models.JSONField(
        null=True,
        blank=True,
        help_text=(
            "The last set_progress() of the task (done, total, message, at), written with the "
            "worker's heartbeat."
        ),
    )
    scheduled_for = models.DateTimeField(
        null=True, blank=True, help_text="The tick of the periodic schedule this run is for."
    )
    unique_key = models.TextField(
        null=True,
        blank=True,
        help_text=(
            "The task's unique key (unique_key=..., or @task(unique=True)): while it is "
            "queued or running, another call with this key writes nothing."
        ),
    )
    limit_key = models.TextField(
        null=True,
        blank=True,
        help_text=(
            "The key of the task's limits (max_concurrent, rate_limit), computed at enqueue: "
            "its tasks are claimed only while the key has a free seat and a token."
        ),
    )
    trace = models.JSONField(
        null=True,
        blank=True,
        help_text=(
            "The W3C trace context of the span that enqueued the task (with OpenTelemetry "
            "installed): its first attempt's span continues that trace."
        ),
    )

    class Meta:
        db_table = "aiotaskq_task"
        indexes = [
            # The claim: ready tasks of a queue and priority, in the order they became
            # ready. A claim starts each (queue, priority) range at the worker's mark, past
            # the entries of the tasks it has already taken: under a held xmin horizon those
            # entries cannot be removed, and walking them is what slowed every claim
            # (docs/storage.md).
            # Tasks with a limit key are not in it: they are claimed per key (below).
            models.Index(
                "queue",
                models.F("priority").desc(),
                "pos",
                name="aiotaskq_task_due",
                condition=models.Q(state="queued", pos__isnull=False, limit_key__isnull=True),
            ),
            # Ready tasks with a limit key, per queue, task and key (the limited claim visits
            # the keys one by one, skipping from one to the next), best first within a key.
            models.Index(
                "queue",
                "name",
                "limit_key",
                models.F("priority").desc(),
                "pos",
                name="aiotaskq_task_limited",
                condition=models.Q(state="queued", pos__isnull=False, limit_key__isnull=False),
            ),
            # Running tasks with a limit key: the seats a key has taken.
            models.Index(
                fields=["name", "limit_key"],
                name="aiotaskq_task_seats",
                condition=models.Q(state="running", limit_key__isnull=False),
            ),
            # Ready tasks by place alone: the marks' look at what became ready since their
            # last look (new queues and priorities, late commits), a range of positions.
            # "pos > 0" holds for every position (the sequence starts at 1); it is in the
            # predicate so that only statements that say it (ready_between) can use this
            # index: the claim, which could, would then walk every queue's entries in it.
            models.Index(
                fields=["pos"],
                name="aiotaskq_task_ready",
                condition=models.Q(state="queued", pos__gt=0, limit_key__isnull=True),
            ),
            # A periodic schedule's runs still queued or running: overlap="skip" looks here.
            # Only those rows enter it.
            models.Index(
                fields=["name"],
                name="aiotaskq_task_periodic",
                condition=models.Q(scheduled_for__isnull=False, state__in=["queued", "running"]),
            ),
            # Pruning kept results once they expire.
            models.Index(
                fields=["expires_at"],
                name="aiotaskq_task_result_expiry",
                condition=models.Q(state="succeeded"),
            ),
            # Tasks waiting for their time, per queue: the worker's "next_eta" and "promote".
            # Only these rows enter it: nothing on the way of a task due at once.
            models.Index(
                fields=["queue", "execute_at"],
                name="aiotaskq_task_eta",
                condition=models.Q(state="queued", pos__isnull=True),
            ),
            # The admin's Future view over every queue, the next first.
            models.Index(
                fields=["execute_at"],
                name="aiotaskq_task_queued_eta",
                condition=models.Q(state="queued", pos__isnull=True),
            ),
            # The admin's Failed view, newest first, without reading the queued rows. Only
            # failed rows enter it: nothing on the way of a task that succeeds.
            models.Index(
                fields=["finished_at"],
                name="aiotaskq_task_failed",
                condition=models.Q(state="failed"),
            ),
            # The admin's Active and Dirty views. "started_at IS NOT NULL" holds for every
            # running row (the claim sets both); it is in the predicate so that the worker's
            # statements, which say only "state = 'running'", cannot use this index: when they
            # could, the planner took it for heartbeat and ack, which then walked every
            # running row instead of looking ids up by primary key. alive_at stays out of
            # every index: the heartbeat remains a HOT update.
            models.Index(
                fields=["started_at"],
                name="aiotaskq_task_running",
                condition=models.Q(state="running", started_at__isnull=False),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(state__in=["queued", "running", "failed", "succeeded"]),
                name="aiotaskq_task_state_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} [{self.id}]"


# The admin's groups, the same as `aiotaskq status` (the "status" statement of queries.sql).
# Each is a proxy of Task whose default manager holds only that group's rows, compared with
# the database's clock at query time. Their permissions are the admin's: "view"; "change" to
# run Failed, Dirty or Succeeded tasks again; "delete" to delete them, or to revoke Pending,
# Future and Active ones. Nothing adds a task through the admin, so there is no "add".

_T = TypeVar("_T", bound=Task)


def dirty_before() -> CombinedExpression:
    """The database's now minus ``DIRTY_AFTER``: a running task last seen before it is Dirty."""
    return Now() - dt.timedelta(seconds=get_settings().DIRTY_AFTER)


class GroupManager(models.Manager[_T]):
    """The rows of one group."""

    def condition(self) -> models.Q:
        raise NotImplementedError

    def get_queryset(self) -> models.QuerySet[_T]:
        return super().get_queryset().filter(self.condition())


class PendingManager(GroupManager["PendingTask"]):
    def condition(self) -> models.Q:
        return models.Q(state=State.QUEUED, execute_at__lte=Now())


class FutureManager(GroupManager["FutureTask"]):
    def condition(self) -> models.Q:
        # A future task has no place yet ("pos" is taken when it falls due); saying so lets
        # the query use aiotaskq_task_queued_eta.
        return models.Q(state=State.QUEUED, pos__isnull=True, execute_at__gt=Now())


class ActiveManager(GroupManager["ActiveTask"]):
    def condition(self) -> models.Q:
        # "started_at IS NOT NULL" is true of every running row; saying it lets the query
        # use the index aiotaskq_task_running (see Task.Meta.indexes).
        return models.Q(state=State.RUNNING, started_at__isnull=False, alive_at__gte=dirty_before())


class DirtyManager(GroupManager["DirtyTask"]):
    def condition(self) -> models.Q:
        return models.Q(state=State.RUNNING, started_at__isnull=False, alive_at__lt=dirty_before())


class FailedManager(GroupManager["FailedTask"]):
    def condition(self) -> models.Q:
        return models.Q(state=State.FAILED)


class SucceededManager(GroupManager["SucceededTask"]):
    def condition(self) -> models.Q:
        return models.Q(state=State.SUCCEEDED)


class PendingTask(Task):
    """Queued and due: waiting for a worker of its queue."""

    objects: ClassVar[PendingManager] = PendingManager()

    class Meta:
        proxy = True
        verbose_name = "pending task"
        default_permissions = ("view", "delete")


class FutureTask(Task):
    """Queued for a later time (a countdown, an ETA or a retry's delay)."""

    objects: ClassVar[FutureManager] = FutureManager()

    class Meta:
        proxy = True
        verbose_name = "future task"
        default_permissions = ("view", "delete")


class ActiveTask(Task):
    """Running, and its worker's heartbeat is fresh."""

    objects: ClassVar[ActiveManager] = ActiveManager()

    class Meta:
        proxy = True
        verbose_name = "active task"
        default_permissions = ("view", "delete")


class DirtyTask(Task):
    """Running, but its worker's heartbeat stopped longer than ``DIRTY_AFTER`` ago."""

    objects: ClassVar[DirtyManager] = DirtyManager()

    class Meta:
        proxy = True
        verbose_name = "dirty task"
        default_permissions = ("view", "change", "delete")


class FailedTask(Task):
    """Failed for good: kept with every attempt's error, to run again or delete."""

    objects: ClassVar[FailedManager] = FailedManager()

    class Meta:
        proxy = True
        verbose_name = "failed task"
        default_permissions = ("view", "change", "delete")


class SucceededTask(Task):
    """Succeeded and kept with its return value until ``expires_at`` (the result retention
    of Django's tasks framework); aiotaskq's own tasks are deleted when they succeed."""

    objects: ClassVar[SucceededManager] = SucceededManager()

    class Meta:
        proxy = True
        verbose_name = "succeeded task"
        default_permissions = ("view", "change", "delete")


class TaskSummary(Task):
    """Counts per queue and task name (the admin's summary page); every row."""

    class Meta:
        proxy = True
        verbose_name = "summary by queue and task"
        verbose_name_plural = "summary by queue and task"
        default_permissions = ("view",)


class Schedule(models.Model):
    """One periodic schedule (``@periodic``): the last tick that was enqueued, and whether it
    is paused. Schedules are defined in code; a row is made when a worker first sees one.
    Every worker that knows the schedule may enqueue a due tick: it moves ``last_tick`` on
    with a compare-and-set in the statement that inserts the task, so each tick runs once."""

    name = models.CharField(max_length=200, primary_key=True, help_text="The schedule's id.")
    task = models.CharField(max_length=255, help_text="The task it enqueues.")
    last_tick = models.DateTimeField(
        null=True,
        blank=True,
        help_text=(
            "Ticks up to this one are done with (enqueued, skipped, or before the schedule "
            "was first seen)."
        ),
    )
    last_run = models.DateTimeField(
        null=True, blank=True, help_text="The last tick whose task was enqueued."
    )
    paused = models.BooleanField(default=False, db_default=False)
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "aiotaskq_schedule"
        # Defined in code, never added by hand; "change" is to pause, resume and run now.
        default_permissions = ("view", "change", "delete")

    def __str__(self) -> str:
        return self.name


class Worker(models.Model):
    """A worker process, as its heartbeat last wrote it: alive while ``alive_at`` is more
    recent than ``DIRTY_AFTER``. A worker that stops cleanly deletes its row; a killed one
    stays, lost, until the pruner deletes it a day later (the Dirty view names it)."""

    id = models.CharField(max_length=255, primary_key=True, help_text="The worker's id.")
    host = models.CharField(max_length=255)
    pid = models.IntegerField()
    queues = models.JSONField(
        help_text=(
            "The queues it takes tasks from, in order, each with its cap (null: the queue "
            "shares the slots no cap reserves)."
        )
    )
    concurrency = models.IntegerField(help_text="Tasks it runs at once, at most.")
    in_flight = models.IntegerField(db_default=0, help_text="Tasks it held at its last beat.")
    started_at = models.DateTimeField()
    alive_at = models.DateTimeField(db_default=Now(), help_text="Its last heartbeat.")

    class Meta:
        db_table = "aiotaskq_worker"
        # Written by the workers only: the view lists them.
        default_permissions = ("view",)

    def __str__(self) -> str:
        return self.id
