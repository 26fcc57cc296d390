from django.db import migrations, models

# Limits per key (docs/limits.md): a task with max_concurrent and/or rate_limit stores the key
# its call computed (limit_key, migration 0012), and its tasks are claimed only while the key
# has a free seat and a token, across every worker.
#
# Tasks with a limit key leave the claim's indexes (aiotaskq_task_due, aiotaskq_task_ready):
# the ordinary claim and the worker's marks never see them, so a backlog held back by a limit
# costs them nothing. They have an index of their own, by queue, task and key, which the
# limited claim (aiotaskq_claim_limited) walks one key at a time.
#
# Seats are not counted in a row of their own (a counter row updated by every claim and every
# end would bloat without end under a held xmin horizon): a key's seats taken are its running
# tasks with a fresh heartbeat, counted in aiotaskq_task_seats. The end of a task (success,
# failure, retry, snooze, release, rescue) frees its seat in the statement that writes it,
# because that statement is what makes it no longer running; a killed worker's seats free
# themselves once its heartbeat is older than DIRTY_AFTER. Only a claim takes seats, and
# claims of one key take turns through a transaction advisory lock on the key, tried without
# waiting (a claim that finds the key busy goes on to the next key). After the lock, the count
# is taken in a statement of its own, whose snapshot sees every claim of the key committed
# before: two claims never both take the last seat.
#
# Rates are a token bucket per key kept as one time (GCRA: the "theoretical arrival time"),
# aiotaskq_limit_rate, written only by the claims that take its tokens (under the same lock)
# and refilled by the clock, not by a process.

#: The ring's partitions, as in 0009.
RING = 2

CREATE = r"""
CREATE TABLE aiotaskq_limit_rate (
    name text NOT NULL,
    key text NOT NULL,
    tat timestamptz NOT NULL,
    PRIMARY KEY (name, key)
) WITH (fillfactor = 70);

-- Claim ready tasks with limit keys for a worker. _queues[i] belongs to lane _lanes[i]
-- (1-based into _demands, each lane's free slots). The limits per task name: _names[j] with
-- _max_running[j] (seats per key, or NULL), _intervals[j] (seconds per token, or NULL) and
-- _bursts[j] (tokens a full bucket holds). The keys are visited in (queue, name, key) order,
-- starting after the one given (_after_*: the last key the worker's previous claim visited),
-- so that turns go round and a busy key never holds back a quiet one: each key takes at most
-- what its limits allow, then the next key's turn comes.
-- Four statements whatever the number of keys. Rows back: the tasks claimed (as "claim"
-- returns them, with their key) and expired ones
-- deleted; then one row without an id that names the last key visited and, in wait_s, in
-- how many seconds to claim again for keys that wait for a token (NULL: none does) or for a
-- seat (1 s: seats of a killed worker come back without a notification).
CREATE FUNCTION aiotaskq_claim_limited(
    _queues text[], _lanes int[], _demands int[], _names text[], _max_running int[],
    _intervals float8[], _bursts int[], _after_queue text, _after_name text, _after_key text,
    _worker_id text, _dirty_after float8
) RETURNS TABLE (
    id uuid, name text, queue text, args text, kwargs text, attempt int, retries int,
    time_limit float8, expired boolean, priority int, pos bigint, checkpoint text,
    scheduled_for timestamptz, limit_key text, wait_s float8
)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    left_ int[] := _demands;
    kq text[];
    kn text[];
    kk text[];
    running_ int[];
    tats timestamptz[];
    want_q text[] := '{}';
    want_n text[] := '{}';
    want_k text[] := '{}';
    want_allow int[] := '{}';
    want_base timestamptz[] := '{}';
    want_interval float8[] := '{}';
    i int;
    j int;
    lane int;
    allow int;
    base timestamptz;
    tokens int;
    wait_ float8;
    last_ int;
BEGIN
    -- 1. The keys with ready tasks of the queues served, in turn order: after the key the
    --    previous claim visited last, then round to it. One index probe per key, skipping
    --    from one key to the next (keys of every queue are walked: a filter on the queue
    --    would keep the index from starting at the previous key; other queues' are dropped).
    WITH RECURSIVE keys AS (
        (SELECT t.queue, t.name, t.limit_key FROM aiotaskq_task t
         WHERE t.state = 'queued' AND t.pos IS NOT NULL AND t.limit_key IS NOT NULL
         ORDER BY t.queue, t.name, t.limit_key
         LIMIT 1)
        UNION ALL
        SELECT n.queue, n.name, n.limit_key
        FROM keys
        CROSS JOIN LATERAL (
            SELECT t.queue, t.name, t.limit_key FROM aiotaskq_task t
            WHERE t.state = 'queued' AND t.pos IS NOT NULL AND t.limit_key IS NOT NULL
              AND (t.queue, t.name, t.limit_key) > (keys.queue, keys.name, keys.limit_key)
            ORDER BY t.queue, t.name, t.limit_key
            LIMIT 1
        ) AS n
    ),
    served AS (
        SELECT keys.queue::text AS queue, keys.name::text AS name, keys.limit_key,
               _after_queue IS NOT NULL
               AND (keys.queue, keys.name, keys.limit_key)
                   <= (_after_queue, _after_name, _after_key) AS later,
               -- Claims of one key take turns, never wait: a key another claim holds now
               -- is left to it.
               pg_try_advisory_xact_lock(
                   hashtextextended(keys.name || chr(31) || keys.limit_key, 7)) AS ours
        FROM keys
        WHERE keys.queue = ANY(_queues)
    )
    SELECT array_agg(queue ORDER BY later, queue, name, limit_key),
           array_agg(name ORDER BY later, queue, name, limit_key),
           array_agg(limit_key ORDER BY later, queue, name, limit_key)
    INTO kq, kn, kk
    FROM served WHERE ours;

    IF kq IS NOT NULL THEN
        -- 2. After the locks, in a statement of its own (its snapshot sees every claim of
        --    these keys that committed before): the seats taken, and the buckets.
        SELECT array_agg((SELECT count(*)::int FROM aiotaskq_task t
                          WHERE t.name = c.name AND t.limit_key = c.key
                            AND t.state = 'running'
                            AND t.alive_at >= statement_timestamp()
                                              - make_interval(secs => _dirty_after))
                         ORDER BY c.n),
               array_agg((SELECT r.tat FROM aiotaskq_limit_rate r
                          WHERE r.name = c.name AND r.key = c.key) ORDER BY c.n)
        INTO running_, tats
        FROM unnest(kn, kk) WITH ORDINALITY AS c(name, key, n);

        -- 3. What each key may take now, in turn, until the lanes have what they asked for.
        FOR i IN 1..cardinality(kq) LOOP
            lane := _lanes[array_position(_queues, kq[i])];
            CONTINUE WHEN left_[lane] <= 0;
            last_ := i;
            j := array_position(_names, kn[i]);
            allow := left_[lane];
            base := NULL;
            IF _max_running[j] IS NOT NULL THEN
                IF running_[i] >= _max_running[j] THEN
                    wait_ := least(coalesce(wait_, 1.0), 1.0);  -- a killed worker's seats
                    CONTINUE;
                END IF;
                allow := least(allow, _max_running[j] - running_[i]);
            END IF;
            IF _intervals[j] IS NOT NULL THEN
                base := greatest(coalesce(tats[i], statement_timestamp()), statement_timestamp());
                -- Tokens in the bucket: a full one holds _bursts[j]; one comes back every
                -- interval after base - (burst - 1) intervals.
                tokens := floor(extract(epoch FROM statement_timestamp() - base)
                                / _intervals[j] + _bursts[j] - 1 + 1e-9)::int + 1;
                IF tokens <= 0 THEN
                    wait_ := least(coalesce(wait_, 'infinity'),
                                   extract(epoch FROM base - statement_timestamp())::float8
                                   - (_bursts[j] - 1) * _intervals[j]);
                    CONTINUE;
                END IF;
                allow := least(allow, tokens);
            END IF;
            left_[lane] := left_[lane] - allow;
            want_q := want_q || kq[i];
            want_n := want_n || kn[i];
            want_k := want_k || kk[i];
            want_allow := want_allow || allow;
            want_base := want_base || base;
            want_interval := want_interval || _intervals[j];
        END LOOP;

        -- 4. Take them, every key in one statement, and spend the tokens taken. Expired rows
        --    (deleted, not run) come back too, and count as taken: never more than the
        --    limits, at worst a token early.
        IF cardinality(want_q) > 0 THEN
            RETURN QUERY
            WITH want AS (
                SELECT * FROM unnest(want_q, want_n, want_k, want_allow, want_base,
                                     want_interval)
                     AS w(queue, name, key, allow, base, interval_)
            ),
            picked AS MATERIALIZED (
                SELECT d.id, d.segment, d.expires_at, want.name, want.key
                FROM want
                CROSS JOIN LATERAL (
                    SELECT t.id, t.segment, t.expires_at FROM aiotaskq_task t
                    WHERE t.state = 'queued' AND t.pos IS NOT NULL AND t.queue = want.queue
                      AND t.name = want.name AND t.limit_key = want.key
                    ORDER BY t.priority DESC, t.pos
                    LIMIT want.allow
                    FOR UPDATE SKIP LOCKED
                ) AS d
            ),
            spent AS (
                INSERT INTO aiotaskq_limit_rate AS r (name, key, tat)
                SELECT want.name, want.key,
                       want.base + make_interval(secs => count(*) * want.interval_)
                FROM picked JOIN want ON want.name = picked.name AND want.key = picked.key
                WHERE want.interval_ IS NOT NULL
                GROUP BY want.name, want.key, want.base, want.interval_
                ON CONFLICT (name, key) DO UPDATE SET tat = excluded.tat
                RETURNING 1
            ),
            expired AS (
                DELETE FROM aiotaskq_task t
                USING picked
                WHERE t.id = picked.id AND t.segment = picked.segment
                  AND picked.expires_at <= now()
                RETURNING t.id, t.name, t.queue, t.priority, t.pos, t.limit_key
            ),
            claimed AS (
                UPDATE aiotaskq_task t
                SET state = 'running', attempt = t.attempt + 1, worker_id = _worker_id,
                    started_at = now(), alive_at = now()
                FROM picked
                WHERE t.id = picked.id AND t.segment = picked.segment
                  AND (picked.expires_at IS NULL OR picked.expires_at > now())
                RETURNING t.id, t.name, t.queue, t.args::text AS args, t.kwargs::text AS kwargs,
                          t.attempt, t.retries, t.time_limit, t.priority, t.pos,
                          t.checkpoint::text AS checkpoint, t.scheduled_for, t.limit_key
            )
            SELECT c.id, c.name::text, c.queue::text, c.args, c.kwargs, c.attempt, c.retries,
                   c.time_limit, false, c.priority, c.pos, c.checkpoint, c.scheduled_for,
                   c.limit_key, NULL::float8
            FROM claimed c
            UNION ALL
            SELECT e.id, e.name::text, e.queue::text, NULL, NULL, NULL, NULL, NULL, true,
                   e.priority, e.pos, NULL, NULL, e.limit_key, NULL
            FROM expired e;
        END IF;
    END IF;
    RETURN QUERY SELECT NULL::uuid, kn[last_], kq[last_], NULL::text, NULL::text, NULL::int,
                        NULL::int, NULL::float8, NULL::boolean, NULL::int, NULL::bigint,
                        NULL::text, NULL::timestamptz, kk[last_],
                        CASE WHEN wait_ IS NOT NULL THEN greatest(wait_, 0.0) END::float8;
END
$$;

-- Buckets that are full again hold nothing a fresh one would not: deleted, a batch at a time.
CREATE FUNCTION aiotaskq_limit_prune(_batch int) RETURNS integer
LANGUAGE sql VOLATILE AS $$
    WITH full_ AS (
        SELECT r.name, r.key FROM aiotaskq_limit_rate r
        WHERE r.tat < now() - interval '1 hour'
        LIMIT _batch
        FOR UPDATE SKIP LOCKED
    ),
    gone AS (
        DELETE FROM aiotaskq_limit_rate r USING full_
        WHERE r.name = full_.name AND r.key = full_.key
        RETURNING 1
    )
    SELECT count(*)::int FROM gone
$$;
"""

DROP = """
DROP FUNCTION aiotaskq_limit_prune(int);
DROP FUNCTION aiotaskq_claim_limited(text[], int[], int[], text[], int[], float8[], int[], text,
    text, text, text, float8);
DROP TABLE aiotaskq_limit_rate;
"""


def name_partition_indexes(apps, schema_editor):
    """Each index of a partition named after the table's index it belongs to
    (aiotaskq_task_ring0_due), as 0009 named them: the new ones of this migration too."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT child.relname, parent.relname, tbl.relname
            FROM pg_inherits h
            JOIN pg_class child ON child.oid = h.inhrelid
            JOIN pg_class parent ON parent.oid = h.inhparent
            JOIN pg_index x ON x.indexrelid = child.oid
            JOIN pg_class tbl ON tbl.oid = x.indrelid
            WHERE parent.relkind = 'I' AND parent.relname LIKE 'aiotaskq_task%%'
              AND parent.relname <> 'aiotaskq_task_pkey'
            """
        )
        for child, parent, table in cursor.fetchall():
            wanted = parent.replace("aiotaskq_task", table, 1)
            if child != wanted:
                cursor.execute(f'ALTER INDEX "{child}" RENAME TO "{wanted}"')


class Migration(migrations.Migration):
    dependencies = [
        ("aiotaskq", "0012_unique_tasks"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="task", name="aiotaskq_task_due"),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                "queue",
                models.F("priority").desc(),
                "pos",
                name="aiotaskq_task_due",
                condition=models.Q(state="queued", pos__isnull=False, limit_key__isnull=True),
            ),
        ),
        migrations.RemoveIndex(model_name="task", name="aiotaskq_task_ready"),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                fields=["pos"],
                name="aiotaskq_task_ready",
                condition=models.Q(state="queued", pos__gt=0, limit_key__isnull=True),
            ),
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                "queue",
                "name",
                "limit_key",
                models.F("priority").desc(),
                "pos",
                name="aiotaskq_task_limited",
                condition=models.Q(state="queued", pos__isnull=False, limit_key__isnull=False),
            ),
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                fields=["name", "limit_key"],
                name="aiotaskq_task_seats",
                condition=models.Q(state="running", limit_key__isnull=False),
            ),
        ),
        migrations.RunPython(name_partition_indexes, name_partition_indexes, elidable=False),
        migrations.RunSQL(sql=CREATE, reverse_sql=DROP),
    ]
