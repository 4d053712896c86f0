"""``tradelog notify send | list | unread | read | deliveries | retry | test-channel``.

Inbox commands act as ``--user N`` (that user's own inbox; an admin may look at another user's
with ``--for-user``). ``send`` goes through the same path as ``tradelog.notify()``: preferences,
quiet hours, the outbox. ``test-channel`` talks to Telegram and SMTP directly, bypassing the
outbox and quiet hours, and prints what happened on each channel: the tool for setting up a bot
or an SMTP account.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from tradelog.access import resolve_actor
from tradelog.cli._common import CommandError, Context, emit
from tradelog.db.base import utcnow
from tradelog.db.models import NotificationDelivery
from tradelog.exceptions import ConfigurationError, DeliveryError, MissingExtraError
from tradelog.notify import outbox
from tradelog.notify.channels.base import Channel, OutgoingMessage
from tradelog.notify.dispatch import dispatch
from tradelog.notify.inbox import list_notifications, mark_all_read, mark_read, unread_count
from tradelog.notify.policy import LEVELS, NOTIFICATION_TYPES
from tradelog.notify.preferences import get_preferences, snapshot

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``notify`` command group."""
    parser = subparsers.add_parser(
        "notify", help="send notifications, read the inbox, test channels"
    )
    commands = parser.add_subparsers(dest="notify_command", metavar="ACTION", required=True)

    send = commands.add_parser("send", help="notify a user (preferences and quiet hours apply)")
    send.add_argument("--user", type=int, required=True, help="recipient user id")
    send.add_argument("--type", required=True, choices=NOTIFICATION_TYPES)
    send.add_argument("--level", default="info", choices=LEVELS)
    send.add_argument("--title", required=True)
    send.add_argument("--message", default="", help="text ('-' reads standard input)")
    send.add_argument("--dedupe-key", help="send nothing if this key was used for the user")
    send.set_defaults(handler=_send)

    list_ = commands.add_parser("list", help="a user's notifications, newest first")
    _user(list_)
    list_.add_argument("--for-user", type=int, help="(admins) another user's inbox")
    list_.add_argument("--unread", action="store_true", help="only unread notifications")
    list_.add_argument("--type", choices=NOTIFICATION_TYPES)
    list_.add_argument("--level", choices=LEVELS)
    list_.add_argument("--limit", type=int, default=50)
    list_.add_argument("--cursor", help="continue after the page that printed this cursor")
    list_.set_defaults(handler=_list)

    unread = commands.add_parser("unread", help="how many unread notifications a user has")
    _user(unread)
    unread.set_defaults(handler=_unread)

    read = commands.add_parser("read", help="mark notifications read")
    _user(read)
    target = read.add_mutually_exclusive_group(required=True)
    target.add_argument("ids", type=int, nargs="*", default=[], metavar="ID")
    target.add_argument("--all", action="store_true", help="every unread notification")
    read.set_defaults(handler=_read)

    deliveries = commands.add_parser("deliveries", help="outbox deliveries (newest first)")
    deliveries.add_argument("--status", choices=outbox_statuses())
    deliveries.add_argument("--user", type=int, help="only this user's deliveries")
    deliveries.add_argument("--channel", choices=("telegram", "email"))
    deliveries.add_argument("--limit", type=int, default=50)
    deliveries.set_defaults(handler=_deliveries)

    retry = commands.add_parser("retry", help="queue failed deliveries again")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", type=int, nargs="*", default=[], metavar="DELIVERY_ID")
    which.add_argument("--all-failed", action="store_true", help="every failed delivery")
    retry.add_argument("--user", type=int, help="only this user's deliveries")
    retry.set_defaults(handler=_retry)

    test = commands.add_parser(
        "test-channel",
        help="send a test message over each configured channel and show what happened",
    )
    test.add_argument("--user", type=int, required=True, help="whose chat id / address to use")
    test.add_argument("--channel", choices=("telegram", "email", "all"), default="all")
    test.set_defaults(handler=_test_channel)


def outbox_statuses() -> tuple[str, ...]:
    """The delivery statuses, for ``--status``."""
    from tradelog.db.models.outbox import DELIVERY_STATUSES  # noqa: PLC0415

    return DELIVERY_STATUSES


def _user(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", type=int, required=True, help="act as this user id")


def _invalid(exc: ValueError) -> CommandError:
    return CommandError(str(exc), exit_code=2)


def _send(args: argparse.Namespace, context: Context) -> int:
    message = sys.stdin.read() if args.message == "-" else args.message
    try:
        with context.session() as session:
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
    rows = [
        {
            "notification": result.notification_id,
            "channel": c.channel,
            "status": c.status,
            "detail": c.describe(ZoneInfo(result.timezone)).partition(": ")[2],
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
            page = list_notifications(
                session,
                args.user,
                user_id=args.for_user,
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
    except ValueError as exc:
        raise _invalid(exc) from exc
    emit(context, rows)
    if page.next_cursor and not context.json:
        context.out.write(f"next page: --cursor {page.next_cursor}\n")
    return 0


def _unread(args: argparse.Namespace, context: Context) -> int:
    with context.session() as session:
        count = unread_count(session, args.user)
    emit(context, [{"user": args.user, "unread": count}])
    return 0


def _read(args: argparse.Namespace, context: Context) -> int:
    with context.session() as session:
        if args.all:
            changed = mark_all_read(session, args.user)
        else:
            changed = 0
            for notification_id in args.ids:
                row = mark_read(session, args.user, notification_id)
                changed += 1 if row.read else 0
        session.commit()
        remaining = unread_count(session, args.user)
    emit(context, [{"user": args.user, "marked_read": changed, "unread": remaining}])
    return 0


def _deliveries(args: argparse.Namespace, context: Context) -> int:
    zone = context.settings.zone
    query = select(NotificationDelivery).order_by(NotificationDelivery.id.desc()).limit(args.limit)
    if args.status:
        query = query.where(NotificationDelivery.status == args.status)
    if args.user is not None:
        query = query.where(NotificationDelivery.user_id == args.user)
    if args.channel:
        query = query.where(NotificationDelivery.channel == args.channel)
    with context.session() as session:
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
    emit(context, rows)
    return 0


def _retry(args: argparse.Namespace, context: Context) -> int:
    with context.session() as session:
        changed = outbox.requeue_failed(
            session, delivery_ids=None if args.all_failed else args.ids, user_id=args.user
        )
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
        from tradelog.notify.channels.telegram import TelegramChannel  # noqa: PLC0415

        return TelegramChannel(
            settings.telegram_bot_token.reveal(), api_url=settings.telegram_api_url
        )
    from tradelog.notify.channels.email import EmailChannel  # noqa: PLC0415

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
        resolve_actor(session, args.user)
        view = snapshot(get_preferences(session, args.user))
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
