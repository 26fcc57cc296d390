from django.db import models


class Execution(models.Model):
    """The ledger: one row per execution of a test task, written by the task itself."""

    label = models.CharField(max_length=200)
    task_id = models.UUIDField(null=True)
    pid = models.IntegerField()
    value = models.JSONField(null=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["label"])]
