from django.db import migrations

# The task table becomes a partitioned table (docs/storage.md, "Rotating segments"): a ring
# of two partitions that take new tasks in turn, ten seconds each, and a cold partition that
# keeps what outlives its segment. A worker empties the segment that comes next: under one
# short ACCESS EXCLUSIVE lock it moves the rows that still live there to cold, then truncates
# it. TRUNCATE gives the space back whatever transaction holds the xmin horizon; VACUUM
# cannot, and under a long transaction elsewhere the table grew for as long as it lasted.
#
# The existing table becomes the cold partition as it is (its rows and indexes stay; only the
# primary key is built again, on (id, segment), which PostgreSQL requires of a partitioned
# table's key). The indexes of the partitioned table are those of the old one, by the same
# names and definitions, so that the model's state and Django's later migrations still
# describe them.

# The ring: segment = floor(epoch / SECONDS) % RING. Mirrored by the "ring" statement of
# aiotaskq/db/queries.sql and by aiotaskq/db/rotate.py.
SECONDS = 10
RING = 2
COLD = -1

# The ring's partitions' storage settings (a partitioned table has none of its own): 0006's
# fillfactor, and autovacuum off, leaving the segments to the worker's keeper
# (aiotaskq/worker/upkeep.py). Both VACUUM and ANALYZE record a table's live rows and pages
# for the planner; of a segment, while a transaction holds the xmin horizon, that is a few
# hundred live rows among thousands of pages of dead ones, and the plans made from it stalled
# the claims at every turn of the ring (docs/storage.md). The keeper knows when the horizon
# is held and then leaves the segments alone: one with no statistics since its TRUNCATE is
# planned from its actual size.
STORAGE = (
    "fillfactor = 90",
    "autovacuum_enabled = false",
)

DEFER = """
CREATE TRIGGER aiotaskq_task_defer BEFORE INSERT ON aiotaskq_task
FOR EACH ROW WHEN (NEW.pos IS NOT NULL AND NEW.execute_at > statement_timestamp())
EXECUTE FUNCTION aiotaskq_task_defer()
"""


def _indexes(cursor, table):
    """(name, definition) of ``table``'s indexes but its primary key's."""
    cursor.execute(
        """
        SELECT i.relname, pg_get_indexdef(x.indexrelid)
        FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
        WHERE x.indrelid = %s::regclass AND NOT x.indisprimary
        ORDER BY i.relname
        """,
        [table],
    )
    return cursor.fetchall()


def forward(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        indexes = _indexes(cursor, "aiotaskq_task")
        run = cursor.execute
        run("ALTER TABLE aiotaskq_task RENAME TO aiotaskq_task_cold")
        run("ALTER TABLE aiotaskq_task_cold DROP CONSTRAINT aiotaskq_task_pkey")
        run("DROP TRIGGER aiotaskq_task_defer ON aiotaskq_task_cold")
        for name, _ in indexes:
            run(f'ALTER INDEX "{name}" RENAME TO "{name.replace("aiotaskq_task", "aiotaskq_task_cold", 1)}"')
        run(f"ALTER TABLE aiotaskq_task_cold ADD COLUMN segment smallint NOT NULL DEFAULT {COLD}")
        run(
            "CREATE TABLE aiotaskq_task (LIKE aiotaskq_task_cold INCLUDING DEFAULTS "
            "INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMPRESSION) "
            "PARTITION BY LIST (segment)"
        )
        # The segment a row is inserted into: the database's clock picks it, so every
        # client agrees. Only where new rows go depends on it, never what is correct: a
        # rotation moves whatever it finds alive, whenever it came.
        run(
            f"""
            CREATE FUNCTION aiotaskq_segment(at timestamptz) RETURNS smallint
            LANGUAGE sql STABLE PARALLEL SAFE
            AS $$ SELECT (floor(extract(epoch FROM at) / {SECONDS})::bigint % {RING})::smallint $$
            """
        )
        run(
            "ALTER TABLE aiotaskq_task ALTER COLUMN segment "
            "SET DEFAULT aiotaskq_segment(statement_timestamp())"
        )
        run("ALTER TABLE aiotaskq_task ADD CONSTRAINT aiotaskq_task_pkey PRIMARY KEY (id, segment)")
        for _, definition in indexes:
            run(definition)  # on the new, partitioned aiotaskq_task: it has none yet
        run(f"ALTER TABLE aiotaskq_task_cold ADD CONSTRAINT aiotaskq_task_cold_segment CHECK (segment = {COLD})")
        # The check lets ATTACH skip its scan; each index of the partitioned table takes
        # the cold one of the same definition, and only the key is built.
        run(f"ALTER TABLE aiotaskq_task ATTACH PARTITION aiotaskq_task_cold FOR VALUES IN ({COLD})")
        run("ALTER TABLE aiotaskq_task_cold DROP CONSTRAINT aiotaskq_task_cold_segment")
        for segment in range(RING):
            run(
                f"CREATE TABLE aiotaskq_task_ring{segment} PARTITION OF aiotaskq_task "
                f"FOR VALUES IN ({segment}) WITH ({', '.join(STORAGE)})"
            )
            # Each index of a segment named after the table's index it belongs to
            # (aiotaskq_task_ring0_due), as cold's are, so that plans read plainly.
            cursor.execute(
                """
                SELECT child.relname, parent.relname
                FROM pg_inherits h
                JOIN pg_class child ON child.oid = h.inhrelid
                JOIN pg_class parent ON parent.oid = h.inhparent
                JOIN pg_index x ON x.indexrelid = child.oid
                WHERE x.indrelid = %s::regclass AND parent.relname <> 'aiotaskq_task_pkey'
                """,
                [f"aiotaskq_task_ring{segment}"],
            )
            for child, parent in cursor.fetchall():
                wanted = parent.replace("aiotaskq_task", f"aiotaskq_task_ring{segment}", 1)
                run(f'ALTER INDEX "{child}" RENAME TO "{wanted}"')
        run(DEFER)
        run("ALTER SEQUENCE aiotaskq_task_pos OWNED BY aiotaskq_task.pos")


def backward(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        indexes = _indexes(cursor, "aiotaskq_task_cold")
        run = cursor.execute
        run("ALTER TABLE aiotaskq_task DETACH PARTITION aiotaskq_task_cold")
        run("INSERT INTO aiotaskq_task_cold SELECT * FROM aiotaskq_task")
        run("ALTER SEQUENCE aiotaskq_task_pos OWNED BY aiotaskq_task_cold.pos")
        run("DROP TABLE aiotaskq_task")
        run("DROP FUNCTION aiotaskq_segment(timestamptz)")
        run("ALTER TABLE aiotaskq_task_cold DROP CONSTRAINT aiotaskq_task_cold_pkey")
        run("ALTER TABLE aiotaskq_task_cold DROP COLUMN segment")
        run("ALTER TABLE aiotaskq_task_cold RENAME TO aiotaskq_task")
        for name, _ in indexes:
            if name.startswith("aiotaskq_task_cold_"):
                run(f'ALTER INDEX "{name}" RENAME TO "{name.replace("aiotaskq_task_cold", "aiotaskq_task", 1)}"')
        run("ALTER TABLE aiotaskq_task ADD CONSTRAINT aiotaskq_task_pkey PRIMARY KEY (id)")
        run(DEFER)


class Migration(migrations.Migration):
    dependencies = [
        ("aiotaskq", "0008_ready_positions"),
    ]

    operations = [migrations.RunPython(forward, backward, elidable=False)]
