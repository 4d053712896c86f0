"""The delivery worker: claims due outbox rows, sends them, records what happened.

It runs as a background thread of a configured process (``TRADELOG_WORKER=auto``, the default,
starts one in any process ``tradelog.configure`` configured with a bot token or an SMTP host;
``true`` always, ``false`` never) or on its own as ``tradelog worker``. Any number of workers
may run against one PostgreSQL database; claims never overlap (see
:mod:`tradelog._notify.outbox`).

For each claimed delivery the worker

1. reads the user's preferences *now* (a channel switched off since queueing is suppressed, a
   missing chat id or address fails permanently) and the notification's full text;
2. releases several deferred deliveries of one user and channel together as one digest;
3. sends through the channel (Telegram parts pass the shared rate limiter first);
4. records the outcome:

   * ``sent`` (and ``telegram_sent``/``email_sent`` on the notification);
   * a wait that costs no attempt when the service asked for one (Telegram's 429
     ``retry_after``, the shared rate limit) or when the channel itself is down
     (:mod:`tradelog._notify.breaker` pauses it for every worker and probes it);
   * a retry with exponential backoff and jitter for a failure of this delivery;
   * ``failed`` with the reason when the error is permanent or its attempts ran out.

   Every failure is also a log line on the ``tradelog.notify.worker`` logger (its text
   scrubbed of secrets); a Telegram 403 also posts an in-app notice to the user.

Claims are leases (``TRADELOG_WORKER_LEASE``, 30 s) that the worker renews every third of the
lease for every delivery it holds, so a worker that dies leaves its claims for others within
one lease, and a long send (many Telegram parts behind the rate limit) is never taken over.

A worker only claims the channels it is configured for (Telegram needs
``TRADELOG_TELEGRAM_BOT_TOKEN``, email ``TRADELOG_SMTP_HOST``). For the others it runs a sweep
once a minute: deliveries due for longer than ``TRADELOG_UNSERVED_DELIVERY_TIMEOUT`` (15 min)
on a channel no worker has claimed anything on (or probed) in that time fail with a reason
naming the variable to set (:func:`~tradelog._notify.outbox.fail_unserved`). ``0`` turns the
sweep off (they wait).

Waking up: a worker looks at the outbox when the notification service of its own process rings
it after a commit, on PostgreSQL when another process's commit sends the ``NOTIFY`` it listens
for (one per committed transaction that queued deliveries; ``TRADELOG_LISTEN=off`` turns
listening off), and every ``TRADELOG_WORKER_POLL_INTERVAL`` regardless, which finds retries and
waits falling due and anything a lost connection missed. Each look claims up to the worker's
free slots (``concurrency`` minus the deliveries it holds) in one statement.

Deliveries of one user on one channel are sent one after another, in order; different users
are served concurrently (``concurrency``).

Stopping: :meth:`DeliveryWorker.stop` with ``drain`` keeps delivering what is due for up to
that many seconds (a process at exit gives the notifications it just made a bounded moment),
then finishes the sends in flight and hands every other claim back.
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
from typing import Any, Final

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from tradelog._db.base import utcnow
from tradelog._logs.redact import redact_text
from tradelog._notify import outbox
from tradelog._notify.breaker import BreakerState, ChannelBreaker
from tradelog._notify.channels.base import (
    Channel,
    ChannelUnavailable,
    OutgoingMessage,
    RecipientBlocked,
    Throttled,
)
from tradelog._notify.channels.in_app import telegram_blocked_notice
from tradelog._notify.outbox import ClaimedDelivery
from tradelog._notify.outbox_listen import OutboxListener
from tradelog._notify.prepare import Job, prepare
from tradelog._notify.retry import RetryPolicy
from tradelog._notify.threads import DaemonExecutor
from tradelog._notify.wakeup import Wakeups
from tradelog._notify.wiring import CHANNEL_SETTINGS, build_channels
from tradelog._signals import block_in_this_thread
from tradelog.config import Settings
from tradelog.exceptions import PermanentDeliveryError, RetryableDeliveryError

__all__ = ["DeliveryWorker"]

logger = logging.getLogger("tradelog.notify.worker")

_SETTING = CHANNEL_SETTINGS
_PRUNE_EVERY: Final = 600.0
_SWEEP_EVERY: Final = 60.0
_BREAKER_READ_EVERY: Final = 0.5
"""Seconds a worker trusts the breaker states it read (they are read again after a failure)."""


class DeliveryWorker:
    """Delivers outbox rows over ``channels`` (default: what ``settings`` configures).

    ``concurrency`` (deliveries in flight) and ``poll_interval`` default to
    ``TRADELOG_WORKER_CONCURRENCY`` and ``TRADELOG_WORKER_POLL_INTERVAL``; ``lease`` (default
    ``TRADELOG_WORKER_LEASE``) is how long a claim holds without renewal; ``unserved_timeout``
    (default ``TRADELOG_UNSERVED_DELIVERY_TIMEOUT``) is how long a delivery on a channel no
    worker sends may wait before it fails (0: forever). ``clock`` gives the current UTC time
    for every claim, retry, lease and breaker; ``wakeups``, when given, is the registry the
    notification service rings after each commit (the worker subscribes while it runs).
    ``listen`` (default ``TRADELOG_LISTEN``): on PostgreSQL, :meth:`run` also wakes on the
    ``NOTIFY`` that other processes' commits send (:mod:`tradelog._notify.outbox_listen`).
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
        lease: float | None = None,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        unserved_timeout: float | None = None,
        clock: Callable[[], datetime] = utcnow,
        wakeups: Wakeups | None = None,
        listen: bool | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.wakeups = wakeups
        self.listen = listen if listen is not None else settings.listen
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.concurrency = max(1, concurrency or self.settings.worker_concurrency)
        self.poll_interval = (
            poll_interval if poll_interval is not None else self.settings.worker_poll_interval
        )
        self.lease = lease if lease is not None else self.settings.worker_lease
        self.retry = retry or RetryPolicy(max_attempts=self.settings.max_delivery_attempts)
        self.unserved_timeout = (
            unserved_timeout
            if unserved_timeout is not None
            else self.settings.unserved_delivery_timeout
        )
        self._rng = rng or random.Random()
        self._channels: dict[str, Channel] | None = dict(channels) if channels is not None else None
        self._breakers: dict[str, ChannelBreaker] = {}
        self._breaker_states: dict[str, BreakerState] = {}
        self._breakers_read = float("-inf")
        self._probes: set[asyncio.Task[None]] = set()
        self._queues: dict[tuple[str, int], deque[Job]] = {}
        self._held: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._outstanding = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._stopping = threading.Event()
        self._drain_until: float | None = None
        self._thread: threading.Thread | None = None
        self._listener: OutboxListener | None = None
        self._announced = False
        self.stats: dict[str, int] = {
            "sent": 0,
            "retried": 0,
            "waited": 0,
            "failed": 0,
            "suppressed": 0,
        }

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

    def breaker(self, channel: str) -> ChannelBreaker:
        """The shared breaker of ``channel`` (scope: the bot, or the SMTP server)."""
        found = self._breakers.get(channel)
        if found is None:
            scope = getattr(self.channels.get(channel), "scope", None) or channel
            settings = self.settings
            found = self._breakers[channel] = ChannelBreaker(
                self.engine,
                str(scope),
                threshold=settings.channel_failure_threshold,
                pause=settings.channel_pause,
                max_pause=settings.channel_pause_max,
            )
        return found

    @property
    def listening(self) -> bool:
        """Whether the worker hears other processes' commits now (``LISTEN`` is connected)."""
        listener = self._listener
        return listener is not None and listener.listening

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

    def _run_in_thread(self, executor: DaemonExecutor, listener: OutboxListener | None) -> None:
        block_in_this_thread()
        # What asyncio.run() does, but for its shutdown_default_executor(): that starts a thread,
        # which Python 3.12+ refuses while the interpreter exits (when a process that just
        # notified stops its worker). _serve() closes its executor itself.
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(
                self._serve(until_idle=False, executor=executor, listener=listener)
            )
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            if left:
                loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    def start(self) -> threading.Thread:
        """Run the worker in a daemon thread with its own event loop.

        Every thread the worker needs (its executor's, the ``LISTEN`` connection's) is started
        here, on the caller's thread: a process that notifies and exits at once reaches
        interpreter exit before the worker's loop gets going, and from Python 3.12 no thread
        starts then, while the deliveries are still given their moment to go out."""
        if self._thread is not None and self._thread.is_alive():
            return self._thread
        self._stopping.clear()
        self._drain_until = None
        self._thread = threading.Thread(
            target=self._run_in_thread,
            args=self._helpers(listening=self.listen),
            name="tradelog-delivery",
            daemon=True,
        )
        self._thread.start()
        return self._thread

    def stop(self, timeout: float = 10.0, *, drain: float = 0.0) -> None:
        """Stop: deliver what is due for up to ``drain`` seconds, then stop claiming, finish
        what is in flight (up to ``timeout`` more) and hand the rest back."""
        if drain > 0:
            self._drain_until = time.monotonic() + drain
        self._stopping.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(max(0.0, drain) + timeout)
            self._thread = None

    # -- the loop ------------------------------------------------------------------------

    def _helpers(self, *, listening: bool) -> tuple[DaemonExecutor, OutboxListener | None]:
        """The threads the loop needs, started now: its executor and, when ``listening``, the
        ``LISTEN`` connection."""
        executor = DaemonExecutor(self.concurrency + 4)
        listener = OutboxListener(self.engine, self.wake).start() if listening else None
        return executor, listener

    def _draining(self) -> bool:
        until = self._drain_until
        return until is not None and time.monotonic() < until

    def _claiming(self) -> bool:
        return not self._stopping.is_set() or self._draining()

    async def _serve(
        self,
        *,
        until_idle: bool,
        executor: DaemonExecutor | None = None,
        listener: OutboxListener | None = None,
    ) -> None:
        """The loop; ``executor`` and ``listener`` are given when :meth:`start` made them."""
        self._loop = asyncio.get_running_loop()
        if executor is None:
            executor, listener = self._helpers(listening=self.listen and not until_idle)
        self._loop.set_default_executor(executor)
        self._event = asyncio.Event()
        unsubscribe = self.wakeups.subscribe(self.wake) if self.wakeups is not None else None
        self._listener = listener
        channels = await asyncio.to_thread(lambda: self.channels)
        self._announce()
        renewer = asyncio.create_task(self._renew_forever())
        next_prune = next_sweep = 0.0
        try:
            while self._claiming():
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + _PRUNE_EVERY
                    await self._prune(channels)
                if time.monotonic() >= next_sweep and self.unserved_timeout > 0:
                    next_sweep = time.monotonic() + _SWEEP_EVERY
                    for channel in self.unserved:
                        await self._sweep(channel)
                names = await self._open_channels(sorted(channels))
                free = self.concurrency - self._outstanding
                claimed: list[ClaimedDelivery] = []
                if free > 0 and names:
                    claimed = await self._claim(names, free)
                idle = not claimed and self._outstanding == 0 and not self._probes
                if idle and (until_idle or self._stopping.is_set()):
                    break
                if claimed and len(claimed) >= free:
                    if self._outstanding >= self.concurrency:
                        await self._wait(self.poll_interval)
                    continue
                if claimed:
                    continue
                await self._wait(self._poll_wait())
        finally:
            if unsubscribe is not None:
                unsubscribe()
            listener, self._listener = self._listener, None
            if listener is not None:
                await asyncio.to_thread(listener.stop)
            await self._shutdown()
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            executor.shutdown(wait=False)

    def _poll_wait(self) -> float:
        """How long to sleep before looking again: the poll interval, or less when a paused
        channel's probe falls due sooner."""
        wait = self.poll_interval
        now = self.clock().timestamp()
        for state in self._breaker_states.values():
            if state.paused_until > now:
                wait = min(wait, max(0.01, state.paused_until - now))
        return wait

    async def _open_channels(self, names: list[str]) -> list[str]:
        """The channels that may be claimed now; starts a probe of a paused one that is due."""
        if not names:
            return names
        if time.monotonic() - self._breakers_read >= _BREAKER_READ_EVERY:
            try:
                states = await asyncio.to_thread(
                    lambda: {name: self.breaker(name).state() for name in names}
                )
            except Exception as exc:
                logger.warning("delivery worker %s cannot read channel states: %s", self.name, exc)
                return names
            self._breaker_states = states
            self._breakers_read = time.monotonic()
        now = self.clock().timestamp()
        usable = []
        for name in names:
            state = self._breaker_states.get(name)
            if state is None or state.paused_until == 0:
                usable.append(name)
            elif state.probe_due(now) and not self._probes:
                self._start_probe(name, now)
        return usable

    def _start_probe(self, name: str, now: float) -> None:
        task = asyncio.create_task(self._probe(name, now))
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    async def _probe(self, name: str, now: float) -> None:
        """Probe a paused channel (only the worker that wins the claim does)."""
        breaker = self.breaker(name)
        timeout = max(1.0, min(self.lease, 30.0))
        if not await asyncio.to_thread(breaker.claim_probe, now, timeout):
            self._breakers_read = float("-inf")
            return
        channel = self.channels[name]
        check = getattr(channel, "check", None)
        try:
            if check is not None:
                await asyncio.wait_for(check(), timeout)
        except Exception as exc:
            state = await asyncio.to_thread(breaker.probe_failed, self.clock().timestamp())
            logger.warning(
                "%s is still unavailable (probe: %s); paused for %.1fs",
                name,
                _reason(exc),
                max(0.0, state.paused_until - self.clock().timestamp()),
            )
        else:
            await asyncio.to_thread(breaker.record_success)
            logger.warning("%s is available again; sending its backlog", name)
        self._breakers_read = float("-inf")
        if self._event is not None:
            self._event.set()

    async def _renew_forever(self) -> None:
        """Extend the leases of every claim this worker holds, every third of the lease."""
        while True:
            await asyncio.sleep(max(0.05, self.lease / 3))
            held = sorted(self._held)
            if not held:
                continue
            try:
                kept = await asyncio.to_thread(
                    outbox.renew,
                    self.engine,
                    held,
                    self.name,
                    lease=self.lease,
                    now=self.clock(),
                )
            except Exception as exc:
                logger.warning("delivery worker %s cannot renew its claims: %s", self.name, exc)
                continue
            if kept < len(held):
                logger.warning(
                    "delivery worker %s lost %d of its %d claims (their leases ran out)",
                    self.name,
                    len(held) - kept,
                    len(held),
                )

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
            self._held.update(item.id for item in claimed)
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
                extra = await asyncio.to_thread(
                    outbox.claim_digest_members,
                    self.engine,
                    self.name,
                    item,
                    lease=self.lease,
                    now=self.clock(),
                )
                self._held.update(member.id for member in extra)
                job.members += extra
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
                try:
                    if self._claiming():
                        await self._deliver(job)
                    else:
                        await self._release(job, self.clock())
                finally:
                    self._held.difference_update(job.ids)
                queue.popleft()
                self._outstanding -= 1
                if self._event is not None:
                    self._event.set()
        finally:
            del self._queues[key]

    async def _shutdown(self) -> None:
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        for task in list(self._probes):
            task.cancel()
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
            reason = _reason(exc, with_type=True)
            logger.warning(
                "delivery %s (%s) to user %s hit an unexpected error: %s",
                job.carrier.id,
                job.carrier.channel,
                job.carrier.user_id,
                reason,
            )
            await self._retry(job, RetryableDeliveryError(reason))

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
            await self._wait_out(job, exc, exc.retry_after or 1.0)
            return
        except PermanentDeliveryError as exc:
            await self._fail(job, exc)
            if isinstance(exc, RecipientBlocked):
                await asyncio.to_thread(self._blocked_notice, job, message.address, str(exc))
            return
        except ChannelUnavailable as exc:
            await self._channel_failed(job, exc)
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
        state = self._breaker_states.get(job.carrier.channel)
        if state is not None and (state.failures or state.paused_until):
            await asyncio.to_thread(self.breaker(job.carrier.channel).record_success)
            self._breakers_read = float("-inf")
        if owned < len(job.ids):
            logger.warning(
                "delivery %s was sent but its claim had expired; it may be sent twice",
                job.carrier.id,
            )

    async def _channel_failed(self, job: Job, exc: ChannelUnavailable) -> None:
        """A channel-wide failure: the breaker decides whether it costs this delivery an
        attempt (an isolated failure) or only a wait (the channel is down)."""
        breaker = self.breaker(job.carrier.channel)
        now = self.clock().timestamp()
        try:
            state = await asyncio.to_thread(breaker.record_failure, now)
        except Exception as error:
            logger.warning("cannot record a %s failure: %s", job.carrier.channel, error)
            await self._retry(job, exc)
            return
        self._breaker_states[job.carrier.channel] = state
        self._breakers_read = time.monotonic()
        if not state.is_open(now):
            await self._retry(job, exc)
            return
        logger.warning(
            "%s is unavailable (%s); the channel is paused and delivery %s waits without "
            "spending an attempt",
            job.carrier.channel,
            _reason(exc),
            job.carrier.id,
            extra=self._extra(job),
        )
        # Due again at once: no worker claims the channel while it is paused, and every
        # worker does as soon as the probe closes the breaker (a wait timed from the pause,
        # or from a probe in progress, would hold it back after the recovery).
        await self._wait_out(job, exc, 0.0)

    async def _wait_out(self, job: Job, exc: RetryableDeliveryError, seconds: float) -> None:
        """Hand the delivery back for ``seconds`` without spending an attempt."""
        when = self.clock() + timedelta(seconds=seconds)
        await asyncio.to_thread(
            outbox.release,
            self.engine,
            job.ids,
            self.name,
            next_attempt_at=when,
            now=self.clock(),
            error=str(exc),
            parts_sent=job.parts_sent,
        )
        self.stats["waited"] += len(job.ids)

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
            _reason(exc),
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
            _reason(exc),
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
                telegram_blocked_notice(session, job.carrier.user_id, chat, redact_text(reason))
                session.commit()
        except Exception as exc:
            logger.warning(
                "cannot post the blocked-bot notice to user %s: %s",
                job.carrier.user_id,
                _reason(exc),
            )


def _reason(exc: BaseException, *, with_type: bool = False) -> str:
    """An error's text for rows and log lines, scrubbed of secrets (these lines also reach the
    host's own handlers through the root logger)."""
    try:
        text = str(exc)
    except Exception:
        text = "<unprintable>"
    if with_type:
        text = f"{type(exc).__name__}: {text}"
    return redact_text(text)


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
