import json

from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from .models import Greeting
from .tasks import greet


@csrf_exempt
@require_POST
async def greet_view(request: HttpRequest) -> JsonResponse:
    """Enqueue a greeting and answer at once: the worker delivers it in the background."""
    name = json.loads(request.body or b"{}").get("name", "world")
    result = await greet.adelay(name, timezone.now())
    return JsonResponse({"task_id": str(result.id)}, status=202)


@require_GET
async def greetings(request: HttpRequest) -> JsonResponse:
    names = [g.name async for g in Greeting.objects.order_by("id")]
    return JsonResponse({"count": len(names), "names": names})
