"""The ring's rotation (aiotaskq/db/rotate.py) on the real table: what lives in a segment moves
to cold whole, the segment's space comes back under a held xmin horizon, and a rotation that
cannot finish leaves everything where it was."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from aiotaskq.db import finish, rotate
from aiotaskq.db.connect import _configure_worker_connection
from aiotaskq.db.finish import Ack
from aiotaskq.errors import DatabaseError
from tests.conftest import task_db_conninfo

STATES = """
    INSERT INTO aiotaskq_task (id, name, queue, priority, state, execute_at, pos, attempt,
                               worker_id, started_at, alive_at, finished_at, return_value,
                               expires_at, errors, segment)
    SELECT gen_random_uuid(), 'rot.' || k, 'q' || mod(i, 3), mod(i, 2), s, e, p, a, w, st, st, f, r,
           x, jsonb_build_array(jsonb_build_object('i', i)), %(segment)s
    FROM generate_series(1, %(each)s) AS i,
    LATERAL (VALUES
        ('ready',   'queued',    now() - interval '1 s', nextval('aiotaskq_task_pos'), 0,
         NULL, NULL::timestamptz, NULL::timestamptz, NULL::jsonb, NULL::timestamptz),
        ('future',  'queued',    now() + interval '1 h', NULL, 0, NULL, NULL, NULL, NULL, NULL),
        ('running', 'running',   now() - interval '1 s', NULL, 1, 'w1', now(), NULL, NULL,
         NULL),
        ('failed',  'failed',    now() - interval '1 s', NULL, 3, 'w1', now(), now(), NULL,
         NULL),
        ('kept',    'succeeded', now() - interval '1 s', NULL, 1, 'w1', now(), now(),
         '{"v": "\\u00e9"}', now() + interval '1 h')
    ) AS v(k, s, e, p, a, w, st, f, r, x)
"""


def _rows(db: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    """Every row, every column but the segment, by id."""
    rows = db.execute("SELECT to_jsonb(t) - 'segment' FROM aiotaskq_task t").fetchall()
    return {row[0]["id"]: row[0] for (row) in rows}


def _where(db: psycopg.Connection[Any]) -> dict[int, int]:
    return dict(db.execute("SELECT segment, count(*) FROM aiotaskq_task GROUP BY 1").fetchall())


def _pages(db: psycopg.Connection[Any], segment: int) -> int:
    (size,) = db.execute(
        "SELECT pg_relation_size(%s::regclass)", (rotate.segment_table(segment),)
    ).fetchone() or (0,)
    return int(size)


@pytest.fixture
def held() -> Iterator[psycopg.Connection[Any]]:
    """A second session whose transaction holds the xmin horizon (it touches no task)."""
    with psycopg.connect(task_db_conninfo()) as conn:
        conn.execute("SELECT txid_current()")
        yield conn
        conn.rollback()


@pytest.fixture
async def conn() -> Any:
    async with await psycopg.AsyncConnection.connect(task_db_conninfo(), autocommit=True) as c:
        yield c


@pytest.mark.parametrize("segment", [0, 1])
async def test_rotation_moves_what_lives_and_gives_the_space_back(
    db: psycopg.Connection[Any], held: psycopg.Connection[Any], conn: Any, segment: int
) -> None:
    # Dead rows the held horizon keeps (as acks leave them), then rows of every state.
    db.execute(STATES, {"segment": segment, "each": 2000})
    db.execute("DELETE FROM aiotaskq_task")
    db.execute(STATES, {"segment": segment, "each": 40})
    before = _rows(db)
    assert _where(db) == {segment: 200}
    assert _pages(db, segment) > 100

    done = await rotate.rotate(conn, segment)

    assert (done.outcome, done.moved) == ("rotated", 200)
    assert _pages(db, segment) == 0, "the space is back while the horizon is held"
    assert _where(db) == {-1: 200}
    assert _rows(db) == before, "every row moved with every column as it was"


async def test_a_transaction_that_still_writes_the_segment_holds_the_rotation_off(
    db: psycopg.Connection[Any], conn: Any
) -> None:
    with psycopg.connect(task_db_conninfo()) as writer:
        writer.execute(STATES, {"segment": 1, "each": 1})  # not committed yet
        done = await rotate.rotate(conn, 1)
        assert done.outcome == "busy"
        assert done.held_s < 1.0, "it gave up after its lock_timeout"
        writer.commit()
    done = await rotate.rotate(conn, 1)
    assert (done.outcome, done.moved) == ("rotated", 5)
    assert _where(db) == {-1: 5}


async def test_a_rotation_killed_between_move_and_truncate_loses_nothing(
    db: psycopg.Connection[Any], conn: Any
) -> None:
    db.execute(STATES, {"segment": 0, "each": 20})
    before = _rows(db)
    pid = conn.info.backend_pid

    async def kill() -> None:
        # The move is done (inside the transaction, which holds the segment's lock: nothing
        # here may read it); the backend ends before the truncate.
        db.execute("SELECT pg_terminate_backend(%s)", (pid,))

    with pytest.raises(DatabaseError):
        await rotate.rotate(conn, 0, after_move=kill)
    assert _rows(db) == before
    assert _where(db) == {0: 100}, "the move rolled back with the transaction"
    async with await psycopg.AsyncConnection.connect(task_db_conninfo(), autocommit=True) as c:
        done = await rotate.rotate(c, 0)
    assert (done.outcome, done.moved) == ("rotated", 100)
    assert _rows(db) == before


async def test_a_segment_with_too_many_rows_waits_for_a_later_turn(
    db: psycopg.Connection[Any], conn: Any
) -> None:
    db.execute(STATES, {"segment": 1, "each": 3})
    done = await rotate.rotate(conn, 1, move_limit=14)
    assert done.outcome == "postponed"
    assert _where(db) == {1: 15}
    done = await rotate.rotate(conn, 1, move_limit=15)
    assert (done.outcome, done.moved) == ("rotated", 15)


async def test_one_rotation_at_a_time(db: psycopg.Connection[Any], conn: Any) -> None:
    db.execute(STATES, {"segment": 0, "each": 1})
    with psycopg.connect(task_db_conninfo()) as other:
        other.execute("SELECT pg_advisory_xact_lock(%s)", (rotate.ROTATE_LOCK,))
        assert (await rotate.rotate(conn, 0)).outcome == "elsewhere"
    assert (await rotate.rotate(conn, 0)).outcome == "rotated"


def test_new_rows_go_to_the_segment_of_the_database_clock(db: psycopg.Connection[Any]) -> None:
    rows = db.execute(
        "SELECT aiotaskq_segment(t) FROM (VALUES (timestamptz '2026-01-01 00:00:00+00'), "
        "(timestamptz '2026-01-01 00:00:09.999+00'), (timestamptz '2026-01-01 00:00:10+00'), "
        "(timestamptz '2026-01-01 00:00:20+00')) AS v(t)"
    ).fetchall()
    assert [r[0] for r in rows] == [0, 0, 1, 0]
    db.execute("INSERT INTO aiotaskq_task (id, name) VALUES (gen_random_uuid(), 't')")
    ((segment, expected),) = db.execute(
        "SELECT segment, aiotaskq_segment(now()) FROM aiotaskq_task"
    ).fetchall()
    assert segment == expected


async def test_due_names_the_next_segment_once_it_has_pages(
    db: psycopg.Connection[Any], conn: Any
) -> None:
    db.execute(STATES, {"segment": 0, "each": 1})
    db.execute(STATES, {"segment": 1, "each": 1})
    (current, into) = db.execute(
        "SELECT aiotaskq_segment(now()), mod(extract(epoch FROM now())::numeric, 10)"
    ).fetchone() or (None, None)
    due = await rotate.due(conn)
    if into >= 5:
        assert due is not None
        assert due.segment == 1 - current
        assert (await rotate.rotate(conn, due.segment)).outcome == "rotated"
        assert await rotate.due(conn) is None, "an emptied segment is not due again"
    else:
        assert due is None, "too early in this turn"


def _index_lookups(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of a plan that reads a partition of the task table."""
    if str(plan.get("Relation Name", "")).startswith("aiotaskq_task") or str(
        plan.get("Index Name", "")
    ).startswith("aiotaskq_task"):
        yield plan
    for child in plan.get("Plans", []):
        yield from _index_lookups(child)


@pytest.mark.parametrize("statement", ["heartbeat", "ack"])
async def test_lookups_by_id_stay_on_the_key_when_a_segment_fills_again(
    db: psycopg.Connection[Any], conn: Any, statement: str
) -> None:
    """A worker's statements are prepared. A plan PostgreSQL caches while a segment is empty
    (just emptied by a rotation, or never used yet) reads that segment's whole index for every
    id once the segment has filled again, and keeps doing so until something invalidates it:
    under a held horizon, seconds a statement. The worker plans each execution afresh."""
    await _configure_worker_connection(conn)
    # A segment that the keeper analyzed once, then a rotation emptied: TRUNCATE leaves its
    # statistics saying it is empty, and the next plan of each statement is made from them.
    db.execute(
        "INSERT INTO aiotaskq_task (id, name, state, attempt, worker_id, segment) "
        "SELECT gen_random_uuid(), 'before', 'running', 1, 'w1', 0 FROM generate_series(1, 500)"
    )
    db.execute("ANALYZE aiotaskq_task_ring0")
    db.execute("TRUNCATE aiotaskq_task_ring0")
    leases = [(uuid.uuid4(), 1) for _ in range(10)]
    for _ in range(8):  # past the five custom plans after which PostgreSQL may cache one
        if statement == "heartbeat":
            await finish.heartbeat(conn, leases, "w1")
        else:
            await finish.write(conn, [Ack(lease) for lease in leases], "w1")
    # The segment fills: running rows of this worker, as claims leave them.
    db.execute(
        "INSERT INTO aiotaskq_task (id, name, state, attempt, worker_id, segment) "
        "SELECT gen_random_uuid(), 'fill', 'running', 1, 'w1', 0 FROM generate_series(1, 20000)"
    )
    needle = "SET alive_at" if statement == "heartbeat" else "DELETE FROM aiotaskq_task t"
    cur = await conn.execute(
        "SELECT name FROM pg_prepared_statements WHERE statement LIKE %s", (f"%{needle}%",)
    )
    (name,) = await cur.fetchone() or (None,)
    assert name is not None
    ids = "{" + ",".join(str(i) for i, _ in leases) + "}"
    params = [ids, "{" + ",".join("1" * len(leases)) + "}", "w1"]
    if statement == "heartbeat":
        params.append("{}")  # no progress
    values = [sql.Literal(v) for v in params]
    cur = await conn.execute(
        sql.SQL("EXPLAIN (FORMAT JSON) EXECUTE {}({})").format(
            sql.Identifier(name), sql.SQL(", ").join(values)
        )
    )
    ((plan,),) = await cur.fetchall()
    # Planned for these values, now: a cached plan shows the parameter ($3), not 'w1'.
    assert "$3" not in json.dumps(plan), plan
    assert "'w1'" in json.dumps(plan), plan
    nodes = list(_index_lookups(plan[0]["Plan"]))
    assert {n["Relation Name"] for n in nodes if "Relation Name" in n} >= {
        "aiotaskq_task_cold",
        "aiotaskq_task_ring0",
        "aiotaskq_task_ring1",
    }
    for node in nodes:
        assert node["Node Type"] != "Seq Scan", node
        if "Index Name" in node:
            assert "(id = " in node.get("Index Cond", ""), node
