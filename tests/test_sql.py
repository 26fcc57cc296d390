"""Every statement in queries.sql runs against the migrated schema, and the claim uses the
partial index."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg import sql

from aiotaskq.db import sql as queries
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
        "channels": [channel_for("q")],
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
        "channel": channel_for("q"),
    },
    "ping": {},
    "claim": {"queues": ["q"], "limit": 10, "worker_id": "w"},
    "next_eta": {"queues": ["q"]},
    "heartbeat": {"ids": "{" + str(uuid.uuid4()) + "}", "attempts": "{1}", "worker_id": "w"},
    "ack": {"ids": "{" + str(uuid.uuid4()) + "}", "attempts": "{1}", "worker_id": "w"},
    "fail": {
        "ids": "{" + str(uuid.uuid4()) + "}",
        "attempts": "{1}",
        "worker_id": "w",
        "errors": ["{}"],
    },
    "release": {
        "ids": "{" + str(uuid.uuid4()) + "}",
        "attempts": "{1}",
        "worker_id": "w",
        "channels": [channel_for("q")],
    },
    "retry": {
        "ids": "{" + str(uuid.uuid4()) + "}",
        "attempts": "{1}",
        "worker_id": "w",
        "errors": [None],
        "countdowns": [1.5],
        "etas": [None],
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
    "delete": {
        "ids": [uuid.uuid4()],
        "queue": None,
        "failed": True,
        "dirty": True,
        "succeeded": True,
        "dirty_after": 10.0,
    },
    "succeed": {
        "ids": "{" + str(uuid.uuid4()) + "}",
        "attempts": "{1}",
        "worker_id": "w",
        "values": ["1"],
        "retentions": [60.0],
    },
    "prune": {"limit": 10},
    "result": {"id": uuid.uuid4(), "dirty_after": 10.0},
    "status": {"dirty_after": 10.0},
}


def test_every_statement_runs(db: Any) -> None:
    names = queries.names()
    assert set(names) == set(PARAMS) | {"listen", "enqueue_copy"}
    for name in names:
        if name == "listen":
            db.execute(queries.query(name).format(channel=sql.Identifier(channel_for("q"))))
            continue
        if name == "enqueue_copy":
            with db.transaction(force_rollback=True), db.cursor() as cur:
                with cur.copy(queries.text(name)) as copy:
                    copy.set_types(["uuid", "text", "text", "int4", "bytea", "bytea", "float8"])
                    copy.write_row((uuid.uuid4(), "t", "q", 0, b"\x01[]", b"\x01{}", None))
                assert cur.rowcount == 1
            continue
        with db.transaction(force_rollback=True):
            db.execute(queries.text(name), PARAMS[name])


def test_channel_names_fit_and_differ() -> None:
    assert channel_for("default") == "aiotaskq:default"
    long_a, long_b = "a" * 63, "a" * 62 + "b"
    assert len(channel_for(long_a).encode()) <= 63
    assert channel_for(long_a) != channel_for(long_b)


def test_claim_walks_the_partial_index(db: Any) -> None:
    db.execute(
        "INSERT INTO aiotaskq_task (id, name, queue, execute_at) "
        "SELECT gen_random_uuid(), 't', 'q', now() + (i % 2) * interval '1 hour' "
        "FROM generate_series(1, 20000) AS i"
    )
    db.execute("ANALYZE aiotaskq_task")
    with db.transaction(force_rollback=True):
        db.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        plan = "\n".join(
            row[0]
            for row in db.execute(
                sql.SQL("EXPLAIN ") + sql.SQL(queries.text("claim")),
                {"queues": ["q"], "limit": 50, "worker_id": "w"},
            ).fetchall()
        )
    assert "aiotaskq_task_due" in plan, plan


def test_errors_through_djangos_cursor_are_ours_too() -> None:
    import pytest

    from aiotaskq import DatabaseError
    from aiotaskq.db import control

    with pytest.raises(DatabaseError, match="Revoking failed") as info:
        control.revoke_sync("not-a-uuid", "default")  # type: ignore[arg-type]
    assert info.value.__cause__ is not None
