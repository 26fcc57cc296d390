"""Who wants to hear about events (:class:`Subscription`), what happened (:class:`Event`),
one row per event and subscription that says how telling them went (:class:`Delivery`), and
CSV exports of the deliveries (:class:`Export`).

The ``Delivery`` row is the application's own record of a webhook: aiotaskq deletes a task
row when the task succeeds, so "was it delivered, how often did we try, what did the
receiver answer" lives here, written by the task itself.
"""

from __future__ import annotations

import secrets
import uuid

from django.db import models


def new_secret() -> str:
    return secrets.token_hex(32)


class Subscription(models.Model):
    """An endpoint that receives every event, signed with its own secret."""

    target_url = models.URLField(max_length=500)
    secret = models.CharField(
        max_length=128, default=new_secret, help_text="The HMAC-SHA256 key of X-Signature."
    )
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.target_url


class Event(models.Model):
    """Something that happened, to be told to every active subscription."""

    kind = models.CharField(max_length=100, help_text='For example "order.paid".')
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk}"


class Delivery(models.Model):
    """One event sent to one subscription: pending until delivered, or failed for good."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    # A UUID, not a counter: it is also the Idempotency-Key that receivers see.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries")
    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="deliveries"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0, help_text="Requests sent.")
    retries = models.PositiveIntegerField(
        default=0, help_text="Attempts that failed (network error, 5xx) and were tried again."
    )
    snoozes = models.PositiveIntegerField(
        default=0, help_text="Answers 429 with Retry-After: tried again, no retry spent."
    )
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.FloatField(null=True, blank=True, help_text="Of the last request.")
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "deliveries"
        indexes = [models.Index(fields=["event", "status"], name="delivery_event_status")]

    def __str__(self) -> str:
        return f"{self.event} -> {self.subscription} [{self.status}]"


class Export(models.Model):
    """A CSV file of every delivery, written by the ``export_deliveries`` task; the task saves
    where it is as its checkpoint, so an export that is killed halfway resumes there."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        DONE = "done", "Done"

    path = models.CharField(max_length=500, help_text="Where the CSV file is written.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    task_id = models.UUIDField(null=True, blank=True, help_text="The export's aiotaskq task.")
    rows = models.PositiveIntegerField(default=0, help_text="Deliveries written, when done.")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"export #{self.pk} [{self.status}]"
