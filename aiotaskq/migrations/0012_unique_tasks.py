from django.db import migrations, models

# Unique tasks (docs/unique.md): while a task holds a unique key (queued, or running with a
# fresh heartbeat), enqueueing another of that task and key writes nothing and answers with
# the holder's id; with on_conflict="replace" the queued holder takes the new call's
# arguments and run time instead.
#
# The key is enforced by the primary key of a small table of its own, aiotaskq_unique (task
# name, key, holder): the task table is partitioned by segment (0009), and a unique index of a
# partitioned table must hold the partition key, which would let one key live once per
# segment. A key row is never released by the statements that end, retry, rescue or release
# a task: those stay as they were and never wait for it. It is taken over lazily instead: an
# enqueue that finds the key held looks at the holder, and takes the key if the holder is no
# longer queued or running. The worker's pruner deletes the rows of holders that are gone.
#
# The look at the holder must see what has committed up to the moment the key row is locked,
# or two producers could each find the other's fresh task invisible and both take the key. A
# statement's snapshot is older than that; in READ COMMITTED each statement of a VOLATILE
# function takes its own (the functions here are PL/pgSQL, which is never inlined into the
# calling statement). So the enqueue of keyed tasks is a function: lock the key row, then
# look at the holder in a statement of its own. Keys nobody holds (the usual case) are
# taken, and their tasks inserted, in two set-based statements; only the keys that conflict
# go one by one, in the order given, so several rows of one key in a call answer as calls
# one after another would. Callers send rows in key order, so that two batches lock the keys
# they share in the same order and do not deadlock.

CREATE = r"""
CREATE TABLE aiotaskq_unique (
    name text NOT NULL,
    key text NOT NULL,
    task_id uuid NOT NULL,
    since timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, key)
) WITH (fillfactor = 80);

-- Whether the task holds its key: queued and not expired, or running. With _dirty_after, a
-- running task holds it only while its heartbeat is younger than that: a Dirty task of an
-- on_dirty="keep" name waits for a person, and a new call may run meanwhile. Without (NULL:
-- on_dirty="retry", whose Dirty tasks the workers queue again), a running task holds it.
CREATE FUNCTION aiotaskq_unique_live(_id uuid, _dirty_after float8) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN EXISTS (
        SELECT 1 FROM aiotaskq_task t
        WHERE t.id = _id
          AND ((t.state = 'queued'
                AND (t.expires_at IS NULL OR t.expires_at > statement_timestamp()))
               OR (t.state = 'running'
                   AND (_dirty_after IS NULL OR t.alive_at >= statement_timestamp()
                                                - make_interval(secs => _dirty_after)))));
END
$$;

-- Whether the task has ended for good: gone (succeeded, revoked, deleted, expired), failed, or
-- kept as succeeded. Only its key rows are pruned: a failed task run again by hand takes its
-- key back first (aiotaskq_unique_retake).
CREATE FUNCTION aiotaskq_unique_ended(_id uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN NOT EXISTS (
        SELECT 1 FROM aiotaskq_task t WHERE t.id = _id AND t.state IN ('queued', 'running'));
END
$$;

-- The key's row, locked until the caller's transaction ends: returns its holder, or _id if
-- the key was free and _id now holds it. Loops only when the row is deleted (pruned) between
-- the failed insert and the lock, or inserted between the empty read and the insert.
CREATE FUNCTION aiotaskq_unique_hold(_name text, _key text, _id uuid) RETURNS uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    held uuid;
BEGIN
    LOOP
        SELECT u.task_id INTO held FROM aiotaskq_unique u
        WHERE u.name = _name AND u.key = _key FOR UPDATE;
        IF FOUND THEN
            RETURN held;
        END IF;
        INSERT INTO aiotaskq_unique (name, key, task_id) VALUES (_name, _key, _id)
        ON CONFLICT DO NOTHING;
        IF FOUND THEN
            RETURN _id;
        END IF;
    END LOOP;
END
$$;

-- Enqueue keyed tasks (the arrays of the "enqueue" statement, plus each row's key and
-- whether it replaces). One row back per row in: the id that holds the key afterwards, and
-- what happened: 'new' (this row was inserted), 'kept' (a live task holds the key; nothing
-- written) or 'replaced' (the queued holder took this row's arguments, run time, queue,
-- priority, expiry and time limit). A replace finding the holder running inserts this row
-- and moves the key to it: a running task is never changed.
CREATE FUNCTION aiotaskq_enqueue_unique(
    _ids uuid[], _names text[], _queues text[], _priorities int[], _args text[],
    _kwargs text[], _etas timestamptz[], _countdowns float8[], _expires_ats timestamptz[],
    _expires_ins float8[], _time_limits float8[], _keys text[], _replaces boolean[],
    _dirty_afters float8[], _limit_keys text[]
) RETURNS TABLE (asked uuid, holder uuid, outcome text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    kept_ids uuid[];
    kept_by uuid[];
    won uuid[];
    r record;
    held uuid;
    run_at timestamptz;
BEGIN
    -- In one statement, set-based:
    -- 1. Calls that find their key held by a live task, of keys no call here replaces: they
    --    are answered with that task, without a lock (at this statement's snapshot that task
    --    held the key, and nothing here changes it). The conditions of aiotaskq_unique_live.
    -- 2. Keys nobody holds: taken, and their tasks inserted (of several rows of one key, the
    --    first takes it).
    WITH x AS MATERIALIZED (
        SELECT * FROM unnest(_ids, _names, _keys, _replaces, _dirty_afters) WITH ORDINALITY
             AS x(id, name, key, replace, dirty_after, n)
    ),
    quiet AS (
        SELECT x.name, x.key FROM x GROUP BY x.name, x.key HAVING NOT bool_or(x.replace)
    ),
    kept AS MATERIALIZED (
        SELECT x.id, u.task_id AS holder
        FROM x
        JOIN quiet ON quiet.name = x.name AND quiet.key = x.key
        JOIN aiotaskq_unique u ON u.name = x.name AND u.key = x.key
        JOIN aiotaskq_task t ON t.id = u.task_id
        WHERE (t.state = 'queued'
               AND (t.expires_at IS NULL OR t.expires_at > statement_timestamp()))
           OR (t.state = 'running'
               AND (x.dirty_after IS NULL OR t.alive_at >= statement_timestamp()
                                              - make_interval(secs => x.dirty_after)))
    ),
    taken AS (
        INSERT INTO aiotaskq_unique AS u (name, key, task_id)
        SELECT x.name, x.key, x.id FROM x
        WHERE x.id NOT IN (SELECT kept.id FROM kept)
        ORDER BY x.n
        ON CONFLICT DO NOTHING
        RETURNING u.task_id
    ),
    inserted AS (
        INSERT INTO aiotaskq_task (id, name, queue, priority, args, kwargs, time_limit,
                                   created_at, execute_at, expires_at, unique_key, limit_key)
        SELECT t.id, t.name, t.queue, t.priority, t.args::jsonb, t.kwargs::jsonb, t.time_limit,
               statement_timestamp(),
               COALESCE(t.eta, statement_timestamp() + make_interval(secs => t.countdown),
                        statement_timestamp()),
               COALESCE(t.expires_at, statement_timestamp() + make_interval(secs => t.expires_in)),
               t.key, t.limit_key
        FROM unnest(_ids, _names, _queues, _priorities, _args, _kwargs, _etas, _countdowns,
                    _expires_ats, _expires_ins, _time_limits, _keys, _limit_keys)
             AS t(id, name, queue, priority, args, kwargs, eta, countdown, expires_at,
                  expires_in, time_limit, key, limit_key)
        WHERE t.id IN (SELECT taken.task_id FROM taken)
        RETURNING aiotaskq_task.id
    )
    SELECT coalesce((SELECT array_agg(kept.id) FROM kept), '{}'),
           coalesce((SELECT array_agg(kept.holder) FROM kept), '{}'),
           coalesce((SELECT array_agg(inserted.id) FROM inserted), '{}')
    INTO kept_ids, kept_by, won;

    RETURN QUERY SELECT k.id, k.holder, 'kept'::text FROM unnest(kept_ids, kept_by) AS k(id, holder);
    RETURN QUERY SELECT w, w, 'new'::text FROM unnest(won) AS w;
    IF cardinality(kept_ids) + cardinality(won) = cardinality(_ids) THEN
        RETURN;  -- every row answered: the usual case
    END IF;

    -- The others, one by one in the order given: lock the key, then look at its holder (a
    -- row of this call that took the key above is one: its task is visible here).
    FOR r IN
        SELECT t.* FROM unnest(_ids, _names, _queues, _priorities, _args, _kwargs, _etas,
                               _countdowns, _expires_ats, _expires_ins, _time_limits, _keys,
                               _replaces, _dirty_afters, _limit_keys)
             WITH ORDINALITY AS t(id, name, queue, priority, args, kwargs, eta, countdown,
                                  expires_at, expires_in, time_limit, key, replace,
                                  dirty_after, limit_key, n)
        WHERE t.id NOT IN (SELECT unnest(kept_ids || won))
        ORDER BY t.n
    LOOP
        held := aiotaskq_unique_hold(r.name, r.key, r.id);
        run_at := COALESCE(r.eta, statement_timestamp() + make_interval(secs => r.countdown),
                           statement_timestamp());
        IF held <> r.id AND aiotaskq_unique_live(held, r.dirty_after) THEN
            IF NOT r.replace THEN
                RETURN QUERY SELECT r.id, held, 'kept'::text;
                CONTINUE;
            END IF;
            -- Waits for a claim that holds the row, then re-checks: claimed meanwhile, it is
            -- running, and this call becomes a task of its own below.
            UPDATE aiotaskq_task t
            SET queue = r.queue, priority = r.priority, args = r.args::jsonb,
                kwargs = r.kwargs::jsonb, time_limit = r.time_limit, execute_at = run_at,
                limit_key = r.limit_key,
                expires_at = COALESCE(r.expires_at,
                                      statement_timestamp() + make_interval(secs => r.expires_in)),
                pos = CASE WHEN run_at > statement_timestamp() THEN NULL
                           ELSE nextval('aiotaskq_task_pos') END
            WHERE t.id = held AND t.state = 'queued';
            IF FOUND THEN
                RETURN QUERY SELECT r.id, held, 'replaced'::text;
                CONTINUE;
            END IF;
        END IF;
        IF held <> r.id THEN
            UPDATE aiotaskq_unique u SET task_id = r.id, since = now()
            WHERE u.name = r.name AND u.key = r.key;
        END IF;
        INSERT INTO aiotaskq_task (id, name, queue, priority, args, kwargs, time_limit,
                                   created_at, execute_at, expires_at, unique_key, limit_key)
        VALUES (r.id, r.name, r.queue, r.priority, r.args::jsonb, r.kwargs::jsonb, r.time_limit,
                statement_timestamp(), run_at,
                COALESCE(r.expires_at, statement_timestamp() + make_interval(secs => r.expires_in)),
                r.key, r.limit_key);
        RETURN QUERY SELECT r.id, r.id, 'new'::text;
    END LOOP;
END
$$;

-- A Failed or Dirty task run again by hand takes its key back: true if the key is free, held
-- by the task itself, or held by a task that no longer lives; false if another live task
-- holds it (then the task is not run again).
CREATE FUNCTION aiotaskq_unique_retake(_name text, _key text, _id uuid, _dirty_after float8)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    held uuid;
BEGIN
    held := aiotaskq_unique_hold(_name, _key, _id);
    IF held <> _id AND aiotaskq_unique_live(held, _dirty_after) THEN
        RETURN false;
    END IF;
    -- Written even when the task held it already: a pruner that waits for this row then
    -- looks at the holder again, and finds it queued.
    UPDATE aiotaskq_unique u SET task_id = _id, since = now()
    WHERE u.name = _name AND u.key = _key;
    RETURN true;
END
$$;

-- The pruner: up to _batch key rows whose holder has ended (aiotaskq_unique_ended), deleted.
-- Each is locked first (SKIP LOCKED: a row an enqueue holds is left for the next pass, so the
-- pruner never waits), and its holder looked at again in a statement of its own, after the
-- lock: a takeover or a run-again committed before it is seen. Dirty holders are left alone:
-- they may come back, and an enqueue takes their key over when it may.
CREATE FUNCTION aiotaskq_unique_prune(_batch int) RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    c record;
    n integer := 0;
BEGIN
    FOR c IN
        SELECT u.name, u.key, u.task_id FROM aiotaskq_unique u
        WHERE NOT EXISTS (SELECT 1 FROM aiotaskq_task t
                          WHERE t.id = u.task_id AND t.state IN ('queued', 'running'))
        LIMIT _batch
    LOOP
        PERFORM 1 FROM aiotaskq_unique u
        WHERE u.name = c.name AND u.key = c.key AND u.task_id = c.task_id
        FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        IF aiotaskq_unique_ended(c.task_id) THEN
            DELETE FROM aiotaskq_unique u WHERE u.name = c.name AND u.key = c.key;
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END
$$;
"""

DROP = """
DROP FUNCTION aiotaskq_unique_prune(int);
DROP FUNCTION aiotaskq_unique_retake(text, text, uuid, float8);
DROP FUNCTION aiotaskq_enqueue_unique(uuid[], text[], text[], int[], text[], text[],
    timestamptz[], float8[], timestamptz[], float8[], float8[], text[], boolean[], float8[],
    text[]);
DROP FUNCTION aiotaskq_unique_hold(text, text, uuid);
DROP FUNCTION aiotaskq_unique_ended(uuid);
DROP FUNCTION aiotaskq_unique_live(uuid, float8);
DROP TABLE aiotaskq_unique;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("aiotaskq", "0011_schedules"),
    ]

    operations = [
        migrations.AddField(
            model_name="task",
            name="unique_key",
            field=models.TextField(
                blank=True,
                null=True,
                help_text=(
                    "The task's unique key (unique_key=..., or @task(unique=True)): while it "
                    "is queued or running, another call with this key writes nothing."
                ),
            ),
        ),
        # The key of a task's limits (docs/limits.md; migration 0013 claims by it), written
        # by every enqueue statement, this migration's function among them.
        migrations.AddField(
            model_name="task",
            name="limit_key",
            field=models.TextField(
                blank=True,
                null=True,
                help_text=(
                    "The key of the task's limits (max_concurrent, rate_limit), computed at "
                    "enqueue: its tasks are claimed only while the key has a free seat and a "
                    "token."
                ),
            ),
        ),
        migrations.RunSQL(sql=CREATE, reverse_sql=DROP),
    ]
