from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="Export",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("path", models.CharField(help_text="Where the CSV file is written.", max_length=500)),
                ("status", models.CharField(choices=[("running", "Running"), ("done", "Done")], default="running", max_length=16)),
                ("task_id", models.UUIDField(blank=True, help_text="The export's aiotaskq task.", null=True)),
                ("rows", models.PositiveIntegerField(default=0, help_text="Deliveries written, when done.")),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
            ],
        ),
    ]
