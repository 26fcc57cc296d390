from django.db import migrations, models

# The count of failed attempts moves out of the errors array into its own column, so that the
# array can keep only the first and the last errors of a task retried without limit.


class Migration(migrations.Migration):
    dependencies = [
        ("aiotaskq", "0006_table_storage"),
    ]

    operations = [
        migrations.AddField(
            model_name="task",
            name="retries",
            field=models.IntegerField(
                db_default=0,
                help_text="Failed attempts so far (the retries spent), lost ones included.",
            ),
        ),
        migrations.AlterField(
            model_name="task",
            name="errors",
            field=models.JSONField(
                db_default=models.Value([], models.JSONField()),
                help_text=(
                    "One entry per failed attempt (exception type, message, traceback): the "
                    "first 10 and the last 10 of them."
                ),
            ),
        ),
        migrations.RunSQL(
            sql="UPDATE aiotaskq_task SET retries = jsonb_array_length(errors) WHERE errors <> '[]'",
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
