"""Draw the comparison's chart: ``python benchmarks/chart.py compare.json compare.png``.

Run by ``benchmarks/compare.py`` with the chart's own virtualenv (``benchmarks/.venv-chart``,
matplotlib only), so matplotlib is never a dependency of the project or of its environment.
Four panels, one bar (or a pair) per queue: drain throughput, the fan-out's time, pickup
latency p50 and p99 (log scale: the slowest is a hundred times the fastest) and enqueue
rates, one at a time and in bulk (log scale too).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.patches import Patch

HIGHLIGHT = "#2b6cb0"
OTHERS = "#a0aec0"
SECOND = "#4fd1c5"


def _label(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "ms":
        return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"
    return f"{value:,.0f}"


def panel(
    ax: Any,
    queues: list[dict[str, Any]],
    title: str,
    keys: list[tuple[str, str]],
    unit: str,
    *,
    log: bool = False,
    missing: str = "",
) -> None:
    """Horizontal bars of ``keys`` (``(field, legend)``) for every queue, top to bottom."""
    names = [q["name"] for q in queues]
    height = 0.8 / len(keys)
    for k, (field, _) in enumerate(keys):
        for i, q in enumerate(queues):
            y = len(queues) - 1 - i + (len(keys) - 1 - 2 * k) * height / 2
            value = q.get(field)
            if value is None or value <= 0:
                why = "skipped" if q.get("skipped") else (q.get(missing) or "-")
                if k == 0:
                    ax.text(0, y, f" {why.split(':', 1)[0]}", va="center", fontsize=8)
                continue
            color = (HIGHLIGHT if i == 0 else OTHERS) if k == 0 else SECOND
            ax.barh(y, value, height=height * 0.9, color=color)
            ax.text(value, y, f" {_label(value, unit)}", va="center", fontsize=7)
    ax.set_yticks(range(len(queues)), list(reversed(names)), fontsize=8)
    ax.set_title(title, fontsize=10)
    if log:
        ax.set_xscale("log")
    ax.margins(x=0.25)
    ax.tick_params(axis="x", labelsize=7)
    if len(keys) > 1:
        # The first figure's bars are blue for aiotaskq and grey for the others.
        handles = [Patch(color=OTHERS, label=keys[0][1]), Patch(color=SECOND, label=keys[1][1])]
        ax.legend(
            handles=handles,
            fontsize=7,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.08),
            ncol=2,
            frameon=False,
        )


def main(data_path: Path, png: Path) -> None:
    data = json.loads(data_path.read_text())
    env, sizes, queues = data["environment"], data["sizes"], data["queues"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 7))
    panel(
        axes[0][0],
        queues,
        f"Drain {sizes['drain']:,} no-op tasks: tasks/s (higher is better)",
        [("drain_per_s", "")],
        "",
    )
    panel(
        axes[0][1],
        queues,
        f"Fan-out {sizes['fanout']:,} x sleep(0.2) @200: s (lower is better)",
        [("fanout_s", "")],
        "s",
        missing="fanout_why",
    )
    axes[0][1].axvline(2.0, color="#718096", linestyle=":", linewidth=1)
    axes[0][1].text(2.0, -0.6, " ideal 2.0 s", fontsize=7, color="#718096")
    panel(
        axes[1][0],
        queues,
        "Pickup from commit, idle worker: ms (lower is better)",
        [("p50_ms", "p50"), ("p99_ms", "p99")],
        "ms",
        log=True,
    )
    panel(
        axes[1][1],
        queues,
        "Enqueue: tasks/s (higher is better)",
        [("enqueue_one_per_s", "one at a time"), ("enqueue_bulk_per_s", "bulk")],
        "",
        log=True,
    )
    fig.suptitle(
        f"aiotaskq and its peers, one worker process each: {env['date']}, {env['machine']}, "
        f"PostgreSQL {env['postgresql']}, Python {env['python']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
