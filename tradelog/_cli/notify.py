"""``tradelog notify send | list | unread | read | deliveries | retry | test-channel``.

Like every other command, ``--user N`` names the user a command is about and ``--as N`` the
user it acts as; without ``--as`` the operator acts as the system administrator account (an
admin: every user's inbox and deliveries). ``--as`` a non-admin limits the command to that
user's own rows, and naming someone else is refused (exit 4). ``read`` is the one exception:
read state is personal, so it acts as the inbox owner (``--user``) unless ``--as`` says
otherwise, and only the owner may mark notifications read.

``send`` goes through the same path as ``tradelog.notify()``: preferences, quiet hours, the
outbox. ``test-channel`` talks to Telegram and SMTP directly, bypassing the outbox and quiet
hours, and prints what happened on each channel: the tool for setting up a bot or an SMTP
account.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from tradelog._access import Actor, resolve_actor, scoped
from tradelog._cli._common import CommandError, Context, acting_user, emit, positive_int
from tradelog._db.base import utcnow
from tradelog._db.models import Notification, NotificationDelivery, User
from tradelog._notify import outbox
from tradelog._notify.channels.base import Channel, OutgoingMessage
from tradelog._notify.dispatch import ChannelOutcome, dispatch
from tradelog._notify.inbox import list_notifications, mark_all_read, mark_read, unread_count
from tradelog._notify.policy import LEVELS, NOTIFICATION_TYPES
from tradelog._notify.preferences import get_preferences, snapshot
from tradelog.exceptions import (
    ConfigurationError,
    DeliveryError,
    MissingExtraError,
    NotFound,
    PermissionDenied,
)

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``notify`` command group."""
    parser = subparsers.add_parser(
        "notify",
        help="send notifications, read the inbox, test channels",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="notify_command", metavar="ACTION", required=True)

    send = commands.add_parser("send", help="notify a user (preferences and quiet hours apply)")
    send.add_argument("--user", type=int, required=True, help="recipient user id")
    _actor_option(send)
    send.add_argument("--type", type=str.lower, required=True, choices=NOTIFICATION_TYPES)
    send.add_argument("--level", type=str.lower, default="info", choices=LEVELS)
    send.add_argument("--title", required=True)
    send.add_argument("--message", default="", help="text ('-' reads standard input)")
    send.add_argument("--dedupe-key", help="send nothing if this key was used for the user")
    send.set_defaults(handler=_send)

    list_ = commands.add_parser("list", help="notifications, newest first")
    list_.add_argument("--user", type=int, help="only this user's inbox")
    _actor_option(list_)
    list_.add_argument("--unread", action="store_true", help="only unread notifications")
    list_.add_argument("--type", type=str.lower, choices=NOTIFICATION_TYPES)
    list_.add_argument("--level", type=str.lower, choices=LEVELS)
    list_.add_argument("--limit", type=positive_int, default=50, help="rows per page (1-1000)")
    list_.add_argument("--cursor", help="continue after the page that printed this cursor")
    list_.set_defaults(handler=_list)

    unread = commands.add_parser("unread", help="how many unread notifications a user has")
    unread.add_argument("--user", type=int, required=True, help="whose inbox")
    _actor_option(unread)
    unread.set_defaults(handler=_unread)

    read = commands.add_parser("read", help="mark notifications of one inbox read")
    read.add_argument("--user", type=int, required=True, help="the inbox owner")
    read.add_argument(
        "--as",
        dest="actor",
        type=int,
        metavar="USER_ID",
        help="act as this user (default: the owner; only the owner may mark read)",
    )
    target = read.add_mutually_exclusive_group(required=True)
    target.add_argument("ids", type=int, nargs="*", default=[], metavar="ID")
    target.add_argument("--all", action="store_true", help="every unread notification")
    read.set_defaults(handler=_read)

    deliveries = commands.add_parser("deliveries", help="outbox deliveries (newest first)")
    deliveries.add_argument("--user", type=int, help="only this user's deliveries")
    _actor_option(deliveries)
    deliveries.add_argument("--status", choices=outbox_statuses())
    deliveries.add_argument("--channel", choices=("telegram", "email"))
    deliveries.add_argument("--limit", type=positive_int, default=50)
    deliveries.set_defaults(handler=_deliveries)

    retry = commands.add_parser("retry", help="queue failed deliveries again")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", type=int, nargs="*", default=[], metavar="DELIVERY_ID")
    which.add_argument("--all-failed", action="store_true", help="every failed delivery")
    retry.add_argument("--user", type=int, help="only this user's deliveries")
    _actor_option(retry)
    retry.set_defaults(handler=_retry)

    test = commands.add_parser(
        "test-channel",
        help="send a test message over each configured channel and show what happened",
    )
    test.add_argument("--user", type=int, required=True, help="whose chat id / address to use")
    _actor_option(test)
    test.add_argument("--channel", choices=("telegram", "email", "all"), default="all")
    test.set_defaults(handler=_test_channel)


def outbox_statuses() -> tuple[str, ...]:
    """The delivery statuses, for ``--status``."""
    from tradelog._db.models.outbox import DELIVERY_STATUSES  # noqa: PLC0415

    return DELIVERY_STATUSES


def _actor_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--as",
        dest="actor",
        type=int,
        metavar="USER_ID",
        help="act as this user (default: the system administrator account)",
    )


def _actor(session: Session, args: argparse.Namespace) -> Actor:
    """The acting user: ``--as``, else the system administrator account."""
    return acting_user(session, args.actor)


def _target(session: Session, actor: Actor, user_id: int | None, action: str) -> int | None:
    """Check ``--user``: it must exist, and a non-admin may only name themself."""
    if user_id is None:
        return None
    if user_id != actor.id and not actor.is_admin:
        raise PermissionDenied(f"user {actor.id} may not {action} of user {user_id}")
    if session.get(User, user_id) is None:
        raise NotFound(f"no user with id {user_id}")
    return user_id


def _invalid(exc: ValueError) -> CommandError:
    return CommandError(str(exc), exit_code=2)


def _detail(outcome: ChannelOutcome, tz: ZoneInfo) -> str | None:
    """What ``describe`` says beyond ``channel: status`` (the time, the reason)."""
    text = outcome.describe(tz)
    head = f"{outcome.channel}: {outcome.status}"
    if not text.startswith(head):  # pragma: no cover - describe always starts so
        return text
    return text[len(head) :].strip() or None


def _send(args: argparse.Namespace, context: Context) -> int:
    message = sys.stdin.read() if args.message == "-" else args.message
    try:
        with context.session() as session:
            actor = _actor(session, args)
            _target(session, actor, args.user, "send notifications to the inbox")
            result = dispatch(
                session,
                args.user,
                args.type,
                args.level,
                args.title,
                message,
                dedupe_key=args.dedupe_key,
            )
            session.commit()
    except ValueError as exc:
        raise _invalid(exc) from exc
    zone = ZoneInfo(result.timezone)
    rows = [
        {
            "notification": result.notification_id,
            "channel": c.channel,
            "status": c.status,
            "detail": _detail(c, zone),
        }
        for c in result.channels
    ]
    if not result.created and not result.duplicate:
        rows = [
            {"notification": None, "channel": "-", "status": "not created", "detail": result.reason}
        ]
    emit(context, rows, ["notification", "channel", "status", "detail"])
    return 0


def _list(args: argparse.Namespace, context: Context) -> int:
    zone = context.settings.zone
    try:
        with context.session() as session:
            actor = _actor(session, args)
            user_id = _target(session, actor, args.user, "read the notifications")
            page = list_notifications(
                session,
                actor,
                user_id=user_id,
                unread_only=args.unread,
                type_=args.type,
                level=args.level,
                limit=args.limit,
                cursor=args.cursor,
            )
            rows = [
                {
                    "id": n.id,
                    "user": n.user_id,
                    "created": n.created_at.astimezone(zone),
                    "type": n.type,
                    "level": n.level,
                    "read": n.read,
                    "telegram": n.telegram_sent,
                    "email": n.email_sent,
                    "title": n.title,
                }
                for n in page.items
            ]
            session.commit()
    except ValueError as exc:
        raise _invalid(exc) from exc
    emit(context, rows)
    if page.next_cursor and not context.json:
        context.out.write(f"next page: --cursor {page.next_cursor}\n")
    return 0


def _unread(args: argparse.Namespace, context: Context) -> int:
    with context.session() as session:
        actor = _actor(session, args)
        _target(session, actor, args.user, "read the notifications")
        count = unread_count(session, actor, user_id=args.user)
        session.commit()
    emit(context, [{"user": args.user, "unread": count}])
    return 0


def _read(args: argparse.Namespace, context: Context) -> int:
    with context.session() as session:
        actor = resolve_actor(session, args.actor if args.actor is not None else args.user)
        if actor.id != args.user:
            raise PermissionDenied(
                f"user {actor.id} may not mark notifications of user {args.user} read: "
                "read state belongs to the inbox owner"
            )
        if args.all:
            changed = mark_all_read(session, actor)
        else:
            changed = 0
            for notification_id in dict.fromkeys(args.ids):
                found = session.get(Notification, notification_id)
                was_read = found is not None and found.read
                mark_read(session, actor, notification_id)
                changed += 0 if was_read else 1
        session.commit()
        remaining = unread_count(session, actor)
    emit(context, [{"user": args.user, "marked_read": changed, "unread": remaining}])
    return 0


def _deliveries(args: argparse.Namespace, context: Context) -> int:
    zone = context.settings.zone
    with context.session() as session:
        actor = _actor(session, args)
        user_id = _target(session, actor, args.user, "read the deliveries")
        query = scoped(select(NotificationDelivery), NotificationDelivery.user_id, actor, user_id)
        query = query.order_by(NotificationDelivery.id.desc()).limit(args.limit)
        if args.status:
            query = query.where(NotificationDelivery.status == args.status)
        if args.channel:
            query = query.where(NotificationDelivery.channel == args.channel)
        rows = [
            {
                "id": d.id,
                "notification": d.notification_id,
                "user": d.user_id,
                "channel": d.channel,
                "status": d.status,
                "attempts": d.attempts,
                "next_attempt": d.next_attempt_at.astimezone(zone)
                if d.status in ("pending", "sending")
                else None,
                "sent": d.sent_at.astimezone(zone) if d.sent_at else None,
                "error": d.last_error,
            }
            for d in session.execute(query).scalars()
        ]
        session.commit()
    emit(context, rows)
    return 0


def _retry(args: argparse.Namespace, context: Context) -> int:
    with context.session() as session:
        actor = _actor(session, args)
        user_id = _target(session, actor, args.user, "retry the deliveries")
        if not actor.is_admin:
            user_id = actor.id
        ids = None if args.all_failed else list(dict.fromkeys(args.ids))
        if ids is not None:
            outbox.check_retryable(session, actor, ids)
        changed = outbox.requeue_failed(session, delivery_ids=ids, user_id=user_id)
        session.commit()
    emit(context, [{"requeued": changed}])
    return 0


def _channel(name: str, context: Context) -> Channel:
    settings = context.settings
    if name == "telegram":
        if not settings.telegram_bot_token:
            raise ConfigurationError(
                "TRADELOG_TELEGRAM_BOT_TOKEN is not set", variable="TRADELOG_TELEGRAM_BOT_TOKEN"
            )
        from tradelog._notify.channels.telegram import TelegramChannel, bot_id  # noqa: PLC0415
        from tradelog._notify.ratelimit import DbRateLimiter, RateLimits  # noqa: PLC0415

        token = settings.telegram_bot_token.reveal()
        # The workers' shared limiter: a test right after a delivery to the same chat waits
        # for its slot instead of being refused with 429.
        limiter = DbRateLimiter(
            context.engine,
            bot_id(token),
            RateLimits(
                messages_per_second=settings.telegram_rate,
                chat_interval=settings.telegram_chat_interval,
            ),
        )
        return TelegramChannel(token, api_url=settings.telegram_api_url, limiter=limiter)
    from tradelog._notify.channels.email import EmailChannel  # noqa: PLC0415

    return EmailChannel.from_settings(settings)


async def _try(name: str, context: Context, message: OutgoingMessage) -> dict[str, Any]:
    try:
        channel = _channel(name, context)
    except (ConfigurationError, MissingExtraError) as exc:
        return {"channel": name, "result": "not configured", "detail": str(exc)}
    try:
        receipt = await channel.send(message)
    except DeliveryError as exc:
        return {"channel": name, "result": "failed", "detail": str(exc)}
    finally:
        await channel.aclose()
    target = f"chat {message.address}" if name == "telegram" else message.address
    return {"channel": name, "result": "sent", "detail": f"to {target} ({receipt.parts} part(s))"}


def _test_channel(args: argparse.Namespace, context: Context) -> int:
    with context.session() as session:
        actor = _actor(session, args)
        _target(session, actor, args.user, "test the channels")
        view = snapshot(get_preferences(session, actor, args.user))
        session.commit()
    names = ["telegram", "email"] if args.channel == "all" else [args.channel]
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for name in names:
        address = view.telegram_chat_id if name == "telegram" else view.email_address
        enabled = view.telegram_enabled if name == "telegram" else view.email_enabled
        if not address:
            field = "telegram_chat_id" if name == "telegram" else "email_address"
            rows.append({"channel": name, "result": "skipped", "detail": f"no {field} set"})
            continue
        message = OutgoingMessage(
            address=address,
            title="tradelog test message",
            text=(
                f"This is a test from tradelog for user {args.user}. If you can read it, "
                f"{name} notifications work."
                + ("" if enabled else f"\n(Note: {name} is switched off in the preferences.)")
            ),
            level="info",
            type_="system",
            created_at=now,
            tz=view.zone(),
        )
        rows.append(asyncio.run(_try(name, context, message)))
    emit(context, rows, ["channel", "result", "detail"])
    return 1 if any(r["result"] == "failed" for r in rows) else 0
