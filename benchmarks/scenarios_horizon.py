"""The ``horizon`` scenario of ``benchmarks/run.py``: the sustained paced load while another
session holds the xmin horizon, beside the same load without it.

One long transaction anywhere in the database (a report, a migration, a ``psql`` session
left idle in transaction) keeps VACUUM from removing any row that died after it began. A
queue table deletes every row it holds within seconds, so under such a transaction its dead
rows, and the dead entries of its indexes, only pile up. This scenario measures what that
does to aiotaskq, at each rate of :data:`RATES`, with one worker at ``--concurrency``
:data:`CONCURRENCY`: one run as it is ("plain"), one while a second connection holds
``BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT txid_current();`` and stays idle in that
transaction for the whole load ("held"). The holder is ended the moment the producer stops,
and the drain of what is left is timed from there.

Per second: the offered rate (the producer's calls), completions (the worker's running count
through the probe), pickup p50/p99 of the tasks enqueued in that second, the longest stall
that ended in it (see :func:`stalls`), and, from a separate connection, the queue's depth,
the table's size (heap, indexes, the due index alone), ``n_dead_tup`` and autovacuum's
activity. At the middle of the load and near its end, ``EXPLAIN (ANALYZE, BUFFERS)`` of the
worker's claim, heartbeat and ack (the claim in a transaction rolled back; heartbeat and ack
under another worker's id, so they find the rows but change and lock none).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import dbenv, harness
from benchmarks.scenarios_load import SUSTAINED_SAMPLE, TABLE, Kit, paced, rss_mb, table_size

#: The paced rates (tasks/s), each run plain and held.
RATES = (2000, 5000)
#: The worker's ``--concurrency``: the issue's higher figure (its 2,000/s measurement).
CONCURRENCY = 64
#: A stall longer than this is counted (the issue's goal: none over 250 ms).
STALL_LIMIT = 0.25
#: When, as a share of the load's length, the statements are explained.
EXPLAIN_AT = (0.5, 0.9)
#: The claim's batch in the explained claim (the worker claims its free slots, up to 500).
EXPLAIN_CLAIM_LIMIT = 32
#: How far behind the last position handed out (besides the depth) the explained claim
#: starts: about a second of the higher rate, more than the worker's mark lags.
EXPLAIN_MARK_LAG = 5000
#: Leases looked up by the explained heartbeat and ack (the worker's in-flight tasks).
EXPLAIN_LEASES = CONCURRENCY
#: The worker's running count comes every this many tasks (the probe's ``AIOTASKQ_BENCH_EVERY``).
COUNT_EVERY = 50
#: The worker id of the explained heartbeat and ack: no row carries it.
NOBODY = "explain-nobody"


# The stall ---------------------------------------------------------------------------------


def stalls(pickups: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The intervals ``(begin, end)`` during which a task was due and none started.

    ``pickups`` are ``(enqueued, started)`` pairs. Between two consecutive starts ``s[i-1]``
    and ``s[i]`` (in start order), the tasks still waiting are those that start at ``s[i]``
    or later; the earliest of them was due from its enqueue time ``e``. If ``e < s[i]``, the
    queue stalled from ``max(s[i-1], e)`` to ``s[i]``: something was due and nothing started.
    A gap during which nothing was due (an idle queue) is no stall. Every such interval is
    returned, in start order, however short: at thousands of tasks a second most are a few
    milliseconds; the worst is the longest.

    From the benchmark's probe, where one task in :data:`SUSTAINED_SAMPLE` reports, the
    intervals are those of the sampled tasks: an unsampled task may have started inside one
    (so a measured stall is at most the time ten tasks take longer than the true one), and the
    enqueue time is taken just before the producer's insert (so a stall may begin up to one
    insert's round trip before the rows were visible).
    """
    order = sorted(pickups, key=lambda p: p[1])
    # earliest[i]: the earliest enqueue time of the tasks that start at order[i] or later.
    earliest = [0.0] * len(order)
    low = math.inf
    for i in range(len(order) - 1, -1, -1):
        low = min(low, order[i][0])
        earliest[i] = low
    out: list[tuple[float, float]] = []
    previous = -math.inf
    for i, (_, started) in enumerate(order):
        begin = max(previous, earliest[i])
        if started > begin:
            out.append((begin, started))
        previous = started
    return out


def stall_summary(spans: Sequence[tuple[float, float]], t0: float) -> dict[str, Any]:
    """The worst stall (its length and when it began, in seconds from ``t0``), and how many
    were longer than :data:`STALL_LIMIT` and how long those lasted together."""
    long = [(b, e) for b, e in spans if e - b > STALL_LIMIT]
    worst = max(spans, key=lambda s: s[1] - s[0], default=None)
    return {
        "worst_s": None if worst is None else worst[1] - worst[0],
        "worst_at_s": None if worst is None else worst[0] - t0,
        "over_limit": len(long),
        "over_limit_total_s": sum(e - b for b, e in long),
        "limit_s": STALL_LIMIT,
        "over_limit_spans": [[round(b - t0, 3), round(e - b, 3)] for b, e in long],
    }


# The held horizon -------------------------------------------------------------------------


@contextmanager
def held_horizon(database: str) -> Iterator[dict[str, Any]]:
    """A second connection in ``REPEATABLE READ`` that has taken a snapshot and a
    transaction id, idle in that transaction until the block ends (then rolled back and
    closed). Yields its pid, its transaction id and the xmin it holds."""
    conn = psycopg.connect(**dbenv.libpq_params(database), autocommit=True)
    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        row = conn.execute("SELECT txid_current(), pg_backend_pid()").fetchone()
        assert row is not None
        yield {"txid": row[0], "pid": row[1]}
    finally:
        try:
            conn.execute("ROLLBACK")
        finally:
            conn.close()


# Sampling the table -----------------------------------------------------------------------

_DEPTH = f"SELECT count(*), count(*) FILTER (WHERE state = 'queued') FROM {TABLE}"
# One round trip for everything but the depth. The statistics are a second or so behind.
_LOOK = f"""
WITH leaves AS (SELECT relid FROM pg_partition_tree('{TABLE}') WHERE isleaf)
SELECT (SELECT sum(pg_relation_size(relid))::bigint FROM leaves),
       (SELECT sum(pg_indexes_size(relid))::bigint FROM leaves),
       (SELECT sum(pg_total_relation_size(relid))::bigint FROM leaves),
       (SELECT sum(pg_relation_size(relid))::bigint FROM pg_partition_tree('aiotaskq_task_due')),
       sum(s.n_live_tup)::bigint, sum(s.n_dead_tup)::bigint, sum(s.autovacuum_count)::bigint,
       sum(s.autoanalyze_count)::bigint, sum(s.vacuum_count)::bigint, sum(s.analyze_count)::bigint,
       (SELECT p.phase FROM pg_stat_progress_vacuum p
        WHERE p.relid IN (SELECT relid FROM leaves) LIMIT 1),
       (SELECT p.phase FROM pg_stat_progress_analyze p
        WHERE p.relid IN (SELECT relid FROM leaves) LIMIT 1),
       (SELECT max(age(a.backend_xmin)) FROM pg_stat_activity a
        WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()),
       (SELECT a.backend_type || ' ' || coalesce(a.state, '') || ' '
               || round(extract(epoch FROM clock_timestamp() - a.xact_start)::numeric, 1)
               || ' s: ' || left(regexp_replace(a.query, '\\s+', ' ', 'g'), 60)
        FROM pg_stat_activity a
        WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
          AND a.backend_xmin IS NOT NULL
        ORDER BY age(a.backend_xmin) DESC LIMIT 1)
FROM leaves JOIN pg_stat_user_tables s ON s.relid = leaves.relid
"""
# (The task table is partitioned: a ring of segments and a cold partition, migration 0009;
# its sizes and counters are those of its partitions together.)
_LOOK_KEYS = (
    "heap_bytes",
    "index_bytes",
    "total_bytes",
    "due_index_bytes",
    "n_live_tup",
    "n_dead_tup",
    "autovacuum_count",
    "autoanalyze_count",
    "vacuum_count",
    "analyze_count",
    "vacuum_phase",
    "analyze_phase",
    "xmin_age",
    "oldest_xmin",
)


def _cpu_times() -> tuple[int, int] | None:
    """All cores' total and idle jiffies (/proc/stat), or ``None``."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(fields), fields[3] + (fields[4] if len(fields) > 4 else 0)


class TableSampler:
    """A thread that, once a second, notes the worker's RSS, the probe's running count, the
    queue's depth (one ``count(*)``, timed) and the table's size and statistics, from a
    connection of its own."""

    def __init__(self, pid: int, probe: harness.Probe, database: str) -> None:
        self._pid, self._probe = pid, probe
        self._conn = harness.connect(database)
        self.samples: list[dict[str, Any]] = []
        self._anchor = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="horizon-sampler", daemon=True)

    def align(self, t0: float) -> None:
        """Sample from now on at ``t0 + k + 0.5`` (``time.time()``): one sample in the middle
        of each second of the load, so that every second of the series has exactly one."""
        self._anchor = t0 + 0.5

    def _run(self) -> None:
        cpu = _cpu_times()
        while not self._stop.is_set():
            sample: dict[str, Any] = {
                "at": time.time(),
                "rss_mb": rss_mb(self._pid),
                "done": self._probe.progress(),
            }
            # The machine's CPU since the last sample (every process, this run's and any
            # other's): a busy second is told apart from a slow statement.
            now = _cpu_times()
            if cpu and now and now[0] > cpu[0]:
                sample["cpu_busy"] = round(1 - (now[1] - cpu[1]) / (now[0] - cpu[0]), 3)
            cpu = now
            looked = time.perf_counter()
            row = self._conn.execute(_DEPTH).fetchone()
            sample["depth"], sample["queued"] = row if row else (None, None)
            sample["depth_ms"] = round((time.perf_counter() - looked) * 1000, 2)
            row = self._conn.execute(_LOOK).fetchone()
            if row is not None:
                sample.update(zip(_LOOK_KEYS, row, strict=True))
            self.samples.append(sample)
            self._stop.wait(1.0 - (time.time() - self._anchor) % 1.0)

    def __enter__(self) -> TableSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self._conn.close()


# Explaining the worker's statements -------------------------------------------------------


def _plan_nodes(node: dict[str, Any], depth: int = 0) -> Iterator[dict[str, Any]]:
    """The plan's nodes, depth first, with what they visited (buffers include children's)."""
    keys = (
        "Node Type",
        "Relation Name",
        "Index Name",
        "Actual Rows",
        "Actual Loops",
        "Actual Total Time",
        "Shared Hit Blocks",
        "Shared Read Blocks",
        "Shared Dirtied Blocks",
        "Rows Removed by Filter",
        "Rows Removed by Index Recheck",
        "Heap Fetches",
    )
    yield {"depth": depth, **{k: node[k] for k in keys if k in node}}
    for child in node.get("Plans", []):
        yield from _plan_nodes(child, depth + 1)


def explain(
    conn: psycopg.Connection[Any], statement: str, params: dict[str, Any]
) -> dict[str, Any]:
    """``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)`` of ``statement`` in a transaction that is
    rolled back: its time, and every node's rows and buffers."""
    cur = psycopg.ClientCursor(conn)
    conn.execute("BEGIN")
    try:
        cur.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, params)
        row = cur.fetchone()
    finally:
        conn.execute("ROLLBACK")
    assert row is not None
    plan = row[0][0] if isinstance(row[0], list) else json.loads(row[0])[0]
    top = plan["Plan"]
    return {
        "execution_ms": plan.get("Execution Time"),
        "planning_ms": plan.get("Planning Time"),
        "shared_hit": top.get("Shared Hit Blocks"),
        "shared_read": top.get("Shared Read Blocks"),
        "nodes": list(_plan_nodes(top)),
    }


def explain_generic(
    conn: psycopg.Connection[Any], statement: str, params: dict[str, Any]
) -> dict[str, Any]:
    """The same through a prepared statement and its generic plan, the plan the worker's
    prepared statement may settle on after five executions (PostgreSQL 15 has no
    ``EXPLAIN (GENERIC_PLAN)``). The statement is deallocated afterwards."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    body = re.sub(r"%\((\w+)\)s", number, statement)
    args = ", ".join(f"%({name})s" for name in names)
    conn.execute("SET plan_cache_mode = force_generic_plan")
    conn.execute("PREPARE horizon_explained AS " + body)
    try:
        return explain(conn, f"EXECUTE horizon_explained({args})", params)
    finally:
        conn.execute("DEALLOCATE horizon_explained")
        conn.execute("RESET plan_cache_mode")


def explain_worker_statements(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The claim (of :data:`EXPLAIN_CLAIM_LIMIT` tasks, rolled back: those tasks wait for
    it), then the heartbeat and the ack of up to :data:`EXPLAIN_LEASES` leases of running
    tasks (else of the next due ones) under :data:`NOBODY`'s id: they look the rows up as the
    worker's own statements do, and match, lock and change none."""
    from aiotaskq.db.sql import text

    out: dict[str, Any] = {}
    # The worker's sessions turn sequential scans off (aiotaskq/db/connect.py): so does this
    # one, so that the plans explained are the worker's.
    conn.execute("SET enable_seqscan = off")
    # The worker claims each range from its mark, which it keeps in memory: a little behind
    # the newest ready rows (the settled position lags by a look, 25 ms, and what was
    # enqueued since). Explained from the last position handed out less the queue's depth
    # and a second of the load: a start no later than the worker's. And from position 0:
    # what a claim would walk without a mark.
    (last,) = conn.execute("SELECT pg_sequence_last_value('aiotaskq_task_pos')").fetchone() or (0,)
    (depth,) = conn.execute(
        f"SELECT count(*) FROM {TABLE} WHERE state = 'queued' AND pos IS NOT NULL"
    ).fetchone() or (0,)
    start = max(0, int(last or 0) - int(depth) - EXPLAIN_MARK_LAG)
    claim = {
        "queues": ["default"],
        "priorities": [0],
        "starts": [start],
        "lanes": [0],
        "demands": [EXPLAIN_CLAIM_LIMIT],
        "worker_id": "explain",
    }
    out["claim_start"] = start
    out["claim"] = explain(conn, text("claim"), claim)
    out["claim_generic"] = explain_generic(conn, text("claim"), claim)
    out["claim_from_zero"] = explain(conn, text("claim"), {**claim, "starts": [0]})
    leases = conn.execute(
        f"SELECT id, attempt FROM {TABLE} WHERE state = 'running' AND started_at IS NOT NULL "
        "LIMIT %s",
        (EXPLAIN_LEASES,),
    ).fetchall()
    out["running_leases"] = len(leases)
    if len(leases) < EXPLAIN_LEASES:
        leases += conn.execute(
            f"SELECT id, attempt FROM {TABLE} WHERE state = 'queued' AND queue = 'default' "
            "AND pos IS NOT NULL ORDER BY pos DESC LIMIT %s",
            (EXPLAIN_LEASES - len(leases),),
        ).fetchall()
    params = {
        "ids": "{" + ",".join(str(i) for i, _ in leases) + "}",
        "attempts": "{" + ",".join(str(a) for _, a in leases) + "}",
        "worker_id": NOBODY,
        "progress": "{}",
    }
    out["leases"] = len(leases)
    out["heartbeat"] = explain(conn, text("heartbeat"), params)
    out["ack"] = explain(conn, text("ack"), params)
    return out


class Explainer:
    """A thread that explains the worker's statements at given moments (``time.time()``),
    from a connection of its own, so that a slow plan delays neither the producer nor the
    sampler."""

    def __init__(self, database: str, moments: Sequence[float], t0: float) -> None:
        self._database, self._moments, self._t0 = database, list(moments), t0
        self.results: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="horizon-explain", daemon=True)

    def _run(self) -> None:
        with harness.connect(self._database) as conn:
            for moment in self._moments:
                if self._stop.wait(max(0.0, moment - time.time())):
                    return
                started = time.time()
                try:
                    result = explain_worker_statements(conn)
                except psycopg.Error as exc:
                    result = {"error": str(exc)}
                result["at_s"] = round(started - self._t0, 1)
                result["took_s"] = round(time.time() - started, 3)
                self.results.append(result)

    def __enter__(self) -> Explainer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)


# One run ----------------------------------------------------------------------------------


def per_second(
    *,
    t0: float,
    sends: Sequence[tuple[float, int]],
    pickups: Sequence[tuple[float, float]],
    spans: Sequence[tuple[float, float]],
    samples: Sequence[dict[str, Any]],
) -> list[dict[str, Any]]:
    """One entry per second from ``t0`` (the load's start) to the last sample: offered and
    completed tasks, pickups of the tasks enqueued in that second (count, p50, p99), the
    longest stall that ended in it, and the table as sampled then."""
    if not samples:
        return []
    seconds = max(1, math.ceil(samples[-1]["at"] - t0))
    offered = [0] * seconds
    for at, n in sends:
        k = int(at - t0)
        if 0 <= k < seconds:
            offered[k] += n
    waits: list[list[float]] = [[] for _ in range(seconds)]
    for enq, started in pickups:
        k = int(enq - t0)
        if 0 <= k < seconds:
            waits[k].append(started - enq)
    worst = [0.0] * seconds
    for begin, end in spans:
        k = int(end - t0)
        if 0 <= k < seconds:
            worst[k] = max(worst[k], end - begin)
    by_second: dict[int, dict[str, Any]] = {}
    for s in samples:
        if s["at"] >= t0:
            by_second.setdefault(int(s["at"] - t0), s)
    out: list[dict[str, Any]] = []
    previous: dict[str, Any] | None = None
    for k in range(seconds):
        figures = harness.summarize(waits[k])
        sample = by_second.get(k, {})
        completed = None
        if sample and previous:
            # Tasks finished between this sample and the one before, per second (the count
            # comes every COUNT_EVERY tasks).
            dt = sample["at"] - previous["at"]
            completed = round((sample["done"] - previous["done"]) / dt) if dt > 0 else None
        entry = {
            "t": k,
            "offered": offered[k],
            "completed": completed,
            "pickups": len(waits[k]),
            "pickup_p50_ms": _ms(figures["p50"]),
            "pickup_p99_ms": _ms(figures["p99"]),
            "stall_ms": round(worst[k] * 1000, 1),
        }
        if sample:
            previous = sample
        entry.update({key: v for key, v in sample.items() if key != "done"})
        out.append(entry)
    return out


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def one_run(kit: Kit, rate: int, seconds: float, held: bool) -> dict[str, Any]:
    """The paced load at ``rate`` for ``seconds`` on an empty table, the horizon held by a
    second connection throughout when ``held``; then the drain, timed from the moment the
    load stops and the holder ends; then the table once idle, before and after a timed
    ``VACUUM``."""
    kit.truncate()
    database = dbenv.database_name()
    with (
        harness.Probe() as probe,
        harness.connect(database) as look,
    ):
        # The previous run's writes are not to be flushed during this one; a role that may
        # not CHECKPOINT is measured as it is.
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            look.execute("CHECKPOINT")
        env = harness.subprocess_env(
            AIOTASKQ_BENCH_PROBE=probe.address, AIOTASKQ_BENCH_EVERY=str(COUNT_EVERY)
        )
        name = f"horizon-{rate}-{'held' if held else 'plain'}"
        proc = kit.start_worker(name, kit.log_dir, env, "--concurrency", str(CONCURRENCY))
        sends: list[tuple[float, int]] = []
        holder: dict[str, Any] = {}
        try:
            proc.wait_line("worker.started", timeout=60)
            with TableSampler(proc.proc.pid, probe, database) as sampler:
                with _maybe_held(database, held) as holder:
                    t0 = time.time()
                    sampler.align(t0)
                    moments = [t0 + f * seconds for f in EXPLAIN_AT]
                    with Explainer(database, moments, t0) as explainer:
                        produced = kit.run_async(paced(seconds, rate, sends))
                    t_stop = time.time()
                    done_at_stop = probe.progress()
                t_released = time.time()
                row = look.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
                backlog = row[0] if row else None
                t_empty = _poll_empty(look, proc, timeout=300 + produced["enqueued"] / 2000)
                time.sleep(2.0)  # idle: the last acks and the statistics settle
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited ({proc.poll()}):\n{proc.tail()}")
            after_drain = table_size(look)
            vacuum_started = time.perf_counter()
            look.execute(f"VACUUM {TABLE}")
            vacuum_s = time.perf_counter() - vacuum_started
            after_vacuum = table_size(look)
        finally:
            rc = proc.stop()
        pickups = probe.pickups()
    spans = stalls(pickups)
    drain_s = None if t_empty is None else t_empty - t_released
    samples = sampler.samples
    series = per_second(t0=t0, sends=sends, pickups=pickups, spans=spans, samples=samples)
    during = [s for s in samples if s["at"] <= t_stop]
    last = during[-1] if during else {}
    first_av = (samples[0].get("autovacuum_count") or 0) if samples else 0
    first_aa = (samples[0].get("autoanalyze_count") or 0) if samples else 0
    return {
        "rate": rate,
        "held": held,
        "holder": holder,
        "seconds": seconds,
        "concurrency": CONCURRENCY,
        **produced,
        "completed_per_s": done_at_stop / produced["elapsed_s"],
        "pickup_samples": len(pickups),
        "pickup_s": harness.summarize([t - enq for enq, t in pickups]),
        # Stalls of the load itself; the drain's are in the series.
        "stall": stall_summary([sp for sp in spans if sp[0] < t_stop], t0),
        "depth_max": max((s["depth"] for s in during if s.get("depth") is not None), default=None),
        "at_stop": {
            key: last.get(key)
            for key in ("depth", "heap_bytes", "index_bytes", "total_bytes", "due_index_bytes")
        }
        | {"n_dead_tup": last.get("n_dead_tup"), "xmin_age": last.get("xmin_age")},
        "dead_max": max((s.get("n_dead_tup") or 0 for s in during), default=None),
        "cpu_busy_mean": _mean([s["cpu_busy"] for s in during if s.get("cpu_busy") is not None]),
        "total_bytes_max": max((s.get("total_bytes") or 0 for s in during), default=None),
        "autovacuums_during_load": (last.get("autovacuum_count") or 0) - first_av,
        "autoanalyzes_during_load": (last.get("autoanalyze_count") or 0) - first_aa,
        # Where autovacuum is off, the worker's table keeper vacuums (VACUUM (ANALYZE)).
        "vacuums_during_load": (last.get("vacuum_count") or 0)
        - ((samples[0].get("vacuum_count") or 0) if samples else 0),
        "backlog_at_stop": backlog,
        # None: not drained within the timeout (the other runs go on).
        "drain_s": drain_s,
        "drain_per_s": None if drain_s is None else (backlog or 0) / max(drain_s, 1e-9),
        "table_after_drain": after_drain,
        "vacuum_after_drain_s": vacuum_s,
        "table_after_vacuum": after_vacuum,
        "explain": explainer.results,
        "per_second": series,
        "t0": t0,
        "t_stop_s": t_stop - t0,
        "worker_exit": rc,
    }


@contextmanager
def _maybe_held(database: str, held: bool) -> Iterator[dict[str, Any]]:
    if not held:
        yield {}
        return
    with held_horizon(database) as holder:
        yield holder


def _poll_empty(
    conn: psycopg.Connection[Any], proc: harness.WorkerProcess, timeout: float
) -> float | None:
    """When the table was first seen empty, or ``None`` after ``timeout`` seconds: a drain
    that does not end is a figure of the run, not the end of the scenario."""
    deadline = time.monotonic() + timeout
    while True:
        t = time.time()
        row = conn.execute(f"SELECT EXISTS (SELECT 1 FROM {TABLE})").fetchone()
        if row is not None and not row[0]:
            return t
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited ({proc.poll()}):\n{proc.tail()}")
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)


def bench_horizon(kit: Kit, seconds: float, rates: Sequence[int] = RATES) -> dict[str, Any]:
    """Each rate of ``rates``, plain then held, ``seconds`` each."""
    runs = []
    for rate in rates:
        for held in (False, True):
            runs.append(one_run(kit, rate, seconds, held))
    return {
        "seconds": seconds,
        "concurrency": CONCURRENCY,
        "stall_limit_s": STALL_LIMIT,
        "sample_one_in": SUSTAINED_SAMPLE,
        "runs": runs,
    }


# The table and the chart ------------------------------------------------------------------


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's rows of this scenario, as keyword arguments of run.py's ``Row``."""
    out: list[dict[str, Any]] = []
    r = results.get("horizon")
    if not r:
        return out

    def row(label: str, unit: str, higher: bool, value: Any, target: Any = None) -> None:
        out.append(harness.table_row(label, unit, higher, value, target))

    for run in r["runs"]:
        head = (
            f"horizon: {run['rate']:,}/s {run['seconds']:.0f} s c={run['concurrency']}, "
            f"{'held' if run['held'] else 'plain'}"
        )
        label = f"{head}, completed (offered {run['enqueued_per_s']:,.0f}/s)"
        # The count arrives every COUNT_EVERY tasks and the last batch is still running when
        # the load stops: within 1 % of the offered rate is keeping up.
        row(label, "tasks/s", True, run["completed_per_s"], run["enqueued_per_s"] * 0.99)
        for p, target in (("p50", None), ("p99", 20.0)):
            value = run["pickup_s"][p]
            row(f"{head}, pickup {p}", "ms", False, None if value is None else value * 1000, target)
        worst = run["stall"]["worst_s"]
        label = f"{head}, worst stall ({run['stall']['over_limit']} over 250 ms)"
        row(label, "ms", False, None if worst is None else worst * 1000, 250.0)
        at_stop = run["at_stop"]
        label = f"{head}, table at the end ({at_stop['n_dead_tup'] or 0:,} dead)"
        row(label, "kB", False, (at_stop["total_bytes"] or 0) / 1024)
        row(f"{head}, drain after the end", "s", False, run["drain_s"])
    return out


def chart_data(results: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """What ``benchmarks/chart_horizon.py`` draws: each run's per-second series."""
    r = results["horizon"]
    keep = ("t", "offered", "completed", "pickup_p99_ms", "total_bytes", "n_dead_tup", "depth")
    return {
        "meta": {k: meta.get(k) for k in ("when", "postgresql", "python", "cpus", "quick")},
        "seconds": r["seconds"],
        "concurrency": r["concurrency"],
        "runs": [
            {
                "rate": run["rate"],
                "held": run["held"],
                "t_stop_s": run["t_stop_s"],
                "series": [{k: s.get(k) for k in keep} for s in run["per_second"]],
            }
            for run in r["runs"]
        ],
    }


def draw(results: dict[str, Any], meta: dict[str, Any], results_dir: Path) -> tuple[Path, str]:
    """Write ``horizon.json`` and draw ``horizon.png`` in ``results_dir`` (with matplotlib
    from the chart's own virtualenv); return the image and why it was not drawn, or ``""``."""
    from benchmarks import compare

    results_dir.mkdir(parents=True, exist_ok=True)
    data = results_dir / "horizon.json"
    data.write_text(json.dumps(chart_data(results, meta), indent=1))
    png = results_dir / "horizon.png"
    return png, compare.draw_chart(data, png, script="chart_horizon.py")
