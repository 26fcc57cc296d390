import django.db.models.functions.datetime
from django.db import migrations, models

# The registry of workers (aiotaskq workers, the admin's Workers view, aiotaskq health): one
# row per worker process, written by its heartbeat every beat (an upsert, so a row deleted by
# hand or by the pruner comes back at the next beat). Only the worker itself writes its row,
# so no two statements ever wait for one another on it; alive_at is in no index, so a beat is
# a HOT update, and the fillfactor leaves room on the page for it. A clean stop deletes the
# row; a killed worker's row stays, lost, until the pruner deletes it a day later.


class Migration(migrations.Migration):
    dependencies = [
        ("aiotaskq", "0013_limits"),
    ]

    operations = [
        migrations.CreateModel(
            name="Worker",
            fields=[
                (
                    "id",
                    models.CharField(
                        help_text="The worker's id.",
                        max_length=255,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                ("host", models.CharField(max_length=255)),
                ("pid", models.IntegerField()),
                (
                    "queues",
                    models.JSONField(
                        help_text=(
                            "The queues it takes tasks from, in order, each with its cap "
                            "(null: the queue shares the slots no cap reserves)."
                        )
                    ),
                ),
                (
                    "concurrency",
                    models.IntegerField(help_text="Tasks it runs at once, at most."),
                ),
                (
                    "in_flight",
                    models.IntegerField(db_default=0, help_text="Tasks it held at its last beat."),
                ),
                ("started_at", models.DateTimeField()),
                (
                    "alive_at",
                    models.DateTimeField(
                        db_default=django.db.models.functions.datetime.Now(),
                        help_text="Its last heartbeat.",
                    ),
                ),
            ],
            options={
                "db_table": "aiotaskq_worker",
                "default_permissions": ("view",),
            },
        ),
        migrations.RunSQL(
            sql="ALTER TABLE aiotaskq_worker SET (fillfactor = 50)",
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
