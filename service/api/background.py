"""What each API process does besides answering: deliver webhooks and sweep retention.

``run_background`` is started by the app's lifespan and cancelled at shutdown. Every API
process runs it; the store's conditional claims keep two processes from sending the same
webhook attempt, and the retention deletes are idempotent. A failing round (database down)
is logged and tried again at the next tick.
"""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.concurrency import run_in_threadpool

from service.api.deps import AppContext
from service.api.removal import sweep_retention
from service.api.webhooks import Dispatcher

log = logging.getLogger("quantserve.background")


async def run_background(ctx: AppContext) -> None:
    settings = ctx.settings
    # Built off the event loop: its HTTP client's SSL context takes 50-80 ms to load, which
    # would hold every request the process answers as it starts.
    dispatcher = await run_in_threadpool(Dispatcher, ctx.webhooks, settings)
    next_sweep = time.monotonic()
    try:
        while True:
            try:
                await dispatcher.run_once()
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + settings.retention_sweep_interval_s
                    await run_in_threadpool(sweep_retention, ctx)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background round failed; retrying at the next tick")
            await asyncio.sleep(settings.webhook_poll_interval_s)
    finally:
        await dispatcher.aclose()
