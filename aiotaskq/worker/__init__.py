"""The worker: one event loop that claims, runs and reports tasks, with the heartbeat and the
listener beside it. Follow a task through ``fetcher`` -> ``executor`` -> ``reporter``."""

from .lifecycle import Worker, WorkerConfig

__all__ = ["Worker", "WorkerConfig"]
