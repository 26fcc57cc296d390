from django.db import migrations, models

# Long jobs (docs/long-jobs.md): a task's checkpoint and progress
# live in its row, and those waiting for a task to finish are listed in a small table of
# their own, so that the worker announces only the completions somebody waits for.
#
# aiotaskq_waiter holds one row per task and waiting process ("waiter" names the process).
# It is UNLOGGED: a waiter is a process's live interest, worth nothing after a crash of the
# server (its contents are then gone, and a waiter's periodic look at its tasks still finds
# their end). Waiting never writes the task table.
#
# aiotaskq_announce(ids) is called by the statements that end tasks (ack, succeed, fail)
# once they have locked their rows, with the ids they ended: it notifies "aiotaskq/done" with
# each id that somebody waits for. It is VOLATILE, so its look at the waiters takes a snapshot
# of its own, after the ending statement's rows are locked: a waiter that registered before
# that look is announced to, and one that registered after it finds the row locked when it
# reads it (FOR KEY SHARE) and waits for the end to commit. Either way no end is missed.

CREATE = """
CREATE UNLOGGED TABLE aiotaskq_waiter (
    task_id uuid NOT NULL,
    waiter text NOT NULL,
    since timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX aiotaskq_waiter_task ON aiotaskq_waiter (task_id);
CREATE INDEX aiotaskq_waiter_waiter ON aiotaskq_waiter (waiter);
CREATE FUNCTION aiotaskq_announce(ids uuid[]) RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    n integer;
BEGIN
    IF ids IS NULL OR cardinality(ids) = 0 THEN
        RETURN 0;
    END IF;
    SELECT count(pg_notify('aiotaskq/done', w.task_id::text)) INTO n
    FROM (SELECT DISTINCT task_id FROM aiotaskq_waiter WHERE task_id = ANY(ids)) AS w;
    RETURN n;
END
$$;
"""

DROP = """
DROP FUNCTION aiotaskq_announce(uuid[]);
DROP TABLE aiotaskq_waiter;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("aiotaskq", "0009_rotating_segments"),
    ]

    operations = [
        migrations.AddField(
            model_name="task",
            name="checkpoint",
            field=models.JSONField(
                blank=True,
                null=True,
                help_text=(
                    "What the task last saved with save_checkpoint(): kept across retries, "
                    "rescue and re-runs, so that the next attempt resumes from it; gone with "
                    "the row on success."
                ),
            ),
        ),
        migrations.AddField(
            model_name="task",
            name="progress",
            field=models.JSONField(
                blank=True,
                null=True,
                help_text=(
                    "The last set_progress() of the task (done, total, message, at), written "
                    "with the worker's heartbeat."
                ),
            ),
        ),
        migrations.RunSQL(sql=CREATE, reverse_sql=DROP),
    ]
