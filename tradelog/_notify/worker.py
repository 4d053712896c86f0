"""The delivery worker: claims due outbox rows, sends them, records what happened.

It runs as a background thread of a configured process (``TRADELOG_WORKER=true``, wired by
``tradelog.configure``) or on its own as ``tradelog worker``. Any number of workers may run
against one PostgreSQL database; claims never overlap (see :mod:`tradelog._notify.outbox`).

For each claimed delivery the worker

1. reads the user's preferences *now* (a channel switched off since queueing is suppressed, a
   missing chat id or address fails permanently) and the notification's full text;
2. releases several deferred deliveries of one user and channel together as one digest;
3. sends through the channel (Telegram parts pass the shared rate limiter first);
4. records the outcome: ``sent`` (and ``telegram_sent``/``email_sent`` on the notification),
   a retry with exponential backoff and jitter (or the service's ``retry_after``), or
   ``failed`` with the reason when the error is permanent or attempts run out. Every failure
   is also a log line on the ``tradelog._notify.worker`` logger; a Telegram 403 also posts an
   in-app notice to the user.

A worker only claims the channels it is configured for (Telegram needs
``TRADELOG_TELEGRAM_BOT_TOKEN``, email ``TRADELOG_SMTP_HOST``). For the others it runs a sweep
once a minute: deliveries due for longer than ``TRADELOG_UNSERVED_DELIVERY_TIMEOUT`` (15 min)
on a channel no worker has claimed anything on in that time fail with a reason naming the
variable to set (:func:`~tradelog._notify.outbox.fail_unserved`). A deployment that forgot the
token therefore shows failed deliveries, error log lines and ``overdue``/``failed`` counts in
``tradelog status`` instead of a silent backlog; ``0`` turns the sweep off (they wait).

Deliveries of one user on one channel are sent one after another, in order; different users
are served concurrently (``concurrency``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from tradelog._db.base import utcnow
from tradelog._notify import outbox
from tradelog._notify.channels.base import Channel, OutgoingMessage, RecipientBlocked, Throttled
from tradelog._notify.channels.in_app import telegram_blocked_notice
from tradelog._notify.outbox import ClaimedDelivery
from tradelog._notify.prepare import Job, prepare
from tradelog._notify.retry import RetryPolicy
from tradelog._notify.wakeup import Wakeups
from tradelog._notify.wiring import CHANNEL_SETTINGS, build_channels
from tradelog.config import Settings
from tradelog.exceptions import PermanentDeliveryError, RetryableDeliveryError

__all__ = ["DeliveryWorker"]

logger = logging.getLogger("tradelog.notify.worker")

_SETTING = CHANNEL_SETTINGS
_PRUNE_EVERY = 600.0
_SWEEP_EVERY = 60.0


class DeliveryWorker:
    """Delivers outbox rows over ``channels`` (default: what ``settings`` configures).

    ``concurrency`` (deliveries in flight) and ``poll_interval`` default to
    ``TRADELOG_WORKER_CONCURRENCY`` and ``TRADELOG_WORKER_POLL_INTERVAL``; ``lease`` is how long
    a claim is held before another worker may take the delivery over; ``unserved_timeout``
    (default ``TRADELOG_UNSERVED_DELIVERY_TIMEOUT``) is how long a delivery on a channel no
    worker sends may wait before it fails (0: forever). ``clock`` gives the current UTC time
    for every claim, retry and lease; ``wakeups``, when given, is the registry the notification
    service rings after each commit (the worker subscribes while it runs).
    """

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        channels: Mapping[str, Channel] | None = None,
        name: str | None = None,
        concurrency: int | None = None,
        poll_interval: float | None = None,
        lease: float = 120.0,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        unserved_timeout: float | None = None,
        clock: Callable[[], datetime] = utcnow,
        wakeups: Wakeups | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.wakeups = wakeups
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.concurrency = max(1, concurrency or self.settings.worker_concurrency)
        self.poll_interval = (
            poll_interval if poll_interval is not None else self.settings.worker_poll_interval
        )
        self.lease = lease
        self.retry = retry or RetryPolicy(max_attempts=self.settings.max_delivery_attempts)
        self.unserved_timeout = (
            unserved_timeout
            if unserved_timeout is not None
            else self.settings.unserved_delivery_timeout
        )
        self._rng = rng or random.Random()
        self._channels: dict[str, Channel] | None = dict(channels) if channels is not None else None
        self._queues: dict[tuple[str, int], deque[Job]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._outstanding = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._announced = False
        self.stats: dict[str, int] = {"sent": 0, "retried": 0, "failed": 0, "suppressed": 0}

    # -- public control ------------------------------------------------------------------

    @property
    def channels(self) -> dict[str, Channel]:
        """The channels this worker sends over (built from settings on first use)."""
        if self._channels is None:
            self._channels = build_channels(self.engine, self.settings)
        return self._channels

    @property
    def unserved(self) -> list[str]:
        """The channels this worker cannot send (not configured)."""
        return [name for name in ("telegram", "email") if name not in self.channels]

    def wake(self) -> None:
        """Look for due deliveries now instead of at the next poll (thread-safe)."""
        loop, event = self._loop, self._event
        if loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(event.set)

    async def run_once(self) -> int:
        """Deliver everything due now, then return how many deliveries were handled."""
        before = sum(self.stats.values())
        await self._serve(until_idle=True)
        return sum(self.stats.values()) - before

    async def run(self) -> None:
        """Deliver until :meth:`stop` is called."""
        await self._serve(until_idle=False)

    def start(self) -> threading.Thread:
        """Run the worker in a daemon thread with its own event loop."""
        if self._thread is not None and self._thread.is_alive():
            return self._thread
        self._stopping.clear()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self.run()), name="tradelog-delivery", daemon=True
        )
        self._thread.start()
        return self._thread

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming, finish what is in flight (up to ``timeout``), release the rest."""
        self._stopping.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- the loop ------------------------------------------------------------------------

    async def _serve(self, *, until_idle: bool) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        unsubscribe = self.wakeups.subscribe(self.wake) if self.wakeups is not None else None
        channels = await asyncio.to_thread(lambda: self.channels)
        names = sorted(channels)
        self._announce()
        next_prune = next_sweep = 0.0
        try:
            while not self._stopping.is_set():
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + _PRUNE_EVERY
                    await self._prune(channels)
                if time.monotonic() >= next_sweep and self.unserved_timeout > 0:
                    next_sweep = time.monotonic() + _SWEEP_EVERY
                    for channel in self.unserved:
                        await self._sweep(channel)
                free = self.concurrency - self._outstanding
                claimed: list[ClaimedDelivery] = []
                if free > 0 and names:
                    claimed = await self._claim(names, free)
                if until_idle and not claimed and self._outstanding == 0:
                    break
                if claimed and len(claimed) >= free:
                    if self._outstanding >= self.concurrency:
                        await self._wait(self.poll_interval)
                    continue
                if claimed:
                    continue
                await self._wait(self.poll_interval)
        finally:
            if unsubscribe is not None:
                unsubscribe()
            await self._shutdown()

    async def _prune(self, channels: Mapping[str, Channel]) -> None:
        for channel in channels.values():
            limiter = getattr(channel, "limiter", None)
            if limiter is None:
                continue
            try:
                await asyncio.to_thread(limiter.prune)
            except Exception as exc:
                logger.debug("pruning rate-limit rows failed: %s", exc)

    def _announce(self) -> None:
        """Say once which channels this worker leaves to others, and what happens to them."""
        if self._announced:
            return
        self._announced = True
        for channel in self.unserved:
            logger.warning(
                "delivery worker %s does not send %s: %s is not set; %s",
                self.name,
                channel,
                _SETTING[channel],
                f"unless another worker sends them, {channel} deliveries fail once due "
                f"for {_duration(self.unserved_timeout)}"
                if self.unserved_timeout > 0
                else f"{channel} deliveries wait in the outbox until a worker sends them",
            )

    async def _sweep(self, channel: str) -> None:
        reason = (
            f"not sent: no delivery worker sends {channel} ({_SETTING[channel]} is not set where "
            f"`tradelog worker` runs) and nothing claimed it for "
            f"{_duration(self.unserved_timeout)}; configure it, then `tradelog notify retry`"
        )
        try:
            failed = await asyncio.to_thread(
                outbox.fail_unserved,
                self.engine,
                channel,
                timeout=self.unserved_timeout,
                reason=reason,
                now=self.clock(),
            )
        except Exception as exc:
            logger.warning("delivery worker %s cannot sweep %s: %s", self.name, channel, exc)
            return
        self.stats["failed"] += len(failed)
        for item in failed:
            logger.error(
                "delivery %s (%s) to user %s failed: %s",
                item.id,
                channel,
                item.user_id,
                reason,
                extra={
                    "user_id": item.user_id,
                    "delivery_id": item.id,
                    "notification_id": item.notification_id,
                    "channel": channel,
                },
            )

    async def _wait(self, timeout: float) -> None:
        assert self._event is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()

    async def _claim(self, names: list[str], free: int) -> list[ClaimedDelivery]:
        try:
            claimed = await asyncio.to_thread(
                outbox.claim,
                self.engine,
                self.name,
                limit=free,
                lease=self.lease,
                channels=names,
                now=self.clock(),
            )
            jobs = await self._group(claimed)
        except Exception as exc:
            logger.warning("delivery worker %s cannot claim deliveries: %s", self.name, exc)
            await asyncio.sleep(min(self.poll_interval, 5.0))
            return []
        for job in jobs:
            self._enqueue(job)
        return claimed

    async def _group(self, claimed: Sequence[ClaimedDelivery]) -> list[Job]:
        jobs: list[Job] = []
        taken: set[int] = set()
        for item in claimed:
            if item.id in taken:
                continue
            job = Job(item)
            taken.add(item.id)
            if item.deferred:
                job.members = [
                    other
                    for other in claimed
                    if other.id not in taken
                    and other.deferred
                    and (other.channel, other.user_id) == job.key
                ]
                job.members += await asyncio.to_thread(
                    outbox.claim_digest_members,
                    self.engine,
                    self.name,
                    item,
                    lease=self.lease,
                    now=self.clock(),
                )
                taken.update(m.id for m in job.members)
            jobs.append(job)
        return jobs

    def _enqueue(self, job: Job) -> None:
        self._outstanding += 1
        queue = self._queues.get(job.key)
        if queue is not None:
            queue.append(job)
            return
        self._queues[job.key] = deque([job])
        task = asyncio.create_task(self._drain(job.key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, key: tuple[str, int]) -> None:
        queue = self._queues[key]
        try:
            while queue:
                job = queue[0]
                if self._stopping.is_set():
                    await self._release(job, self.clock())
                else:
                    await self._deliver(job)
                queue.popleft()
                self._outstanding -= 1
                if self._event is not None:
                    self._event.set()
        finally:
            del self._queues[key]

    async def _shutdown(self) -> None:
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        for channel in (self._channels or {}).values():
            try:
                await channel.aclose()
            except Exception as exc:  # pragma: no cover - closing is best effort
                logger.debug("closing %s failed: %s", channel.name, exc)

    # -- one job -------------------------------------------------------------------------

    async def _deliver(self, job: Job) -> None:
        now = self.clock()
        try:
            prepared = await asyncio.to_thread(prepare, self.engine, job, now)
            if prepared.suppress is not None:
                await asyncio.to_thread(
                    outbox.mark_suppressed,
                    self.engine,
                    job.ids,
                    self.name,
                    reason=prepared.suppress,
                    now=self.clock(),
                )
                self.stats["suppressed"] += len(job.ids)
                return
            if prepared.fail is not None or prepared.message is None:
                await self._fail(job, PermanentDeliveryError(prepared.fail or "nothing to send"))
                return
            await self._send(job, prepared.message)
        except Exception as exc:  # never let one delivery stop the worker
            logger.warning(
                "delivery %s (%s) to user %s hit an unexpected error: %s: %s",
                job.carrier.id,
                job.carrier.channel,
                job.carrier.user_id,
                type(exc).__name__,
                exc,
            )
            await self._retry(job, RetryableDeliveryError(f"{type(exc).__name__}: {exc}"))

    async def _send(self, job: Job, message: OutgoingMessage) -> None:
        channel = self.channels[job.carrier.channel]
        job.parts_sent = job.carrier.parts_sent

        async def progress(parts: int) -> None:
            job.parts_sent = parts
            owned = await asyncio.to_thread(
                outbox.record_progress,
                self.engine,
                job.carrier.id,
                self.name,
                parts_sent=parts,
                lease=self.lease,
                now=self.clock(),
            )
            if not owned:
                logger.warning("delivery %s: claim lost while sending parts", job.carrier.id)

        try:
            receipt = await channel.send(message, start_part=job.parts_sent, progress=progress)
        except Throttled as exc:
            await self._release(job, self.clock() + timedelta(seconds=exc.retry_after or 1.0))
            return
        except PermanentDeliveryError as exc:
            await self._fail(job, exc)
            if isinstance(exc, RecipientBlocked):
                await asyncio.to_thread(self._blocked_notice, job, message.address, str(exc))
            return
        except RetryableDeliveryError as exc:
            await self._retry(job, exc)
            return
        owned = await asyncio.to_thread(
            outbox.mark_sent,
            self.engine,
            job.carrier.id,
            [m.id for m in job.members],
            self.name,
            channel=job.carrier.channel,
            parts_sent=receipt.parts,
            now=self.clock(),
        )
        self.stats["sent"] += len(job.ids)
        if owned < len(job.ids):
            logger.warning(
                "delivery %s was sent but its claim had expired; it may be sent twice "
                "(raise the worker lease)",
                job.carrier.id,
            )

    async def _release(self, job: Job, when: datetime) -> None:
        await asyncio.to_thread(
            outbox.release, self.engine, job.ids, self.name, next_attempt_at=when, now=self.clock()
        )

    async def _retry(self, job: Job, exc: RetryableDeliveryError) -> None:
        attempts = job.attempts
        if attempts >= self.retry.max_attempts:
            await self._fail(
                job, PermanentDeliveryError(f"gave up after {attempts} attempts: {exc}")
            )
            return
        wait = self.retry.delay(attempts, exc.retry_after, self._rng)
        now = self.clock()
        when = now + timedelta(seconds=wait)
        await asyncio.to_thread(
            outbox.mark_retry,
            self.engine,
            job.ids,
            self.name,
            error=str(exc),
            next_attempt_at=when,
            parts_sent=job.parts_sent,
            now=now,
        )
        self.stats["retried"] += len(job.ids)
        logger.warning(
            "delivery %s (%s) to user %s failed (attempt %s of %s), retrying in %.1fs: %s",
            job.carrier.id,
            job.carrier.channel,
            job.carrier.user_id,
            attempts,
            self.retry.max_attempts,
            wait,
            exc,
            extra=self._extra(job),
        )

    async def _fail(self, job: Job, exc: PermanentDeliveryError) -> None:
        await asyncio.to_thread(
            outbox.mark_failed,
            self.engine,
            job.ids,
            self.name,
            error=str(exc),
            parts_sent=job.parts_sent,
            now=self.clock(),
        )
        self.stats["failed"] += len(job.ids)
        logger.error(
            "delivery %s (%s) to user %s failed permanently: %s",
            job.carrier.id,
            job.carrier.channel,
            job.carrier.user_id,
            exc,
            extra=self._extra(job),
        )

    @staticmethod
    def _extra(job: Job) -> dict[str, Any]:
        return {
            "user_id": job.carrier.user_id,
            "delivery_id": job.carrier.id,
            "notification_id": job.carrier.notification_id,
            "channel": job.carrier.channel,
        }

    def _blocked_notice(self, job: Job, chat: str, reason: str) -> None:
        try:
            with Session(self.engine) as session:
                telegram_blocked_notice(session, job.carrier.user_id, chat, reason)
                session.commit()
        except Exception as exc:
            logger.warning(
                "cannot post the blocked-bot notice to user %s: %s", job.carrier.user_id, exc
            )


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
