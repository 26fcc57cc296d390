"""Views of the ASGI test app: each enqueues with ``adelay`` and says which process it ran in."""

from __future__ import annotations

import os

from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.http import require_POST

from tests.app import tasks


@require_POST
async def record(request: HttpRequest, label: str) -> JsonResponse:
    result = await tasks.record.adelay(label)
    return JsonResponse({"id": str(result.id), "pid": os.getpid()}, status=202)


@require_POST
async def sleep_then_record(request: HttpRequest, label: str, seconds: float) -> JsonResponse:
    result = await tasks.sleep_then_record.adelay(label, seconds)
    return JsonResponse({"id": str(result.id), "pid": os.getpid()}, status=202)


urlpatterns = [
    path("record/<str:label>/", record),
    path("sleep/<str:label>/<int:seconds>/", sleep_then_record),
]
