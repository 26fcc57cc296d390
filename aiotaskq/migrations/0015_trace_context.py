from django.db import migrations, models

# The trace context of the enqueuing span (aiotaskq/tasks/tracing.py): written by every
# enqueue statement when OpenTelemetry is installed and a span is recording, NULL otherwise,
# read by the claim. In no index; a rotation moves it with the row like every column.


class Migration(migrations.Migration):
    dependencies = [
        ("aiotaskq", "0014_workers"),
    ]

    operations = [
        migrations.AddField(
            model_name="task",
            name="trace",
            field=models.JSONField(
                blank=True,
                null=True,
                help_text=(
                    "The W3C trace context of the span that enqueued the task (with "
                    "OpenTelemetry installed): its first attempt's span continues that trace."
                ),
            ),
        ),
    ]
