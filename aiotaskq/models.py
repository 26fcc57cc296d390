"""The task table. The models own the DDL; the worker talks to the table in plain SQL
(``aiotaskq/db/queries.sql``) and never through these models."""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Now


class State(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    FAILED = "failed", "Failed"
    #: Only tasks that keep their result (Django's tasks framework) reach it; ours are deleted.
    SUCCEEDED = "succeeded", "Succeeded"


class Task(models.Model):
    """One enqueued call of a task.

    A row is ``queued`` until a worker claims it, ``running`` while a worker holds its lease
    (Active while ``alive_at`` is fresh, Dirty once it is older than ``DIRTY_AFTER``), and
    ``failed`` when its last attempt raised. A task that succeeds is deleted, unless it keeps
    its result (``succeeded``, until ``expires_at``; Django's tasks framework).
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
    errors = models.JSONField(
        db_default=models.Value([], models.JSONField()),
        help_text="One entry per failed attempt: exception type, message, traceback.",
    )

    class Meta:
        db_table = "aiotaskq_task"
        indexes = [
            # The claim: due queued tasks of a queue, highest priority first, then oldest.
            models.Index(
                "queue",
                models.F("priority").desc(),
                "execute_at",
                name="aiotaskq_task_due",
                condition=models.Q(state="queued"),
            ),
            # Pruning kept results once they expire.
            models.Index(
                fields=["expires_at"],
                name="aiotaskq_task_result_expiry",
                condition=models.Q(state="succeeded"),
            ),
            # The next ETA of a queue, and the Pending/Future counts.
            models.Index(
                fields=["queue", "execute_at"],
                name="aiotaskq_task_eta",
                condition=models.Q(state="queued"),
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
