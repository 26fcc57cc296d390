"""A paginator that never counts a large table.

Django's admin counts the rows of a list on every page load (``COUNT(*)``); on a queue with a
backlog of millions that is a scan of the whole group each time. This paginator counts at most
``EXACT_UP_TO + 1`` rows (a ``COUNT(*)`` over a ``LIMIT``ed subquery, so the cost is bounded
whatever the table holds) and beyond that takes PostgreSQL's planner estimate of the query
(``EXPLAIN``: the table's statistics, no rows read). The number is then shown as "about".
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.utils.functional import cached_property

__all__ = ["EstimatedCountPaginator", "planned_rows"]

if TYPE_CHECKING:
    _Paginator = Paginator[Any]
else:  # Paginator takes no type argument at run time
    _Paginator = Paginator

#: Below this many rows the count is exact.
EXACT_UP_TO = 10_000


class EstimatedCountPaginator(_Paginator):
    """Exact counts up to :data:`EXACT_UP_TO`, the planner's estimate above it."""

    #: True when :attr:`count` is the planner's estimate (for the template: "about N").
    estimated = False

    @cached_property
    def count(self) -> int:
        queryset: QuerySet[Any] = self.object_list  # type: ignore[assignment]
        exact: int = queryset.order_by()[: EXACT_UP_TO + 1].count()
        if exact <= EXACT_UP_TO:
            return exact
        self.estimated = True
        return max(exact, planned_rows(queryset))


def planned_rows(queryset: QuerySet[Any]) -> int:
    """The number of rows PostgreSQL's planner expects ``queryset`` to return."""
    plan: Any = json.loads(queryset.order_by().explain(format="json"))
    if isinstance(plan, list):
        plan = plan[0]
    return int(plan["Plan"]["Plan Rows"])
