"""The peer's tasks: the same work as :mod:`benchmarks.bench_tasks`. django-taskq runs plain
functions only, one at a time."""

from __future__ import annotations

from django_taskq.celery import shared_task

from benchmarks import probe


@shared_task
def noop(i: int = 0) -> None:
    probe.task_started()
    probe.task_finished()


@shared_task
def ping(sample: int) -> None:
    probe.started(sample)
