"""``python manage.py subscribe URL [--count N] [--secret S]``: add subscriptions."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from webhooks.models import Subscription, new_secret


class Command(BaseCommand):
    help = (
        "Subscribe URL to every event. With --count N, add N subscriptions; a {n} in URL "
        "is replaced by 1..N (http://127.0.0.1:8001/hooks/{n})."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("url")
        parser.add_argument("--count", type=int, default=1)
        parser.add_argument(
            "--secret", help="The signing secret of every new subscription (default: random)."
        )

    def handle(self, *args: Any, url: str, count: int, secret: str | None, **options: Any) -> None:
        created = Subscription.objects.bulk_create(
            Subscription(target_url=url.replace("{n}", str(n)), secret=secret or new_secret())
            for n in range(1, count + 1)
        )
        self.stdout.write(f"{len(created)} subscription(s) to {url}")
