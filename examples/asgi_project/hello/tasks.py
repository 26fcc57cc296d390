"""The worker imports each installed app's ``tasks`` module, so this registers ``greet``."""

import datetime as dt

from aiotaskq import task

from .models import Greeting


@task(queue="default")
async def greet(name: str, requested_at: dt.datetime) -> None:
    # requested_at arrives as a datetime again: aiotaskq keeps the type across JSON.
    await Greeting.objects.acreate(name=name, requested_at=requested_at)
