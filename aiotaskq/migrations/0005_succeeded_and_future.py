from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    # The index is built CONCURRENTLY: the table is a hot queue, and a plain CREATE INDEX
    # would block enqueues and claims while it reads the whole table.
    atomic = False

    dependencies = [
        ("aiotaskq", "0004_admin_groups"),
    ]

    operations = [
        # The admin's Succeeded view (kept results; a proxy: no table, no "add")
        migrations.CreateModel(
            name="SucceededTask",
            fields=[],
            options={
                "verbose_name": "succeeded task",
                "default_permissions": ("view", "change", "delete"),
                "proxy": True,
                "indexes": [],
                "constraints": [],
            },
            bases=("aiotaskq.task",),
        ),
        # The admin's Future view: queued rows by execute_at, over every queue.
        AddIndexConcurrently(
            model_name="task",
            index=models.Index(
                condition=models.Q(("state", "queued")),
                fields=["execute_at"],
                name="aiotaskq_task_queued_eta",
            ),
        ),
    ]
