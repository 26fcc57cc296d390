from django.db import migrations

# A queue table is small and churns: every row is inserted, updated a few times and deleted
# within seconds. PostgreSQL's defaults wait for a fifth of the table to be dead before
# autovacuum runs, which for a table that is often near empty means a long tail of dead rows
# that claims and admin lists walk through. These settings vacuum and analyze it after a
# fixed number of changes instead, without the cost-based pauses (the table is small), and
# leave a tenth of each page free so that heartbeats (which change no indexed column) are
# HOT updates that stay on the row's page.
STORAGE = (
    "fillfactor = 90",
    "autovacuum_vacuum_scale_factor = 0",
    "autovacuum_vacuum_threshold = 5000",
    "autovacuum_vacuum_insert_scale_factor = 0",
    "autovacuum_vacuum_insert_threshold = 20000",
    "autovacuum_analyze_scale_factor = 0",
    "autovacuum_analyze_threshold = 5000",
    "autovacuum_vacuum_cost_delay = 0",
)


class Migration(migrations.Migration):
    dependencies = [
        ("aiotaskq", "0005_succeeded_and_future"),
    ]

    operations = [
        migrations.RunSQL(
            sql=f"ALTER TABLE aiotaskq_task SET ({', '.join(STORAGE)})",
            reverse_sql="ALTER TABLE aiotaskq_task RESET ("
            + ", ".join(option.split(" = ")[0] for option in STORAGE)
            + ")",
        ),
    ]
