"""``run.py --compare``: aiotaskq beside django-taskq, procrastinate, pgqueuer and Celery.

The run's own aiotaskq scenarios give aiotaskq's figures; this module then measures each
peer on the same PostgreSQL server (each in its own database, ``<bench database>_<peer>``;
Celery on the machine's Redis) with the same sizes and the same measuring code
(``benchmarks/peers/driver.py``), one worker process each, and writes
``benchmarks/results/compare.md`` (a Markdown table), ``compare.png`` (a chart) and
``compare.json``. ``--publish`` copies the table and the chart to ``docs/benchmarks.md``
and ``docs/benchmark-chart.png`` for the README.

Each peer is installed from PyPI, at the versions pinned below, into its own virtualenv
under ``benchmarks/`` (git-ignored), created on first use; the chart is drawn by
matplotlib from a virtualenv of its own, ``benchmarks/.venv-chart``, so neither the peers
nor matplotlib ever enter the project's environment or its dependencies. A peer that
cannot be installed or set up gets ``skipped: reason`` in its row; one whose scenario
fails gets ``failed: reason`` in that cell; the run goes on.

Drains and fan-outs are run in rounds, the peers interleaved within each round (peer A,
B, C, D, then A, B, C, D again), and the median of the rounds is kept.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import harness

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results"
DOCS = ROOT / "docs"
CHART_VENV = BENCH / ".venv-chart"
CHART_REQUIREMENTS = ("matplotlib==3.11.2",)
PSYCOPG = "psycopg[binary]==3.3.9"  # the drivers import benchmarks.harness, which uses it


@dataclass(frozen=True)
class PeerSpec:
    key: str
    label: str  # "{version}" is replaced by the installed version
    module: str  # the driver, run as ``python -m benchmarks.peers.<module>``
    venv: Path
    requirements: tuple[str, ...]  # empty: the virtualenv comes from run.py (django-taskq)


PEERS = (
    PeerSpec("django-taskq", "django-taskq {version}", "taskq_compare", BENCH / ".venv-peers", ()),
    PeerSpec(
        "procrastinate",
        "procrastinate {version}",
        "procrastinate_bench",
        BENCH / ".venv-procrastinate",
        ("procrastinate==3.10.0", PSYCOPG),
    ),
    PeerSpec(
        "celery",
        "Celery {version} + Redis (not durable)",
        "celery_bench",
        BENCH / ".venv-celery",
        ("celery[redis]==5.7.0", "redis==8.1.0", "gevent==26.9.0", PSYCOPG),
    ),
    PeerSpec(
        "pgqueuer",
        "pgqueuer {version}",
        "pgqueuer_bench",
        BENCH / ".venv-pgqueuer",
        ("pgqueuer==1.6.0", "asyncpg==0.32.0", PSYCOPG),
    ),
)


def log(message: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] compare: {message}", file=sys.stderr, flush=True)


# Virtualenvs ------------------------------------------------------------------------------


def ensure_venv(venv: Path, requirements: tuple[str, ...]) -> tuple[Path | None, str]:
    """``venv``'s interpreter, the virtualenv created and ``requirements`` installed unless
    its stamp file says they already are; or ``(None, reason)``."""
    python = venv / "bin" / "python"
    stamp = venv / "benchmark-requirements.txt"
    wanted = "\n".join(requirements) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python, ""
    log(f"installing into {venv.relative_to(ROOT)}: {', '.join(requirements)}")
    pip = [str(python), "-m", "pip", "install", "--quiet", "--retries", "1", "--timeout", "20"]
    try:
        if not python.exists():
            _run([sys.executable, "-m", "venv", str(venv)], 300)
        _run([*pip, *requirements], 600)
    except subprocess.CalledProcessError as exc:
        lines = (exc.stderr or exc.stdout or "").strip().splitlines()
        return None, f"could not install: {lines[-1] if lines else exc}"
    except subprocess.TimeoutExpired:
        return None, "could not install: pip timed out"
    stamp.write_text(wanted)
    return python, ""


def _run(argv: list[str], timeout: float) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=timeout)


# Running the drivers ----------------------------------------------------------------------


def call(python: Path, spec: PeerSpec, scenario: str, n: int, log_dir: Path) -> dict[str, Any]:
    """One scenario (one round) of one peer, in its virtualenv; ``{"error": ...}`` if it
    failed."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        argv = [str(python), "-m", f"benchmarks.peers.{spec.module}", scenario]
        argv += ["--tasks", str(n), "--json", str(out), "--log-dir", str(log_dir)]
        try:
            proc = subprocess.run(
                argv,
                cwd=ROOT,
                env=harness.subprocess_env(),
                capture_output=True,
                text=True,
                timeout=900,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"{scenario} timed out"}
        (log_dir / f"{spec.key}-{scenario}-driver.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0 or not out.exists():
            lines = proc.stderr.strip().splitlines()
            return {"error": lines[-1] if lines else f"exit {proc.returncode}"}
        return dict(json.loads(out.read_text()))


@dataclass(frozen=True)
class CompareSizes:
    drain: int
    fanout: int
    latency: int
    latency_taskq: int  # django-taskq's samples cost about a second each
    enqueue: int
    bulk: int
    rounds: int


def sizes_of(results: dict[str, Any], meta: dict[str, Any]) -> CompareSizes:
    """The sizes of the run's own aiotaskq scenarios, so both sides do the same work."""
    quick = bool(meta.get("quick"))
    run_sizes = meta.get("sizes", {})

    def n(scenario: str, key: str, default: int) -> int:
        return int(results.get(scenario, {}).get(key) or default)

    return CompareSizes(
        drain=n("drain", "tasks", 2000 if quick else 10_000),
        fanout=n("fanout", "tasks", 2000),
        latency=n("latency", "samples", 60 if quick else 300),
        latency_taskq=int(run_sizes.get("peer_latency") or (8 if quick else 30)),
        enqueue=n("enqueue", "tasks", 300 if quick else 2000),
        bulk=n("enqueue_many", "tasks", 2000 if quick else 10_000),
        rounds=int(run_sizes.get("rounds") or (1 if quick else 3)),
    )


def measure_peers(
    sizes: CompareSizes, log_dir: Path, taskq_python: Path | None, taskq_reason: str
) -> dict[str, dict[str, Any]]:
    """Every peer's figures: ``{key: {"setup": ..., "drain": [...], ...}}``."""
    peers: dict[str, dict[str, Any]] = {}
    active: list[tuple[PeerSpec, Path]] = []
    for spec in PEERS:
        if spec.requirements:
            python, reason = ensure_venv(spec.venv, spec.requirements)
        else:
            python, reason = taskq_python, taskq_reason
        if python is None:
            peers[spec.key] = {"skipped": reason}
            continue
        log(f"{spec.key}: setup")
        setup = call(python, spec, "setup", 0, log_dir)
        if "error" in setup:
            peers[spec.key] = {"skipped": f"set-up failed: {setup['error']}"}
            continue
        peers[spec.key] = {"setup": setup}
        active.append((spec, python))

    def rounds(scenario: str, n: int) -> None:
        for k in range(sizes.rounds):
            for spec, python in active:
                log(f"{spec.key}: {scenario} {n:,}, round {k + 1} of {sizes.rounds}")
                peers[spec.key].setdefault(scenario, []).append(
                    call(python, spec, scenario, n, log_dir)
                )

    rounds("drain", sizes.drain)
    rounds("fanout", sizes.fanout)
    for spec, python in active:
        n = sizes.latency_taskq if spec.key == "django-taskq" else sizes.latency
        log(f"{spec.key}: latency, {n} samples")
        peers[spec.key]["latency"] = [call(python, spec, "latency", n, log_dir)]
    rounds("enqueue", sizes.enqueue)
    rounds("bulk", sizes.bulk)
    return peers


# Figures ----------------------------------------------------------------------------------


@dataclass
class Cell:
    """One figure, or why there is none."""

    value: float | None = None
    second: float | None = None  # p99 beside p50, bulk beside one
    why: str = ""
    rounds: tuple[float, ...] = ()


def median_cell(runs: list[dict[str, Any]], key: str) -> Cell:
    values = [float(r[key]) for r in runs if key in r]
    if values:
        return Cell(statistics.median(values), rounds=tuple(values))
    for r in runs:
        if "skipped" in r:
            return Cell(why=str(r["skipped"]))
    errors = [str(r["error"]) for r in runs if "error" in r]
    return Cell(why=f"failed: {errors[0]}" if errors else "not run")


@dataclass
class Line:
    key: str
    label: str
    version: str
    how: str
    skipped: str = ""
    drain: Cell | None = None
    fanout: Cell | None = None
    latency: Cell | None = None  # value p50, second p99, in ms
    enqueue: Cell | None = None  # value one, second bulk
    bulk_why: str = ""


def aiotaskq_line(results: dict[str, Any], meta: dict[str, Any]) -> Line:
    version = str(meta.get("aiotaskq", "?"))
    line = Line(
        "aiotaskq",
        f"aiotaskq {version}",
        version,
        "aiotaskq run --concurrency 100 (drain) / 200 (fan-out), defaults otherwise "
        f"({meta.get('event_loop', 'asyncio')}); async def tasks; await adelay() / "
        "await aenqueue_many()",
    )
    missing = Cell(why="not run (--only)")
    r = results.get("drain")
    line.drain = Cell(r["tasks_per_s"], rounds=tuple(r.get("rounds", ()))) if r else missing
    r = results.get("fanout")
    line.fanout = Cell(r["first_to_empty_s"]) if r else missing
    r = results.get("latency")
    lat = r["latency_s"] if r else {}
    line.latency = Cell(_ms(lat.get("p50")), _ms(lat.get("p99"))) if r else missing
    one = results.get("enqueue", {}).get("async", {}).get("tasks_per_s")
    bulk = results.get("enqueue_many", {}).get("async", {}).get("tasks_per_s")
    line.enqueue = Cell(one, bulk)
    return line


def peer_line(spec: PeerSpec, figures: dict[str, Any]) -> Line:
    setup = figures.get("setup", {})
    version = str(setup.get("version", ""))
    label = spec.label.replace("{version}", version).replace("  ", " ").strip()
    line = Line(spec.key, label, version, str(setup.get("how", "")))
    if "skipped" in figures:
        line.skipped = str(figures["skipped"])
        return line
    line.drain = median_cell(figures.get("drain", []), "tasks_per_s")
    line.fanout = median_cell(figures.get("fanout", []), "first_to_empty_s")
    lat_runs = figures.get("latency", [])
    lat = lat_runs[0].get("latency_s") if lat_runs and "latency_s" in lat_runs[0] else None
    if lat:
        line.latency = Cell(_ms(lat["p50"]), _ms(lat["p99"]))
    else:
        line.latency = median_cell(lat_runs, "latency_s")
    one = median_cell(figures.get("enqueue", []), "tasks_per_s")
    bulk = median_cell(figures.get("bulk", []), "tasks_per_s")
    line.enqueue = Cell(one.value, bulk.value, why=one.why)
    line.bulk_why = bulk.why
    return line


def why_nots(line: Line) -> list[str]:
    """The full reason of every cell that has no figure."""
    cells = {
        "drain": line.drain,
        "fan-out": line.fanout,
        "pickup": line.latency,
        "enqueue one": line.enqueue,
    }
    out = [
        f"{line.label}, {name}: {cell.why}"
        for name, cell in cells.items()
        if cell is not None and cell.value is None and cell.why
    ]
    if line.bulk_why:
        out.append(f"{line.label}, bulk enqueue: {line.bulk_why}")
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


# The table --------------------------------------------------------------------------------


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "ms":
        text = f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
    elif unit == "s":
        text = f"{value:,.2f}"
    else:
        text = f"{value:,.0f}"
    return f"{text} {unit}".rstrip()


def _cell(cell: Cell | None, fmt: Callable[[Cell], str]) -> str:
    if cell is None:
        return "-"
    if cell.value is None and cell.why:
        return _short(cell.why)
    return fmt(cell)


def _short(why: str) -> str:
    """A reason as short as a cell needs (``serial``, ``none``, ``failed``): the words
    before its colon; the whole reason is in the notes under the table."""
    return why.split(":", 1)[0] if why else "-"


def render_markdown(lines: list[Line], env: dict[str, Any], sizes: CompareSizes, image: str) -> str:
    header = (
        f"| | drain {sizes.drain:,} no-op tasks/s | {sizes.fanout:,} x 0.2 s @200 "
        "(ideal 2.0 s) | pickup p50 / p99 (from commit) | enqueue one / bulk per s |"
    )
    rows = [header, "| --- | ---: | ---: | ---: | ---: |"]
    for line in lines:
        name = f"**{line.label}**"
        if line.skipped:
            rows.append(f"| {name} | skipped: {line.skipped} | | | |")
            continue
        drain = _cell(line.drain, lambda c: _num(c.value))
        fanout = _cell(line.fanout, lambda c: _num(c.value, "s"))
        latency = _cell(line.latency, lambda c: f"{_num(c.value, 'ms')} / {_num(c.second, 'ms')}")

        def enqueue(c: Cell, why: str = line.bulk_why) -> str:
            return f"{_num(c.value)} / {_num(c.second) if c.second else _short(why)}"

        rows.append(f"| {name} | {drain} | {fanout} | {latency} | {_cell(line.enqueue, enqueue)} |")
    busy = env.get("cpu_busy_before")
    busy_note = (
        f" {busy:.0%} of the CPU was busy with other work just before the run, which "
        "lowers every figure."
        if isinstance(busy, float) and busy > 0.2
        else ""
    )
    how = [f"- **{line.label}**: {line.how}" for line in lines if line.how]
    skipped = [f"- **{line.label}**: skipped, {line.skipped}" for line in lines if line.skipped]
    notes = [f"- {note}" for line in lines for note in why_nots(line)]
    return "\n".join(
        [
            "# aiotaskq and its peers",
            "",
            f"Measured {env['date']} on {env['machine']}; PostgreSQL {env['postgresql']}, "
            f"Python {env['python']}, Redis {env.get('redis') or '-'}. One worker process "
            f"each, on the same database server in the same run; medians of "
            f"{sizes.rounds} round(s), the peers interleaved.{busy_note}",
            "",
            *rows,
            "",
            f"![aiotaskq and its peers]({image})",
            "",
            "How each was run (each with its documented best settings for the work):",
            "",
            *how,
            *skipped,
            "",
            *(["Cells without a figure:", "", *notes, ""] if notes else []),
            "What is measured, the same way for every queue (`benchmarks/peers/driver.py`, "
            "`benchmarks/harness.py`): the tasks report through UDP datagrams on loopback. "
            "Drain: the tasks enqueued first (bulk where the queue has it), timed from the "
            "first task's start to the queue's table found empty (Celery: to the last task's "
            "end). Fan-out: the same for tasks that each sleep 0.2 s, at concurrency 200. "
            "Pickup: an idle worker, one task at a time, from the producer's commit to the "
            f"task's start ({sizes.latency} samples; django-taskq {sizes.latency_taskq}). "
            f"Enqueue: {sizes.enqueue:,} single enqueues in a loop from one producer, and "
            f"one bulk enqueue of {sizes.bulk:,}.",
            "",
        ]
    )


# The run's environment --------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for raw in f:
                if raw.startswith("model name"):
                    return raw.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def environment(meta: dict[str, Any], peers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    cores = meta.get("cpus") or "?"
    return {
        "date": dt.date.today().isoformat(),
        "machine": f"{cores} cores, {cpu_model()}",
        "postgresql": meta.get("postgresql", "?"),
        "python": meta.get("python", "?"),
        "redis": peers.get("celery", {}).get("setup", {}).get("redis_server"),
        "cpu_busy_before": meta.get("cpu_busy_before"),
    }


# The chart --------------------------------------------------------------------------------


def draw_chart(data: Path, png: Path, script: str = "chart.py") -> str:
    """Draw ``png`` from ``data`` with ``benchmarks/chart.py`` (or another ``script`` of
    ``benchmarks/``) in the chart's virtualenv; return why not, or ``""``."""
    python, reason = ensure_venv(CHART_VENV, CHART_REQUIREMENTS)
    if python is None:
        return reason
    proc = subprocess.run(
        [str(python), str(BENCH / script), str(data), str(png)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return lines[-1] if lines else f"exit {proc.returncode}"
    return ""


def _chart_entry(line: Line) -> dict[str, Any]:
    def value(cell: Cell | None, second: bool = False) -> float | None:
        if cell is None:
            return None
        return cell.second if second else cell.value

    return {
        "name": line.label,
        "skipped": line.skipped,
        "drain_per_s": value(line.drain),
        "fanout_s": value(line.fanout),
        "fanout_why": line.fanout.why if line.fanout and line.fanout.value is None else "",
        "p50_ms": value(line.latency),
        "p99_ms": value(line.latency, True),
        "enqueue_one_per_s": value(line.enqueue),
        "enqueue_bulk_per_s": value(line.enqueue, True),
    }


# Entry point ------------------------------------------------------------------------------


def run(
    results: dict[str, Any],
    meta: dict[str, Any],
    *,
    log_dir: Path,
    taskq_python: Callable[[], tuple[Path | None, str]],
    publish: bool = False,
) -> dict[str, Any]:
    """Measure the peers, write ``compare.{json,md,png}`` in ``benchmarks/results`` (and in
    ``docs/`` with ``publish``), print the table, and return the figures."""
    sizes = sizes_of(results, meta)
    python, reason = taskq_python()
    peers = measure_peers(sizes, log_dir, python, reason)
    lines = [aiotaskq_line(results, meta)] + [peer_line(s, peers[s.key]) for s in PEERS]
    env = environment(meta, peers)
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {
        "environment": env,
        "sizes": asdict(sizes),
        "queues": [_chart_entry(line) for line in lines],
        "peers": peers,
    }
    data_path = RESULTS / "compare.json"
    data_path.write_text(json.dumps(data, indent=2))
    table = render_markdown(lines, env, sizes, "compare.png")
    (RESULTS / "compare.md").write_text(table)
    log("drawing the chart")
    chart_error = draw_chart(data_path, RESULTS / "compare.png")
    print(table)
    if chart_error:
        print(f"chart not drawn: {chart_error}")
    log(f"wrote {(RESULTS / 'compare.md').relative_to(ROOT)} and compare.png")
    if publish:
        DOCS.mkdir(exist_ok=True)
        published = render_markdown(lines, env, sizes, "benchmark-chart.png")
        (DOCS / "benchmarks.md").write_text(published)
        if not chart_error:
            shutil.copyfile(RESULTS / "compare.png", DOCS / "benchmark-chart.png")
        log("published docs/benchmarks.md and docs/benchmark-chart.png")
    return data
