"""The filters of every group's list: its queues and its task names.

The choices are the group's distinct (queue, name) pairs, read in one query per page for
both filters. That query reads the group's rows: a few for Failed, Active and Dirty (found
through their partial indexes), a few tens of milliseconds per 100,000 rows of a Pending
backlog.
"""

from __future__ import annotations

import weakref
from typing import Any, ClassVar

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

__all__ = ["NameFilter", "QueueFilter"]

#: The most queue/name pairs a filter lists.
MAX_FILTER_CHOICES = 500

# The distinct (queue, name) pairs of a group, read once per request for both filters.
_pairs: weakref.WeakKeyDictionary[HttpRequest, list[tuple[str, str]]] = weakref.WeakKeyDictionary()


def _group_pairs(request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
    pairs = _pairs.get(request)
    if pairs is None:
        queryset = model_admin.get_queryset(request).order_by()
        pairs = list(queryset.values_list("queue", "name").distinct()[:MAX_FILTER_CHOICES])
        _pairs[request] = pairs
    return pairs


class _ColumnFilter(admin.SimpleListFilter):
    """The values of one column among the group's rows."""

    column: ClassVar[int]

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        values = {pair[self.column] for pair in _group_pairs(request, model_admin)}
        current = self.value()
        if current is not None:
            values.add(current)
        return [(v, v) for v in sorted(values)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None:
            return queryset
        return queryset.filter(**{str(self.parameter_name): value})


class QueueFilter(_ColumnFilter):
    title = "queue"
    parameter_name = "queue"
    column = 0


class NameFilter(_ColumnFilter):
    title = "task name"
    parameter_name = "name"
    column = 1
