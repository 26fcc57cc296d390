-- Every statement aiotaskq runs at run time, in the order a task meets them.
-- Blocks start with "-- name: NAME"; parameters are named (%(name)s); identifiers are
-- filled in with psycopg.sql ({channel}). The models and migrations own the DDL.
-- The leases of the worker's outcome statements (heartbeat, ack, succeed, fail, retry,
-- release) arrive as array literals in text, '{...}', cast here: one joined string costs the
-- worker a fraction of what an array parameter dumped element by element does.


-- name: enqueue
-- One statement for one task or many. The rows become visible, and the notifications are
-- delivered, only when the caller's transaction commits; a rollback discards both. Times
-- relative to now (countdown, expires in seconds) use the database clock, so every producer
-- and worker agrees on them. PostgreSQL folds identical notifications of one transaction.
-- It returns the rows' created_at (the statement's time), which django.tasks reports as
-- enqueued_at, so the result of enqueue() and a later get_result() agree.
WITH inserted AS (
    INSERT INTO aiotaskq_task (id, name, queue, priority, args, kwargs, time_limit, created_at, execute_at, expires_at, limit_key, trace)
    SELECT t.id, t.name, t.queue, t.priority, t.args::jsonb, t.kwargs::jsonb, t.time_limit,
           statement_timestamp(),
           COALESCE(t.eta, statement_timestamp() + make_interval(secs => t.countdown), statement_timestamp()),
           COALESCE(t.expires_at, statement_timestamp() + make_interval(secs => t.expires_in)),
           t.limit_key, t.trace::jsonb
    FROM unnest(
        %(ids)s::uuid[], %(names)s::text[], %(queues)s::text[], %(priorities)s::int[],
        %(args)s::text[], %(kwargs)s::text[], %(etas)s::timestamptz[], %(countdowns)s::float8[],
        %(expires_ats)s::timestamptz[], %(expires_ins)s::float8[], %(time_limits)s::float8[],
        %(limit_keys)s::text[], %(traces)s::text[]
    ) AS t(id, name, queue, priority, args, kwargs, eta, countdown, expires_at, expires_in, time_limit, limit_key, trace)
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted) AS inserted, count(pg_notify(c.channel, c.payload)),
       statement_timestamp() AS created_at
FROM unnest(%(channels)s::text[], %(payloads)s::text[]) AS c(channel, payload);


-- name: enqueue_one
-- The same for exactly one task, with plain parameters: no arrays to build and unpack, so
-- the most common call (one delay() or adelay()) is a single short prepared statement.
WITH inserted AS (
    INSERT INTO aiotaskq_task (id, name, queue, priority, args, kwargs, time_limit, created_at, execute_at, expires_at, limit_key, trace)
    VALUES (
        %(id)s::uuid, %(name)s::text, %(queue)s::text, %(priority)s::int,
        %(args)s::text::jsonb, %(kwargs)s::text::jsonb, %(time_limit)s::float8,
        statement_timestamp(),
        COALESCE(%(eta)s::timestamptz, statement_timestamp() + make_interval(secs => %(countdown)s::float8), statement_timestamp()),
        COALESCE(%(expires_at)s::timestamptz, statement_timestamp() + make_interval(secs => %(expires_in)s::float8)),
        %(limit_key)s::text, %(trace)s::text::jsonb
    )
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted) AS inserted, pg_notify(%(channel)s::text, %(payload)s::text),
       statement_timestamp() AS created_at;


-- name: enqueue_unique
-- Tasks with a unique key, one or many (migration 0012, docs/unique.md): the arrays of
-- "enqueue", plus each row's key, whether it replaces a queued holder, and how long a running
-- holder's heartbeat may be silent before it holds nothing (NULL: a running holder always
-- holds). One row back per row sent: the id that holds the key now, and 'new', 'kept' or
-- 'replaced'. The caller sends the rows in key order (of one key, in the order of the
-- calls). The queues are woken at commit, as by "enqueue" (a replaced task may have become
-- ready, or due sooner).
WITH woken AS MATERIALIZED (
    SELECT count(pg_notify(c.channel, c.payload))
    FROM unnest(%(channels)s::text[], %(payloads)s::text[]) AS c(channel, payload)
)
SELECT u.asked, u.holder, u.outcome, statement_timestamp() AS created_at
FROM woken, aiotaskq_enqueue_unique(
    %(ids)s::uuid[], %(names)s::text[], %(queues)s::text[], %(priorities)s::int[],
    %(args)s::text[], %(kwargs)s::text[], %(etas)s::timestamptz[], %(countdowns)s::float8[],
    %(expires_ats)s::timestamptz[], %(expires_ins)s::float8[], %(time_limits)s::float8[],
    %(keys)s::text[], %(replaces)s::boolean[], %(dirty_afters)s::float8[],
    %(limit_keys)s::text[]
) AS u;


-- name: trace_keyed
-- After "enqueue_unique", in the same transaction: the trace context of the calls that wrote
-- a task (new) or changed a queued holder (replaced), when a span was recording. Only while
-- queued: a holder claimed meanwhile keeps the trace it ran with.
UPDATE aiotaskq_task t SET trace = r.trace::jsonb
FROM unnest(%(ids)s::uuid[], %(traces)s::text[]) AS r(id, trace)
WHERE t.id = r.id AND t.state = 'queued';


-- name: enqueue_copy
-- Many tasks without a schedule or an expiry, in binary COPY: several times faster than the
-- statement above once a batch has more than a few dozen rows. created_at and execute_at
-- take their database defaults (now(), the transaction's start). The caller sends `notify`
-- in the same transaction, so rows and notifications still arrive together at commit.
COPY aiotaskq_task (id, name, queue, priority, args, kwargs, time_limit, limit_key, trace) FROM STDIN (FORMAT BINARY);


-- name: listen
-- On the worker's dedicated session connection (never pooled): one per queue channel.
LISTEN {channel};


-- name: ping
-- The listener's health check after a quiet spell: a dead connection fails here.
SELECT 1;


-- name: claim
-- Take ready tasks for each lane of the worker, all lanes in one statement. Row i of the
-- arrays is one (queue, priority) range of lane lanes[i], read from position starts[i] on
-- (the worker's mark: positions below it are taken, or held by another claim, or will be
-- looked at again by the marks) and asking for demands[i] rows (its lane's free slots). The
-- inner SELECT runs once per range (LATERAL) and walks the partial index aiotaskq_task_due
-- from the mark, so it never reads the entries of tasks taken before it: under a held xmin
-- horizon those stay, and walking them is what slowed every claim (docs/storage.md). The
-- window keeps, per lane, the demand's best rows (priority first, then position); there is no
-- cut across lanes. Rows a lane locks but does not keep stay locked only until this autocommit
-- statement ends, and the lowest of them per range comes back (kept = false) so that the
-- worker's mark does not pass them.
-- MATERIALIZED fences the per-range LIMIT, so the UPDATE cannot turn it into a join that
-- locks more. FOR UPDATE SKIP LOCKED lets any number of workers claim side by side without
-- waiting on each other or taking a row twice. Expired tasks are deleted, not run, in the
-- same statement. The claim writes the lease (worker_id, attempt): every later write of this
-- worker checks it. The rows are found again by their key, (id, segment): a row this
-- statement has locked stays in its segment until it ends (a rotation waits for the
-- statement), and the segment spares the look-up of the other partitions. pickup_s: how late
-- the task started after its due time (the pickup histogram of /metrics).
WITH picked AS MATERIALIZED (
    SELECT d.id, d.segment, d.expires_at, d.pos, l.queue, l.priority, l.demand,
           row_number() OVER (PARTITION BY l.lane ORDER BY l.priority DESC, d.pos) AS n
    FROM unnest(%(queues)s::text[], %(priorities)s::int[], %(starts)s::int8[],
                %(lanes)s::int[], %(demands)s::int[])
         AS l(queue, priority, start, lane, demand)
    CROSS JOIN LATERAL (
        SELECT t.id, t.segment, t.expires_at, t.pos
        FROM aiotaskq_task t
        WHERE t.state = 'queued' AND t.pos IS NOT NULL AND t.limit_key IS NULL
          AND t.queue = l.queue AND t.priority = l.priority AND t.pos >= l.start
        ORDER BY t.pos
        LIMIT l.demand
        FOR UPDATE SKIP LOCKED
    ) AS d
),
due AS (
    SELECT id, segment, expires_at FROM picked WHERE n <= demand
),
expired AS (
    DELETE FROM aiotaskq_task t
    USING due
    WHERE t.id = due.id AND t.segment = due.segment AND due.expires_at <= now()
    RETURNING t.id, t.name, t.queue, t.priority, t.pos
),
claimed AS (
    UPDATE aiotaskq_task t
    SET state = 'running', attempt = t.attempt + 1, worker_id = %(worker_id)s,
        started_at = now(), alive_at = now()
    FROM due
    WHERE t.id = due.id AND t.segment = due.segment
      AND (due.expires_at IS NULL OR due.expires_at > now())
    RETURNING t.id, t.name, t.queue, t.args::text AS args, t.kwargs::text AS kwargs, t.attempt,
              t.retries, t.time_limit, t.priority, t.pos, t.checkpoint::text AS checkpoint,
              t.scheduled_for, extract(epoch FROM now() - t.execute_at)::float8 AS pickup_s,
              t.trace::text AS trace
)
SELECT id, name, queue, args, kwargs, attempt, retries, time_limit, false AS expired,
       priority, pos, checkpoint, scheduled_for, true AS kept, pickup_s, trace
FROM claimed
UNION ALL
SELECT id, name, queue, NULL, NULL, NULL, NULL, NULL, true, priority, pos, NULL, NULL, true,
       NULL, NULL
FROM expired
UNION ALL
SELECT NULL, NULL, queue, NULL, NULL, NULL, NULL, NULL, false, priority, min(pos), NULL, NULL,
       false, NULL, NULL
FROM picked WHERE n > demand GROUP BY queue, priority;


-- name: claim_limited
-- Ready tasks with limit keys (migration 0013, docs/limits.md): key by key, each taking what
-- its seats and tokens allow now, each lane at most its demand. Autocommit: the advisory locks
-- that make claims of one key take turns end with it. The last row names the last key visited
-- and when to claim again for keys that wait.
SELECT * FROM aiotaskq_claim_limited(
    %(queues)s::text[], %(lanes)s::int[], %(demands)s::int[], %(names)s::text[],
    %(max_running)s::int[], %(intervals)s::float8[], %(bursts)s::int[], %(after_queue)s::text,
    %(after_name)s::text, %(after_key)s::text, %(worker_id)s::text, %(dirty_after)s::float8
);


-- name: traces_of
-- The trace contexts of tasks the limited claim took (its function returns none), read only
-- where OpenTelemetry is installed. By id; a plain read.
SELECT id, trace::text FROM aiotaskq_task WHERE id = ANY(%(ids)s::uuid[]) AND trace IS NOT NULL;


-- name: next_eta
-- In how many seconds (by the database clock, so the worker's own clock does not matter)
-- the next future task of these queues falls due: negative when one is due and waits for
-- "promote". The fetcher sleeps until then. Reads only; one short walk of aiotaskq_task_eta
-- (future tasks alone) per queue.
SELECT extract(epoch FROM min(n.execute_at) - clock_timestamp())::float8 AS due_in
FROM unnest(%(queues)s::text[]) AS q(queue)
CROSS JOIN LATERAL (
    SELECT t.execute_at FROM aiotaskq_task t
    WHERE t.state = 'queued' AND t.pos IS NULL AND t.queue = q.queue
    ORDER BY t.execute_at
    LIMIT 1
) AS n;


-- name: promote
-- Future tasks of these queues that have fallen due become ready: each takes its place
-- (pos) now, at the end of its queue, in the order of their ETAs. A bounded batch; SKIP
-- LOCKED lets workers promote side by side. Autocommit: the rows are claimable once it
-- returns, and the queues' workers are woken if any was promoted. Returns how many.
WITH due AS (
    SELECT n.id
    FROM unnest(%(queues)s::text[]) AS q(queue)
    CROSS JOIN LATERAL (
        SELECT t.id, t.execute_at FROM aiotaskq_task t
        WHERE t.state = 'queued' AND t.pos IS NULL AND t.queue = q.queue
          AND t.execute_at <= now()
        ORDER BY t.execute_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS n
    ORDER BY n.execute_at
),
promoted AS (
    UPDATE aiotaskq_task t
    SET pos = nextval('aiotaskq_task_pos')
    FROM due
    WHERE t.id = due.id
    RETURNING 1
)
SELECT (SELECT count(*) FROM promoted) AS promoted,
       (SELECT count(pg_notify(c, '')) FROM unnest(%(channels)s::text[]) AS c
        WHERE EXISTS (SELECT 1 FROM promoted)) AS woken;


-- name: positions_taken
-- The last position handed out (NULL before the first), read before "position_writers".
SELECT pg_sequence_last_value('aiotaskq_task_pos'::regclass) AS last;


-- name: position_writers
-- The transactions that may still be writing the task table (they hold its RowExclusiveLock
-- until they end): any position taken before "positions_taken" but not yet visible belongs
-- to one of them. A session that only reads, or holds a snapshot without touching the table
-- (the long transaction of docs/storage.md), is not among them.
SELECT coalesce(array_agg(virtualtransaction), '{}') AS writers
FROM pg_locks
WHERE locktype = 'relation' AND relation = 'aiotaskq_task'::regclass
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND mode = 'RowExclusiveLock';


-- name: ready_between
-- The lowest ready position per (queue, priority) of these queues in (after, upto]: what
-- became ready in a range the marks had not looked at (a new queue or priority, a late
-- commit). One range of aiotaskq_task_ready. Reads only.
SELECT queue, priority, min(pos) AS pos
FROM aiotaskq_task
WHERE state = 'queued' AND pos > 0 AND limit_key IS NULL AND pos > %(after)s AND pos <= %(upto)s
  AND queue = ANY(%(queues)s::text[])
GROUP BY queue, priority;


-- name: heartbeat
-- One statement a beat for all of a worker's in-flight tasks, with the progress each task
-- set since the last beat (a JSON object by id; most beats carry "{}"). alive_at and progress
-- are in no index, so this is a HOT update. The lease check skips rows the worker no longer owns; the ids that
-- come back are the tasks it still holds. Locking: SKIP LOCKED, so a beat never waits. The
-- worker's own ack of finished tasks (a concurrent statement on another connection) locks
-- rows too; were the beat to wait for them while the ack waits for rows the beat locked,
-- each would stall for deadlock_timeout before one failed. A row skipped is one being
-- acked (it needs no beat) or taken by hand.
WITH held AS (
    SELECT t.id
    FROM aiotaskq_task t
    JOIN unnest(%(ids)s::text::uuid[], %(attempts)s::text::int[]) AS l(id, attempt)
      ON t.id = l.id AND t.attempt = l.attempt
    WHERE t.worker_id = %(worker_id)s AND t.state = 'running'
    FOR UPDATE OF t SKIP LOCKED
)
UPDATE aiotaskq_task t
SET alive_at = now(), progress = COALESCE(%(progress)s::jsonb -> t.id::text, t.progress)
FROM held
WHERE t.id = held.id
RETURNING t.id;


-- name: worker_beat
-- The worker's row in the registry (aiotaskq workers), every beat: an upsert, so a row the
-- pruner or a person deleted comes back. Only this worker writes its row (no waits); alive_at
-- and in_flight are in no index, so the update is HOT.
INSERT INTO aiotaskq_worker AS w (id, host, pid, queues, concurrency, in_flight, started_at, alive_at)
VALUES (%(id)s, %(host)s, %(pid)s, %(queues)s::jsonb, %(concurrency)s, %(in_flight)s,
        %(started_at)s, now())
ON CONFLICT (id) DO UPDATE SET in_flight = EXCLUDED.in_flight, alive_at = now();


-- name: worker_leave
-- A worker that stops cleanly leaves the registry at once (a killed one is seen lost once
-- its row is older than DIRTY_AFTER, and pruned a day later: worker_prune).
DELETE FROM aiotaskq_worker WHERE id = %(id)s;


-- name: checkpoint
-- A task's save_checkpoint(): durable at once, and only while the attempt holds the lease (a
-- late writer changes nothing and is told). It counts as a beat. The row lock is waited for:
-- the worker's own heartbeat holds it for a moment at most.
UPDATE aiotaskq_task t
SET checkpoint = %(value)s::jsonb, alive_at = now()
WHERE t.id = %(id)s AND t.attempt = %(attempt)s AND t.worker_id = %(worker_id)s
  AND t.state = 'running'
RETURNING 1;


-- name: ack
-- Successful tasks, many at once: the row is deleted. The lease check makes a late ack of
-- a worker that lost the task (frozen, cut off, or the task re-run meanwhile) change nothing.
-- aiotaskq_announce (migration 0010) tells those who wait for one of them, once the rows are
-- locked; with no waiter it is one look at an empty index. Returns how many were deleted.
WITH acked AS (
    DELETE FROM aiotaskq_task t
    USING unnest(%(ids)s::text::uuid[], %(attempts)s::text::int[]) AS l(id, attempt)
    WHERE t.id = l.id AND t.attempt = l.attempt AND t.worker_id = %(worker_id)s
      AND t.state = 'running'
    RETURNING t.id
)
SELECT count(*), aiotaskq_announce(array_agg(id)) FROM acked;


-- name: succeed
-- Successful tasks that keep their result (Django's tasks framework), many at once: the row
-- stays as "succeeded" with the return value until expires_at (now + its retention).
-- Lease-checked and announced like ack; the checkpoint goes (the task is done). Like fail and
-- retry, the batch is one JSON document (an array of {"id", "attempt", ...} objects): one
-- text parameter, whatever the values inside.
WITH kept AS (
    UPDATE aiotaskq_task t
    SET state = 'succeeded', finished_at = now(), alive_at = now(), checkpoint = NULL,
        return_value = COALESCE(l.value, 'null'::jsonb),
        expires_at = now() + make_interval(secs => l.retention)
    FROM jsonb_to_recordset(%(items)s::jsonb)
         AS l(id uuid, attempt int, value jsonb, retention float8)
    WHERE t.id = l.id AND t.attempt = l.attempt AND t.worker_id = %(worker_id)s
      AND t.state = 'running'
    RETURNING t.id
)
SELECT count(*), aiotaskq_announce(array_agg(id)) FROM kept;


-- name: prune
-- Kept results past their retention, a bounded batch at a time (the partial index
-- aiotaskq_task_result_expiry finds them); SKIP LOCKED lets workers prune side by side.
DELETE FROM aiotaskq_task
WHERE id IN (
    SELECT id FROM aiotaskq_task
    WHERE state = 'succeeded' AND expires_at < now()
    ORDER BY expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
);


-- name: worker_prune
-- Workers lost for over a day (killed, never stopped cleanly): the Dirty view names a lost
-- worker until then. No worker writes a row that old, so nothing waits.
DELETE FROM aiotaskq_worker WHERE alive_at < now() - interval '1 day';


-- name: unique_prune
-- Key rows of tasks that have ended for good (gone, failed, or kept as succeeded), a bounded
-- batch at a time; rows an enqueue holds are skipped, never waited for (migration 0012).
SELECT aiotaskq_unique_prune(%(limit)s) AS pruned;


-- name: limit_prune
-- Rate buckets full again for an hour (a fresh one is the same), a bounded batch at a time
-- (migration 0013); rows a claim holds are skipped.
SELECT aiotaskq_limit_prune(%(limit)s) AS pruned;


-- name: unique_health
-- Whether the key table wants a VACUUM where autovacuum does not run: its dead rows.
SELECT coalesce(s.n_dead_tup, 0), current_setting('autovacuum')::bool
FROM pg_stat_user_tables s WHERE s.relname = 'aiotaskq_unique';


-- name: unique_vacuum
-- Without its last step, truncating empty pages at the end of the table: that step waits (up
-- to 5 s) for any transaction holding a key row, and the pruner never waits.
VACUUM (TRUNCATE false) aiotaskq_unique;


-- name: table_health
-- The task table's dead and changed rows, its partitions' together, and whether autovacuum
-- looks after all of them (on server-wide and not turned off for any). Counters come from the
-- statistics collector: a second or so behind. No row before the statistics know a partition.
-- Only the partitions that have pages count (those the keeper vacuums and analyzes): a
-- segment a rotation has emptied keeps the counters of what it held, and nothing the keeper
-- does would lower them. The cold partition's live and changed rows also alone (under a held
-- horizon the keeper analyzes it alone).
SELECT sum(s.n_dead_tup) FILTER (WHERE k.kept), sum(s.n_live_tup) FILTER (WHERE k.kept),
       sum(s.n_mod_since_analyze) FILTER (WHERE k.kept),
       sum(s.n_live_tup) FILTER (WHERE k.kept AND c.relname = 'aiotaskq_task_cold'),
       sum(s.n_mod_since_analyze) FILTER (WHERE k.kept AND c.relname = 'aiotaskq_task_cold'),
       current_setting('autovacuum')::bool
       AND bool_and(coalesce((SELECT o.option_value::bool
                              FROM pg_options_to_table(c.reloptions) AS o
                              WHERE o.option_name = 'autovacuum_enabled'), true)) AS autovacuum
FROM pg_partition_tree('aiotaskq_task') AS p
JOIN pg_stat_user_tables s ON s.relid = p.relid
JOIN pg_class c ON c.oid = p.relid
CROSS JOIN LATERAL (SELECT pg_relation_size(p.relid) > 0 AS kept) AS k
WHERE p.isleaf
HAVING count(*) > 0;


-- name: oldest_snapshot
-- The oldest snapshot any session of the database holds (its backend_xmin, as text): VACUUM
-- removes only the rows that died before it. While it stays the same, a second VACUUM removes
-- nothing the first could not (a long transaction holds the horizon). While one transaction
-- holds it, the other sessions' snapshots share that xmin: the session named is the one whose
-- transaction began first.
SELECT backend_xmin::text AS xmin, pid
FROM pg_stat_activity
WHERE datname = current_database() AND backend_xmin IS NOT NULL
ORDER BY age(backend_xmin) DESC, xact_start
LIMIT 1;


-- name: kept_partitions
-- The task table's partitions that have pages, which the keeper vacuums and analyzes. A
-- segment that a rotation has just emptied is left alone: statistics taken of it empty
-- would have the planner read it as empty (a scan of every row, where it would have looked
-- an id up) in every plan made until the next statistics, while it fills.
SELECT coalesce(array_agg(c.relname::text ORDER BY c.relname), '{}') AS tables
FROM pg_partition_tree('aiotaskq_task') AS p JOIN pg_class c ON c.oid = p.relid
WHERE p.isleaf AND pg_relation_size(p.relid) > 0;


-- name: vacuum
-- Only where autovacuum does not run: dead rows of deleted tasks removed, statistics renewed.
-- Takes no lock that enqueue, claim or ack wait for (a rotation waiting for a segment the
-- VACUUM reads tries again a second later). Outside any transaction. {tables}: the
-- partitions of "kept_partitions".
VACUUM (ANALYZE) {tables};


-- name: analyze
-- Only where autovacuum does not run: the planner's statistics renewed after many changes.
ANALYZE {tables};


-- name: ring
-- The segment of the ring to empty now, if any (migration 0009: two segments, ten seconds
-- each, picked by the database clock): the one that takes new tasks next, once the current
-- one has taken them for five seconds, and only if it has pages (a truncated segment has
-- none). A statement begun before the current segment's start may still be writing the
-- other one; the rotation's lock waits for it, so those five seconds only spare the wait.
-- "period" names this turn of the ring. Reads only.
SELECT r.segment, r.period
FROM (SELECT mod(aiotaskq_segment(statement_timestamp()) + 1, 2)::smallint AS segment,
             floor(extract(epoch FROM statement_timestamp()) / 10)::bigint AS period,
             aiotaskq_segment(statement_timestamp() - interval '5 seconds')
                 = aiotaskq_segment(statement_timestamp()) AS settled) AS r
WHERE r.settled AND pg_relation_size(('aiotaskq_task_ring' || r.segment)::regclass) > 0;


-- name: segment_rows
-- How many rows a segment still holds that some transaction can see, up to a bound: what a
-- rotation would move. Reads only (a scan of that segment alone).
SELECT count(*) AS rows
FROM (SELECT 1 FROM aiotaskq_task WHERE segment = %(segment)s LIMIT %(limit)s) AS s;


-- name: rotate_begin
-- In the rotation's transaction: one rotation at a time (the lock ends with the transaction),
-- and no waiting for the segment's lock beyond a few claims' time: while the rotation waits
-- for it, every statement on the table waits behind it. The move reads the whole segment,
-- which is what a sequential scan is for (the worker's connections turn it off).
SELECT pg_try_advisory_xact_lock(%(key)s) AS mine,
       set_config('lock_timeout', %(lock_timeout)s, true),
       set_config('enable_seqscan', 'on', true);


-- name: rotate_lock
-- No statement touches the segment until the rotation commits (each waits for this lock,
-- then plans again and reads the rows where they were moved).
LOCK TABLE {segment} IN ACCESS EXCLUSIVE MODE;


-- name: rotate_move
-- The rows that still live in the segment (running tasks with their lease, ready ones with
-- their place, future, failed and kept ones) go to cold, every column as it is: an UPDATE of
-- the partition key moves a row to the partition the new key belongs to. No row moves twice:
-- cold is never rotated.
UPDATE aiotaskq_task SET segment = -1 WHERE segment = %(segment)s;


-- name: rotate_truncate
-- The segment's space back, whatever transaction holds the xmin horizon.
TRUNCATE {segment};


-- name: advisory_try
-- One worker at a time keeps the table (a session lock on the keeper's connection).
SELECT pg_try_advisory_lock(%(key)s);


-- name: advisory_release
SELECT pg_advisory_unlock(%(key)s);


-- name: result
-- One task's row, for Django's get_result(). Reads only.
SELECT id, name, queue, priority, state, args::text, kwargs::text, created_at, started_at,
       finished_at, attempt, worker_id, errors::text, return_value::text, execute_at,
       (state = 'running' AND alive_at < now() - make_interval(secs => %(dirty_after)s)) AS dirty
FROM aiotaskq_task
WHERE id = %(id)s;


-- name: look
-- What a waiter (AsyncResult.get, aget, state, progress) needs of tasks: their state and
-- queue, progress, kept value and last error. An id with no row is a task that finished
-- without keeping a result (or was never enqueued, or was deleted). Reads only.
SELECT id, state, queue, progress::text, return_value::text, (errors -> -1)::text
FROM aiotaskq_task
WHERE id = ANY(%(ids)s::uuid[]);


-- name: look_locked
-- The same, for tasks a waiter has just seen running, right after it registered: FOR SHARE
-- waits for a statement that is ending one of them (an ack, a fail) to commit, and then reads
-- what it left. An ending statement announces only the waiters registered before its look
-- (aiotaskq_announce); this closes the gap for those that registered during it. Queued rows
-- are left out, so a claim never finds one of them locked.
SELECT id, state, queue, progress::text, return_value::text, (errors -> -1)::text
FROM aiotaskq_task
WHERE id = ANY(%(ids)s::uuid[]) AND state <> 'queued'
FOR SHARE;


-- name: wait_register
-- A process starts waiting for tasks (one row per task and process).
INSERT INTO aiotaskq_waiter (task_id, waiter)
SELECT id, %(waiter)s FROM unnest(%(ids)s::uuid[]) AS id;


-- name: wait_unregister
-- A process stops waiting for tasks (NULL ids: for all of them, as on a new connection).
DELETE FROM aiotaskq_waiter
WHERE waiter = %(waiter)s AND (%(ids)s::uuid[] IS NULL OR task_id = ANY(%(ids)s::uuid[]));


-- name: wait_prune
-- Waiters of processes that went away without unregistering (killed): those of tasks that
-- no longer exist, and any older than a day, a bounded batch at a time.
DELETE FROM aiotaskq_waiter
WHERE ctid IN (
    SELECT w.ctid FROM aiotaskq_waiter w
    WHERE w.since < now() - interval '1 day'
       OR (w.since < now() - interval '1 minute'
           AND NOT EXISTS (SELECT 1 FROM aiotaskq_task t WHERE t.id = w.task_id))
    LIMIT %(limit)s
);


-- name: fail
-- Failed tasks, many at once: kept with the attempt's error appended, for inspection and
-- re-run; its checkpoint stays for a re-run. Lease-checked and announced like ack. retries
-- counts every failed attempt; errors keeps the first 10 and the last 10 of them (past 20,
-- the oldest of the last ten, index 10, is dropped at each append), so a task retried without
-- limit never grows its row unbounded.
WITH failed AS (
    UPDATE aiotaskq_task t
    SET state = 'failed', finished_at = now(), alive_at = now(), retries = t.retries + 1,
        errors = (CASE WHEN jsonb_array_length(t.errors) < 20 THEN t.errors
                       ELSE t.errors - 10 END) || jsonb_build_array(l.error)
    FROM jsonb_to_recordset(%(items)s::jsonb) AS l(id uuid, attempt int, error jsonb)
    WHERE t.id = l.id AND t.attempt = l.attempt AND t.worker_id = %(worker_id)s
      AND t.state = 'running'
    RETURNING t.id
)
SELECT count(*), aiotaskq_announce(array_agg(id)) FROM failed;


-- name: retry
-- Failed attempts that will be retried, and snoozed ones, many at once: queued again for
-- later (by the database clock), the attempt's error appended and counted (none for a
-- snooze; errors is trimmed as in fail), and the queues' workers woken at commit so they look
-- at the new ETA. Lease-checked like ack.
WITH retried AS (
    UPDATE aiotaskq_task t
    SET state = 'queued', worker_id = NULL, started_at = NULL, alive_at = NULL,
        execute_at = e.at,
        -- Due at once: ready again at the end of its queue; else it waits for "promote".
        pos = CASE WHEN e.at <= now() THEN nextval('aiotaskq_task_pos') END,
        retries = t.retries + (l.error IS NOT NULL)::int,
        errors = CASE WHEN l.error IS NULL THEN t.errors
                      ELSE (CASE WHEN jsonb_array_length(t.errors) < 20 THEN t.errors
                                 ELSE t.errors - 10 END) || jsonb_build_array(l.error) END
    FROM jsonb_to_recordset(%(items)s::jsonb)
         AS l(id uuid, attempt int, error jsonb, countdown float8, eta timestamptz)
    CROSS JOIN LATERAL (
        SELECT COALESCE(l.eta, now() + make_interval(secs => COALESCE(l.countdown, 0))) AS at
    ) AS e
    WHERE t.id = l.id AND t.attempt = l.attempt AND t.worker_id = %(worker_id)s
      AND t.state = 'running'
    RETURNING 1
)
SELECT (SELECT count(*) FROM retried) AS retried, count(pg_notify(c, ''))
FROM unnest(%(channels)s::text[]) AS c;


-- name: release
-- A graceful stop gives back what it could not finish: queued again at once (the attempt
-- stays counted, no error is recorded), and the other workers are woken at commit.
WITH released AS (
    UPDATE aiotaskq_task t
    SET state = 'queued', worker_id = NULL, started_at = NULL, alive_at = NULL,
        pos = nextval('aiotaskq_task_pos')
    FROM unnest(%(ids)s::text::uuid[], %(attempts)s::text::int[]) AS l(id, attempt)
    WHERE t.id = l.id AND t.attempt = l.attempt AND t.worker_id = %(worker_id)s
      AND t.state = 'running'
    RETURNING 1
)
SELECT (SELECT count(*) FROM released) AS released, count(pg_notify(c, ''))
FROM unnest(%(channels)s::text[]) AS c;


-- name: rescue
-- Dirty tasks of the names that opted in (on_dirty="retry"), found by any worker: queued
-- again with the lost attempt recorded as an error, or failed when that was the last retry
-- the task allows. SKIP LOCKED and the re-check of state and alive_at under the row lock
-- make it a compare-and-set: of two rescuers, one wins.
WITH dirty AS (
    SELECT t.id, p.max_retries
    FROM aiotaskq_task t
    JOIN unnest(%(names)s::text[], %(max_retries)s::int[]) AS p(name, max_retries)
      ON p.name = t.name
    -- "started_at IS NOT NULL" lets the partial index of running tasks serve this.
    WHERE t.state = 'running' AND t.started_at IS NOT NULL AND t.queue = ANY(%(queues)s::text[])
      AND t.alive_at < now() - make_interval(secs => %(dirty_after)s)
      -- Never its own: after a stall of its loop a worker's tasks look Dirty for a moment,
      -- but it knows they are alive.
      AND t.worker_id <> %(worker_id)s
    FOR UPDATE OF t SKIP LOCKED
)
UPDATE aiotaskq_task t
SET state = CASE WHEN dirty.max_retries IS NOT NULL AND t.retries >= dirty.max_retries
                 THEN 'failed' ELSE 'queued' END,
    finished_at = CASE WHEN dirty.max_retries IS NOT NULL AND t.retries >= dirty.max_retries
                       THEN now() END,
    worker_id = NULL, started_at = NULL, alive_at = NULL, execute_at = now(),
    pos = CASE WHEN dirty.max_retries IS NOT NULL AND t.retries >= dirty.max_retries
               THEN NULL ELSE nextval('aiotaskq_task_pos') END,
    retries = t.retries + 1,
    errors = (CASE WHEN jsonb_array_length(t.errors) < 20 THEN t.errors ELSE t.errors - 10 END)
             || jsonb_build_array(jsonb_build_object(
        'attempt', t.attempt, 'type', 'aiotaskq.errors.Dirty',
        'message', 'the worker ' || t.worker_id || ' stopped beating for this attempt',
        'traceback', '', 'worker_id', t.worker_id, 'at', now()))
FROM dirty
WHERE t.id = dirty.id
RETURNING t.id, t.name, t.queue, t.state;


-- name: revoke
-- One task or many: a queued or future task is deleted, it never runs; a running one is
-- announced on the control channel at commit (one notification per task, "revoke:<id>"), and
-- the worker that holds it cancels it if it is a coroutine. Locking: the DELETE waits for a
-- row another transaction holds (a worker claiming it at this moment) and re-checks it once
-- that commits; a task claimed meanwhile is no longer queued, so it is announced instead
-- (its id is in "seen" as queued but not in "deleted"). A task that finished meanwhile is
-- announced too, and its worker ignores the id. Running rows are never locked: a worker's
-- heartbeat and ack never wait for a revoke.
WITH seen AS (
    SELECT id, state FROM aiotaskq_task
    WHERE id = ANY(%(ids)s::uuid[]) AND state IN ('queued', 'running')
),
deleted AS (
    DELETE FROM aiotaskq_task t
    USING seen
    WHERE t.id = seen.id AND seen.state = 'queued' AND t.state = 'queued'
    RETURNING t.id
),
announced AS MATERIALIZED (
    SELECT seen.id, pg_notify(%(channel)s, 'revoke:' || seen.id::text)
    FROM seen
    WHERE seen.id NOT IN (SELECT id FROM deleted)
)
SELECT id, true AS deleted FROM deleted
UNION ALL
SELECT id, false FROM announced;


-- name: requeue
-- By hand (the CLI, the admin): failed or Dirty tasks back to queued, due now, with the
-- same arguments and their error history; one statement for the whole selection. Followed
-- by "notify" in the same transaction. Locking: SKIP LOCKED leaves a row another transaction
-- holds (a worker writing its outcome, another requeue) alone, and the group is re-checked
-- under the row lock, so a task that left the group since it was selected is not touched.
-- Returns the tasks requeued, with their queues (to wake).
WITH picked AS (
    SELECT id FROM aiotaskq_task
    WHERE (%(ids)s::uuid[] IS NULL OR id = ANY(%(ids)s::uuid[]))
      AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
      AND ((%(failed)s::boolean AND state = 'failed')
           OR (%(dirty)s::boolean AND state = 'running'
               AND alive_at < now() - make_interval(secs => %(dirty_after)s)))
    FOR UPDATE SKIP LOCKED
)
UPDATE aiotaskq_task t
SET state = 'queued', execute_at = now(), worker_id = NULL, started_at = NULL,
    alive_at = NULL, finished_at = NULL, pos = nextval('aiotaskq_task_pos')
FROM picked WHERE t.id = picked.id
  -- A task with a unique key takes it back first; one that another queued or running task
  -- holds is left as it is (migration 0012).
  AND CASE WHEN t.unique_key IS NULL THEN true
           ELSE aiotaskq_unique_retake(t.name, t.unique_key, t.id, NULL) END
RETURNING t.id, t.queue;


-- name: notify
-- Wake the workers of these channels when the surrounding transaction commits. Also returns
-- the transaction's start (now()), the created_at of rows written by enqueue_copy.
SELECT count(pg_notify(c, '')), now() AS transaction_time FROM unnest(%(channels)s::text[]) AS c;


-- name: notify_limited
-- Wake the limited claim of these channels' workers at commit (docs/limits.md). The payload
-- says why: "limits", tasks with limit keys were enqueued (the ordinary claim is woken too);
-- "seats <worker id>", a worker's outcomes freed seats (its own listener ignores it).
SELECT count(pg_notify(c, %(payload)s)) FROM unnest(%(channels)s::text[]) AS c;


-- name: delete
-- By hand: failed, Dirty, or succeeded (kept results) tasks removed; one statement for the
-- whole selection. Locking: a row another transaction holds is waited for, then re-checked
-- against the group once that commits (a Dirty task whose worker came back and acked it is
-- gone; one that was requeued is no longer in the group). Returns the tasks deleted.
DELETE FROM aiotaskq_task
WHERE (%(ids)s::uuid[] IS NULL OR id = ANY(%(ids)s::uuid[]))
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND ((%(failed)s::boolean AND state = 'failed')
       OR (%(succeeded)s::boolean AND state = 'succeeded')
       OR (%(dirty)s::boolean AND state = 'running'
           AND alive_at < now() - make_interval(secs => %(dirty_after)s)))
RETURNING id;


-- name: status
-- The admin's groups, per queue: Pending (due), Future, Active, Dirty, Failed, Succeeded
-- (kept results). Reads only.
SELECT queue,
       count(*) FILTER (WHERE state = 'queued' AND execute_at <= now()) AS pending,
       count(*) FILTER (WHERE state = 'queued' AND execute_at > now()) AS future,
       count(*) FILTER (WHERE state = 'running'
                          AND alive_at >= now() - make_interval(secs => %(dirty_after)s)) AS active,
       count(*) FILTER (WHERE state = 'running'
                          AND alive_at < now() - make_interval(secs => %(dirty_after)s)) AS dirty,
       count(*) FILTER (WHERE state = 'failed') AS failed,
       count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
       extract(epoch FROM now() - min(execute_at) FILTER (
           WHERE state = 'queued' AND execute_at <= now()))::float8 AS oldest_pending_age_s
FROM aiotaskq_task
GROUP BY queue
ORDER BY queue;


-- name: status_plan
-- Before "status" on a worker's connection (the metrics' depth read), in its transaction:
-- the worker's connections plan without sequential scans (connect.py), which turns this
-- count of every row into a walk of every index (a hundred times slower).
SET LOCAL enable_seqscan = on;


-- name: in_progress
-- The running tasks that report progress, for "aiotaskq status --json", the longest-running
-- first. "started_at IS NOT NULL" lets the partial index of running tasks serve it. Reads only.
SELECT id, name, queue, worker_id, attempt, started_at, progress::text
FROM aiotaskq_task
WHERE state = 'running' AND started_at IS NOT NULL AND progress IS NOT NULL
ORDER BY started_at
LIMIT %(limit)s;


-- name: workers
-- The registry (aiotaskq workers, health): every worker row with whether its heartbeat is
-- fresh (alive) by the database's clock. A plain read: it takes no lock.
SELECT id, host, pid, queues::text, concurrency, in_flight, started_at, alive_at,
       alive_at > now() - make_interval(secs => %(dirty_after)s) AS alive,
       extract(epoch FROM now() - alive_at)::float8 AS silent_s
FROM aiotaskq_worker
ORDER BY host, started_at, id;


-- name: limits_status
-- Per task and limit key in use (docs/limits.md), for "aiotaskq status" and the admin: the
-- seats taken (running, heartbeat fresh) and the tasks that wait for one (ready, not claimed).
-- The two partial indexes of limited tasks serve it. Reads only.
SELECT name, limit_key,
       count(*) FILTER (WHERE state = 'running'
                        AND alive_at >= now() - make_interval(secs => %(dirty_after)s)) AS running,
       count(*) FILTER (WHERE state = 'queued') AS waiting
FROM aiotaskq_task
WHERE limit_key IS NOT NULL
  AND (state = 'running' OR (state = 'queued' AND pos IS NOT NULL))
GROUP BY name, limit_key
ORDER BY name, limit_key
LIMIT %(limit)s;


-- name: schedule_sync
-- The schedules a worker knows: a row for each one seen for the first time, its last tick
-- set to now (so that it starts with its next tick instead of running what came before),
-- then every known row, with the database's now, by which due ticks are counted.
WITH added AS (
    INSERT INTO aiotaskq_schedule (name, task, last_tick, paused, updated_at)
    SELECT s.name, s.task, now(), false, now()
    FROM unnest(%(names)s::text[], %(tasks)s::text[]) AS s(name, task)
    ON CONFLICT (name) DO NOTHING
    RETURNING name, last_tick, paused
)
SELECT name, last_tick, paused, now() FROM added
UNION ALL
SELECT name, last_tick, paused, now() FROM aiotaskq_schedule
WHERE name = ANY(%(names)s::text[]) AND name NOT IN (SELECT name FROM added);


-- name: schedule_fire
-- One tick of a schedule, enqueued at most once however many workers try: the schedule's
-- last_tick moves from the value the worker read to this tick (a compare-and-set: of two
-- workers, the second finds it moved and inserts nothing), and the task is inserted in the
-- same statement, with the tick in scheduled_for, and its queue's workers woken at commit.
-- A paused schedule does not move. With skip_overlap, a tick while the schedule's previous
-- run is still queued or running moves last_tick but inserts nothing (the partial index
-- aiotaskq_task_periodic finds those runs). Returns (moved, inserted).
WITH busy AS (
    SELECT 1 FROM aiotaskq_task t
    WHERE %(skip_overlap)s::boolean AND t.name = %(name)s AND t.scheduled_for IS NOT NULL
      AND t.state IN ('queued', 'running')
    LIMIT 1
),
moved AS (
    UPDATE aiotaskq_schedule s
    SET last_tick = %(tick)s::timestamptz, task = %(name)s, updated_at = now(),
        last_run = CASE WHEN EXISTS (SELECT 1 FROM busy) THEN s.last_run
                        ELSE %(tick)s::timestamptz END
    WHERE s.name = %(schedule)s AND s.last_tick IS NOT DISTINCT FROM %(expected)s::timestamptz
      AND NOT s.paused
    RETURNING 1
),
inserted AS (
    INSERT INTO aiotaskq_task (id, name, queue, priority, args, kwargs, time_limit, created_at,
                               execute_at, scheduled_for)
    SELECT %(id)s::uuid, %(name)s::text, %(queue)s::text, %(priority)s::int,
           %(args)s::text::jsonb, %(kwargs)s::text::jsonb, %(time_limit)s::float8,
           statement_timestamp(), statement_timestamp(), %(tick)s::timestamptz
    FROM moved
    WHERE NOT EXISTS (SELECT 1 FROM busy)
    RETURNING 1
)
SELECT (SELECT count(*) FROM moved) AS moved, (SELECT count(*) FROM inserted) AS inserted,
       CASE WHEN EXISTS (SELECT 1 FROM inserted) THEN pg_notify(%(channel)s::text, '') END;


-- name: schedule_list
-- Every schedule's row, for "aiotaskq schedules". Reads only.
SELECT name, task, last_tick, last_run, paused, now() FROM aiotaskq_schedule ORDER BY name;
