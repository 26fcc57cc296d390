from django.db import migrations, models

# A ready task (queued and due) gets a place in its queue, "pos", from a sequence, at the
# moment it becomes ready: at enqueue, or when a future task, a retry or a requeued task falls
# due. Claims read each (queue, priority) in that order from the worker's mark on, so that
# they never walk the index entries of tasks already taken; under a transaction that holds the
# xmin horizon those entries stay, and walking them slowed every claim (docs/storage.md).
# Future tasks keep pos empty until a worker promotes them, so the indexes of ETAs hold only
# them.

FORWARD = """
CREATE SEQUENCE aiotaskq_task_pos AS bigint;
UPDATE aiotaskq_task t SET pos = r.pos
FROM (SELECT id, nextval('aiotaskq_task_pos') AS pos FROM (
          SELECT id FROM aiotaskq_task
          WHERE state = 'queued' AND execute_at <= now()
          ORDER BY priority DESC, execute_at) AS ordered) AS r
WHERE t.id = r.id;
ALTER TABLE aiotaskq_task ALTER COLUMN pos SET DEFAULT nextval('aiotaskq_task_pos');
ALTER SEQUENCE aiotaskq_task_pos OWNED BY aiotaskq_task.pos;
-- Every insert takes a place by default (COPY too); a row due later gives it back here.
-- The WHEN clause is evaluated without calling the function, so a task due at once pays
-- for one comparison.
CREATE FUNCTION aiotaskq_task_defer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.pos := NULL;
    RETURN NEW;
END $$;
CREATE TRIGGER aiotaskq_task_defer BEFORE INSERT ON aiotaskq_task
FOR EACH ROW WHEN (NEW.pos IS NOT NULL AND NEW.execute_at > statement_timestamp())
EXECUTE FUNCTION aiotaskq_task_defer();
"""

BACKWARD = """
DROP TRIGGER aiotaskq_task_defer ON aiotaskq_task;
DROP FUNCTION aiotaskq_task_defer();
ALTER TABLE aiotaskq_task ALTER COLUMN pos DROP DEFAULT;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("aiotaskq", "0007_retries"),
    ]

    operations = [
        migrations.AddField(
            model_name="task",
            name="pos",
            field=models.BigIntegerField(
                blank=True,
                editable=False,
                help_text=(
                    "The task's place in its queue while it is ready (queued and due): taken "
                    "from a sequence when it becomes ready, empty while it waits for its time."
                ),
                null=True,
            ),
        ),
        migrations.RemoveIndex(model_name="task", name="aiotaskq_task_due"),
        migrations.RemoveIndex(model_name="task", name="aiotaskq_task_eta"),
        migrations.RemoveIndex(model_name="task", name="aiotaskq_task_queued_eta"),
        migrations.RunSQL(sql=FORWARD, reverse_sql=BACKWARD),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                models.F("queue"),
                models.F("priority").desc(),
                models.F("pos"),
                condition=models.Q(("pos__isnull", False), ("state", "queued")),
                name="aiotaskq_task_due",
            ),
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                condition=models.Q(("pos__gt", 0), ("state", "queued")),
                fields=["pos"],
                name="aiotaskq_task_ready",
            ),
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                condition=models.Q(("pos__isnull", True), ("state", "queued")),
                fields=["queue", "execute_at"],
                name="aiotaskq_task_eta",
            ),
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                condition=models.Q(("pos__isnull", True), ("state", "queued")),
                fields=["execute_at"],
                name="aiotaskq_task_queued_eta",
            ),
        ),
    ]
