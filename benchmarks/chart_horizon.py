"""Draw the ``horizon`` scenario's chart: ``python benchmarks/chart_horizon.py horizon.json
horizon.png``.

Run by ``benchmarks/run.py`` with the chart's own virtualenv (``benchmarks/.venv-chart``,
matplotlib only), like ``chart.py``. One column per rate; rows: completed tasks per second
against the offered rate, pickup p99 per second (log scale: held runs reach seconds), and the
task table's total size (heap and indexes), each plain beside held. A dotted line marks the
end of the load (and of the held transaction).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

PLAIN = "#2b6cb0"
HELD = "#c53030"


def _series(run: dict[str, Any], key: str, scale: float = 1.0) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for s in run["series"]:
        value = s.get(key)
        if value is not None:
            xs.append(s["t"])
            ys.append(value * scale)
    return xs, ys


def main(data_path: Path, png: Path) -> None:
    data = json.loads(data_path.read_text())
    rates = sorted({run["rate"] for run in data["runs"]})
    fig, axes = plt.subplots(3, len(rates), figsize=(6 * len(rates), 9), squeeze=False)
    for col, rate in enumerate(rates):
        runs = [run for run in data["runs"] if run["rate"] == rate]
        top, mid, bottom = axes[0][col], axes[1][col], axes[2][col]
        for run in runs:
            color = HELD if run["held"] else PLAIN
            label = "xmin horizon held" if run["held"] else "plain"
            top.plot(*_series(run, "completed"), color=color, linewidth=1, label=label)
            mid.plot(*_series(run, "pickup_p99_ms"), color=color, linewidth=1, label=label)
            bottom.plot(
                *_series(run, "total_bytes", 1 / 2**20), color=color, linewidth=1, label=label
            )
            for ax in (top, mid, bottom):
                ax.axvline(run["t_stop_s"], color="#718096", linestyle=":", linewidth=1)
        top.axhline(rate, color="#718096", linewidth=0.8)
        top.set_title(f"{rate:,} tasks/s offered: completed per second", fontsize=10)
        mid.set_title("pickup p99 of the tasks enqueued in each second, ms", fontsize=10)
        mid.set_yscale("log")
        bottom.set_title("aiotaskq_task, heap and indexes, MB", fontsize=10)
        bottom.set_xlabel("seconds from the start of the load", fontsize=8)
        for ax in (top, mid, bottom):
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=7, frameon=False)
    meta = data["meta"]
    fig.suptitle(
        f"One worker at --concurrency {data['concurrency']}, {data['seconds']:.0f} s of paced "
        f"load, with and without a transaction holding the xmin horizon\n{meta['when']}, "
        f"{meta['cpus']} CPUs, PostgreSQL {meta['postgresql']}, Python {meta['python']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(png, dpi=100)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
