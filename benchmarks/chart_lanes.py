"""Draw the 3 AM story's chart: ``python benchmarks/chart_lanes.py lanes.json lanes.png``.

Run by ``benchmarks/run.py`` with the chart's own virtualenv (``benchmarks/.venv-chart``,
matplotlib only), like ``chart.py``. Two rows over the seconds since the urgent tasks were
enqueued, one worker with lanes beside one with a single shared queue: the urgent tasks done
so far, and the exports running at that moment (the lane's cap as a dashed line).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

LANES = "#2b6cb0"
SHARED = "#c53030"


def main(data_path: Path, png: Path) -> None:
    data = json.loads(data_path.read_text())
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for mode, color in (("lanes", LANES), ("shared", SHARED)):
        run = data[mode]
        where = f"--queues {run['queues']}" if mode == "lanes" else "one shared queue"
        label = f"{where}: urgent done in {run['urgent_s']:.1f} s"
        ts = [t for t, _, _ in run["series"]]
        top.plot(ts, [done for _, done, _ in run["series"]], color=color, label=label)
        bottom.step(
            ts, [running for _, _, running in run["series"]], where="post", color=color, label=label
        )
    top.set_ylabel(f"urgent tasks done (of {data['urgent']})", fontsize=8)
    bottom.set_ylabel("exports running", fontsize=8)
    bottom.axhline(
        2, color="#718096", linestyle="--", linewidth=0.8, label="the exports lane's cap"
    )
    bottom.set_ylim(0, data["concurrency"] + 0.5)
    bottom.set_xlabel("seconds since the urgent tasks were enqueued", fontsize=8)
    for ax in (top, bottom):
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, frameon=False, loc="best")
    meta = data["meta"]
    fig.suptitle(
        f"The 3 AM story: {data['exports']} sync exports of {data['export_s']:g} s, then "
        f"{data['urgent']} urgent sync tasks, one worker at --concurrency "
        f"{data['concurrency']}\n{meta['when']}, {meta['cpus']} CPUs, PostgreSQL "
        f"{meta['postgresql']}, Python {meta['python']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(png, dpi=100)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
