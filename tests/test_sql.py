"""Every statement in queries.sql runs against the migrated schema, and the claim uses the
partial index."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

import psycopg
from psycopg import sql

from aiotaskq.db import enqueue as db_enqueue
from aiotaskq.db import sql as queries
from aiotaskq.db.connect import WorkerDatabase
from aiotaskq.db.listen import channel_for

PARAMS: dict[str, dict[str, Any]] = {
    "enqueue": {
        "ids": [uuid.uuid4()],
        "names": ["t"],
        "queues": ["q"],
        "priorities": [0],
        "args": ["[]"],
        "kwargs": ["{}"],
        "etas": [None],
        "countdowns": [None],
        "expires_ats": [None],
        "expires_ins": [None],
        "time_limits": [None],
        "limit_keys": ["host-a"],
        "traces": ['{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}'],
        "channels": [channel_for("q")],
        "payloads": ["limits"],
    },
    "enqueue_one": {
        "id": uuid.uuid4(),
        "name": "t",
        "queue": "q",
        "priority": 0,
        "args": "[]",
        "kwargs": "{}",
        "eta": None,
        "countdown": 1.5,
        "expires_at": None,
        "expires_in": None,
        "time_limit": None,
        "limit_key": None,
        "trace": None,
        "channel": channel_for("q"),
        "payload": "",
    },
    "enqueue_unique": {
        "ids": [uuid.uuid4(), uuid.uuid4()],
        "names": ["t", "t"],
        "queues": ["q", "q"],
        "priorities": [0, 0],
        "args": ["[]", "[1]"],
        "kwargs": ["{}", "{}"],
        "etas": [None, None],
        "countdowns": [None, 2.0],
        "expires_ats": [None, None],
        "expires_ins": [None, None],
        "time_limits": [None, None],
        "keys": ["k", "k"],
        "replaces": [False, True],
        "dirty_afters": [10.0, None],
        "limit_keys": [None, "k"],
        "channels": [channel_for("q")],
        "payloads": ["limits"],
    },
    "trace_keyed": {"ids": [uuid.uuid4()], "traces": ['{"traceparent": "x"}']},
    "traces_of": {"ids": [uuid.uuid4()]},
    "status_plan": {},
    "unique_prune": {"limit": 10},
    "limits_status": {"dirty_after": 10.0, "limit": 10},
    "limit_prune": {"limit": 10},
    "claim_limited": {
        "queues": ["q", "r"],
        "lanes": [1, 1],
        "demands": [10],
        "names": ["t"],
        "max_running": [2],
        "intervals": [0.1],
        "bursts": [10],
        "after_queue": None,
        "after_name": None,
        "after_key": None,
        "worker_id": "w",
        "dirty_after": 10.0,
    },
    "unique_health": {},
    "ping": {},
    "table_health": {},
    "kept_partitions": {},
    "advisory_try": {"key": 1},
    "advisory_release": {"key": 1},
    "claim": {
        "queues": ["q", "r"],
        "priorities": [0, 0],
        "starts": [0, 0],
        "lanes": [0, 1],
        "demands": [10, 5],
        "worker_id": "w",
    },
    "next_eta": {"queues": ["q"]},
    "promote": {"queues": ["q"], "limit": 10, "channels": [channel_for("q")]},
    "positions_taken": {},
    "oldest_snapshot": {},
    "position_writers": {},
    "ready_between": {"queues": ["q"], "after": 0, "upto": 2**63 - 1},
    "heartbeat": {
        "ids": "{" + str(uuid.uuid4()) + "}",
        "attempts": "{1}",
        "worker_id": "w",
        "progress": "{}",
    },
    "checkpoint": {"id": uuid.uuid4(), "attempt": 1, "worker_id": "w", "value": '{"n": 1}'},
    "worker_beat": {
        "id": "h:1:x",
        "host": "h",
        "pid": 1,
        "queues": '[{"name": "default", "cap": null}, {"name": "exports", "cap": 2}]',
        "concurrency": 10,
        "in_flight": 0,
        "started_at": dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
    },
    "worker_leave": {"id": "h:1:x"},
    "worker_prune": {},
    "workers": {"dirty_after": 10.0},
    "look": {"ids": [uuid.uuid4()]},
    "look_locked": {"ids": [uuid.uuid4()]},
    "wait_register": {"ids": [uuid.uuid4()], "waiter": "h:1:x"},
    "wait_unregister": {"ids": None, "waiter": "h:1:x"},
    "wait_prune": {"limit": 10},
    "in_progress": {"limit": 10},
    "schedule_sync": {"names": ["s"], "tasks": ["t"]},
    "schedule_fire": {
        "schedule": "s",
        "expected": None,
        "tick": dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
        "id": uuid.uuid4(),
        "name": "t",
        "queue": "q",
        "priority": 0,
        "args": "[]",
        "kwargs": "{}",
        "time_limit": None,
        "skip_overlap": True,
        "channel": channel_for("q"),
    },
    "schedule_list": {},
    "ack": {"ids": "{" + str(uuid.uuid4()) + "}", "attempts": "{1}", "worker_id": "w"},
    "fail": {
        "items": f'[{{"id": "{uuid.uuid4()}", "attempt": 1, "error": {{}}}}]',
        "worker_id": "w",
    },
    "release": {
        "ids": "{" + str(uuid.uuid4()) + "}",
        "attempts": "{1}",
        "worker_id": "w",
        "channels": [channel_for("q")],
    },
    "retry": {
        "items": f'[{{"id": "{uuid.uuid4()}", "attempt": 1, "countdown": 1.5}}]',
        "worker_id": "w",
        "channels": [channel_for("q")],
    },
    "rescue": {
        "names": ["t"],
        "max_retries": [None],
        "queues": ["q"],
        "dirty_after": 10.0,
        "worker_id": "w",
    },
    "revoke": {"ids": [uuid.uuid4()], "channel": "aiotaskq/control"},
    "requeue": {"ids": None, "queue": "q", "failed": True, "dirty": False, "dirty_after": 10.0},
    "notify": {"channels": [channel_for("q")]},
    "notify_limited": {"channels": [channel_for("q")], "payload": "limits"},
    "delete": {
        "ids": [uuid.uuid4()],
        "queue": None,
        "failed": True,
        "dirty": True,
        "succeeded": True,
        "dirty_after": 10.0,
    },
    "succeed": {
        "items": f'[{{"id": "{uuid.uuid4()}", "attempt": 1, "value": 1, "retention": 60.0}}]',
        "worker_id": "w",
    },
    "prune": {"limit": 10},
    "ring": {},
    "segment_rows": {"segment": 0, "limit": 10},
    "rotate_begin": {"key": 1, "lock_timeout": "50ms"},
    "rotate_move": {"segment": 0},
    "result": {"id": uuid.uuid4(), "dirty_after": 10.0},
    "status": {"dirty_after": 10.0},
}


def test_every_statement_runs(db: Any) -> None:
    names = queries.names()
    segmented = {"rotate_lock", "rotate_truncate"}
    tabled = {"vacuum", "analyze"}
    alone = {"unique_vacuum"}
    assert set(names) == set(PARAMS) | {"listen", "enqueue_copy"} | segmented | tabled | alone
    for name in names:
        if name in alone:  # VACUUM cannot run inside a transaction
            db.execute(queries.text(name))
            continue
        if name in tabled:
            db.execute(queries.query(name).format(tables=sql.Identifier("aiotaskq_task_cold")))
            continue
        if name == "listen":
            db.execute(queries.query(name).format(channel=sql.Identifier(channel_for("q"))))
            continue
        if name in segmented:
            with db.transaction(force_rollback=True):
                db.execute(
                    queries.query(name).format(segment=sql.Identifier("aiotaskq_task_ring0"))
                )
            continue
        if name == "enqueue_copy":
            with db.transaction(force_rollback=True), db.cursor() as cur:
                with cur.copy(queries.text(name)) as copy:
                    copy.set_types(db_enqueue._COPY_TYPES)
                    copy.write_row(
                        (
                            uuid.uuid4(),
                            "t",
                            "q",
                            0,
                            b"\x01[]",
                            b"\x01{}",
                            None,
                            None,
                            b'\x01{"a": 1}',
                        )
                    )
                assert cur.rowcount == 1
            continue
        with db.transaction(force_rollback=True):
            db.execute(queries.text(name), PARAMS[name])


def test_channel_names_fit_and_differ() -> None:
    assert channel_for("default") == "aiotaskq:default"
    long_a, long_b = "a" * 63, "a" * 62 + "b"
    assert len(channel_for(long_a).encode()) <= 63
    assert channel_for(long_a) != channel_for(long_b)


# The claim's cost must follow the batch, not the table: at 100k future and 100k due rows a
# claim of LIMIT rows reads about a dozen buffers per row (the index leaf, the heap page, the
# row's new version and its index entries), while the table's heap alone is some 4,000 pages.
CLAIM_FUTURE = CLAIM_DUE = 100_000
CLAIM_BUFFERS_PER_ROW = 20  # about 13 measured; room for page splits, not for a scan


def _plan_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", []) for n in _plan_nodes(child))]


def _explain_claim(db: Any, mode: str, params: dict[str, Any]) -> dict[str, Any]:
    with db.transaction(force_rollback=True):
        db.execute(sql.SQL("SET LOCAL plan_cache_mode = {}").format(sql.Identifier(mode)))
        ((explained,),) = db.execute(
            sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ") + sql.SQL(queries.text("claim")),
            {**params, "worker_id": "w"},
        ).fetchall()
    return explained[0]["Plan"]  # type: ignore[no-any-return]


def _fill(db: Any, queues: list[str]) -> int:
    """CLAIM_FUTURE future and CLAIM_DUE due rows, spread over ``queues``; the heap's pages."""
    db.execute(
        "INSERT INTO aiotaskq_task (id, name, queue, execute_at) "
        "SELECT gen_random_uuid(), 't', (%(queues)s::text[])[1 + i %% cardinality(%(queues)s)], "
        "       CASE WHEN i <= %(future)s THEN now() + interval '1 hour' "
        "            ELSE now() - interval '1 second' END "
        "FROM generate_series(1, %(total)s) AS i",
        {"queues": queues, "future": CLAIM_FUTURE, "total": CLAIM_FUTURE + CLAIM_DUE},
    )
    # As the worker's keeper does: the partitions that have pages (an empty segment analyzed
    # would be planned as empty).
    ((tables,),) = db.execute(queries.text("kept_partitions")).fetchall()
    db.execute(
        queries.query("analyze").format(tables=sql.SQL(", ").join(map(sql.Identifier, tables)))
    )
    (heap_pages,) = db.execute(
        "SELECT sum(pg_relation_size(relid)) / current_setting('block_size')::int "
        "FROM pg_partition_tree('aiotaskq_task')"
    ).fetchone()
    return int(heap_pages)


def _due_scans(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The scans of aiotaskq_task_due: one per partition (aiotaskq_task_cold_due,
    aiotaskq_task_ring0_due, ...)."""
    return [n for n in nodes if re.fullmatch(r"aiotaskq_task_\w+_due", n.get("Index Name", ""))]


def _ranges(queues: list[str], lanes: list[int], demands: list[int]) -> dict[str, Any]:
    """The claim's parameters for the default priority of each queue, read from the start."""
    return {
        "queues": queues,
        "priorities": [0] * len(queues),
        "starts": [0] * len(queues),
        "lanes": lanes,
        "demands": demands,
    }


def _check_plan(top: dict[str, Any], where: str, demands: list[int], heap_pages: int) -> None:
    nodes = _plan_nodes(top)
    due = _due_scans(nodes)
    assert len(due) == 3, f"{where}: the claim does not use aiotaskq_task_due:\n{top}"
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], where
    total = sum(demands)
    # Rows examined: the index scans (once per queue and partition) stop after each queue's
    # demand and filter nothing out. (EXPLAIN shows the rows of a loop on average, rounded.)
    loops = due[0].get("Actual Loops", 1)
    examined = sum(n["Actual Rows"] * n.get("Actual Loops", 1) for n in due)
    assert abs(examined - total) < loops * len(due), where
    assert all(n.get("Rows Removed by Filter", 0) == 0 for n in due), where
    assert top["Actual Rows"] == total, where
    buffers = top["Shared Hit Blocks"] + top["Shared Read Blocks"]
    assert buffers <= CLAIM_BUFFERS_PER_ROW * total, f"{where}: {buffers} buffers"
    assert buffers < heap_pages / 2, f"{where}: {buffers} of {heap_pages} pages"


def test_claim_walks_the_partial_index(db: Any) -> None:
    heap_pages = _fill(db, ["q"])
    # A prepared statement (the worker's) may switch to the generic plan: check both.
    for mode in ("force_custom_plan", "force_generic_plan"):
        for limit in (10, 100):
            params = _ranges(["q"], [0], [limit])
            top = _explain_claim(db, mode, params)
            _check_plan(top, f"{mode}, limit {limit}", [limit], heap_pages)


def test_claim_of_several_lanes_walks_the_partial_index(db: Any) -> None:
    """Four queues, each its own lane with its own demand: every lane gets exactly its
    demand, and the rows read follow the sum of the demands, not the table."""
    queues = ["critical", "exports", "default", "webhooks"]
    heap_pages = _fill(db, queues)
    for mode in ("force_custom_plan", "force_generic_plan"):
        for demands in ([10, 2, 50, 1], [40, 40, 3, 7]):
            params = _ranges(queues, [0, 1, 2, 3], demands)
            top = _explain_claim(db, mode, params)
            where = f"{mode}, demands {demands}"
            due = _due_scans(_plan_nodes(top))
            assert due, where
            assert all(n["Actual Loops"] == len(queues) for n in due), where
            _check_plan(top, where, demands, heap_pages)


def test_claim_gives_each_lane_its_demand(db: Any) -> None:
    """A backlog in one lane does not crowd another out of the batch, and two queues that
    share a lane get the lane's demand between them, best first."""
    db.execute(
        "INSERT INTO aiotaskq_task (id, name, queue, priority, execute_at) "
        "SELECT gen_random_uuid(), 't', q, p, now() - interval '1 second' "
        "FROM (VALUES ('exports', 0, 500), ('critical', 0, 3), ('a', 1, 4), ('b', 0, 4)) "
        "     AS v(q, p, n), generate_series(1, n)"
    )
    with db.transaction(force_rollback=True):
        rows = db.execute(
            queries.text("claim"),
            {
                # a's tasks have priority 1: its two ranges (1 and the default 0) ask for
                # the lane's demand each.
                "queues": ["exports", "critical", "a", "a", "b"],
                "priorities": [0, 0, 1, 0, 0],
                "starts": [0, 0, 0, 0, 0],
                "lanes": [0, 1, 2, 2, 2],
                "demands": [2, 10, 5, 5, 5],
                "worker_id": "w",
            },
        ).fetchall()
    got: dict[str, int] = {}
    for row in rows:
        if row[13]:  # Kept; the others say what a lane left, per range.
            got[row[2]] = got.get(row[2], 0) + 1
    left = {(row[2], row[9]) for row in rows if not row[13]}
    assert left == {("b", 0)}
    # exports: its 2 of 500; critical: all 3 it has; the shared lane of a and b: 5, a's
    # higher priority first.
    assert got == {"exports": 2, "critical": 3, "a": 4, "b": 1}


def test_errors_through_djangos_cursor_are_ours_too() -> None:
    import pytest

    from aiotaskq import DatabaseError
    from aiotaskq.db import control

    with pytest.raises(DatabaseError, match="Revoking failed") as info:
        control.revoke_sync("not-a-uuid", "default")  # type: ignore[arg-type]
    assert info.value.__cause__ is not None


# The worker's statements, prepared on its pooled connections.
WORKER_STATEMENTS = (
    "claim",
    "next_eta",
    "promote",
    "positions_taken",
    "position_writers",
    "heartbeat",
    "ack",
    "succeed",
    "fail",
    "retry",
    "release",
)


def _positional(text: str) -> tuple[str, list[str]]:
    """``text`` with its named parameters as $1, $2... (in order of first use), as psycopg
    sends a prepared statement, and the names in that order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    return re.sub(r"%\((\w+)\)s", number, text), names


async def test_worker_plans_stay_on_indexes_after_the_table_grows(db: Any) -> None:
    """A worker that starts on an empty table prepares its statements there, and PostgreSQL
    may cache a generic plan that scans the (then empty) table. Once the table holds 200k
    rows, with no ANALYZE since (autovacuum off or behind), no cached plan of the worker may
    scan it."""
    database = WorkerDatabase("aiotaskq-plan-test", 2)
    await database.open(wait=False)
    try:
        async with database.connection("Planning") as conn:
            cursor = psycopg.AsyncClientCursor(conn)
            executes = {}
            for statement in WORKER_STATEMENTS:
                text, names = _positional(queries.text(statement))
                await conn.execute(f"PREPARE probe_{statement} AS {text}".encode())
                arguments = ", ".join(["%s"] * len(names))
                executes[statement] = cursor.mogrify(
                    f"EXECUTE probe_{statement}({arguments})"
                    if names
                    else f"EXECUTE probe_{statement}",
                    [PARAMS[statement][name] for name in names],
                )
            # Past the five custom plans after which PostgreSQL may keep a generic one.
            for _ in range(8):
                for execute in executes.values():
                    await conn.execute(execute.encode())
            db.execute(
                "INSERT INTO aiotaskq_task (id, name, queue, state, worker_id) "
                "SELECT gen_random_uuid(), 't', 'q', "
                "       CASE WHEN i % 2 = 0 THEN 'running' ELSE 'queued' END, 'w' "
                "FROM generate_series(1, 200000) AS i"
            )
            for statement, execute in executes.items():
                plan = await conn.execute(f"EXPLAIN {execute}".encode())
                shown = "\n".join(row[0] for row in await plan.fetchall())
                assert "Seq Scan on aiotaskq_task" not in shown, f"{statement}:\n{shown}"
    finally:
        await database.close()


def test_heartbeat_never_waits_for_a_locked_row(db: Any) -> None:
    """The worker's ack locks rows while its heartbeat runs on another connection: the beat
    skips what is locked instead of waiting (two waiting statements deadlock)."""
    ids = [uuid.uuid4(), uuid.uuid4()]
    db.execute(
        "INSERT INTO aiotaskq_task (id, name, queue, state, worker_id, attempt, started_at) "
        "SELECT id, 't', 'q', 'running', 'w', 1, now() FROM unnest(%s::uuid[]) AS id",
        (ids,),
    )
    with psycopg.connect(db.info.dsn) as acking:
        acking.execute("SELECT 1 FROM aiotaskq_task WHERE id = %s FOR UPDATE", (ids[0],))
        with db.transaction(force_rollback=True):
            db.execute("SET LOCAL lock_timeout = '2s'")
            held = db.execute(
                queries.text("heartbeat"),
                {
                    "ids": "{" + ",".join(map(str, ids)) + "}",
                    "attempts": "{1,1}",
                    "worker_id": "w",
                    "progress": "{}",
                },
            ).fetchall()
        acking.rollback()
    assert held == [(ids[1],)]
