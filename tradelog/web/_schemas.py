"""The typed bodies of the JSON routes (what the OpenAPI description shows), and row converters.

Times are ISO 8601 in UTC (``...+00:00``); the pages show them in the user's timezone. Pages of
rows share one shape: ``data`` (newest first), ``next`` (the cursor of the next, older page, or
``null``) and ``has_more``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    create_model,
)

from tradelog._db.models import (
    AuditLog,
    ErrorLog,
    Notification,
    NotificationDelivery,
    ServiceTaskExecution,
)
from tradelog._logs.query import LogEntry
from tradelog.errors import ErrorGroup
from tradelog.trading_config import FIELDS

__all__ = [
    "AuditOut",
    "AuditPageOut",
    "ConfigChangeOut",
    "ConfigOut",
    "ConfigUpdate",
    "DeliveriesOut",
    "DeliveryOut",
    "ErrorGroupOut",
    "ErrorOut",
    "ErrorPageOut",
    "LogEntryOut",
    "LogPageOut",
    "MarkedAllRead",
    "MarkedRead",
    "NotificationOut",
    "NotificationPage",
    "OccurrenceOut",
    "OccurrencePageOut",
    "PreferencesOut",
    "PreferencesUpdate",
    "ResolveIn",
    "ResolvedOut",
    "RetryIn",
    "RetryOut",
    "ServiceOut",
    "ServicesOut",
    "StatusOut",
    "TaskOut",
    "UnreadCount",
    "audit_out",
    "delivery_out",
    "error_out",
    "group_out",
    "log_out",
    "notification_out",
    "occurrence_out",
    "task_out",
]

NotificationType = Literal["service", "trading", "system", "error"]
NotificationLevel = Literal["info", "warning", "error", "critical"]


# -- notifications ------------------------------------------------------------------------


class NotificationOut(BaseModel):
    """One notification of the inbox (``message`` is the complete text)."""

    id: int
    type: str
    level: str
    title: str
    message: str
    read: bool
    read_at: datetime | None
    created_at: datetime


class NotificationPage(BaseModel):
    """A page of the inbox, newest first, and the user's unread count."""

    data: list[NotificationOut]
    next: str | None
    has_more: bool
    unread: int


class UnreadCount(BaseModel):
    """How many notifications are unread."""

    unread: int


class MarkedRead(BaseModel):
    """A notification marked read, and the unread count after it."""

    id: int
    read: bool
    read_at: datetime | None
    unread: int


class MarkedAllRead(BaseModel):
    """How many notifications were marked read now, and the unread count after it."""

    changed: int
    unread: int


def notification_out(row: Notification) -> NotificationOut:
    """The API form of a notification row."""
    return NotificationOut(
        id=row.id,
        type=row.type,
        level=row.level,
        title=row.title,
        message=row.text,
        read=bool(row.read),
        read_at=row.read_at,
        created_at=row.created_at,
    )


# -- preferences ---------------------------------------------------------------------------


class PreferencesOut(BaseModel):
    """A user's notification preferences (quiet hours as ``HH:MM`` in ``timezone``)."""

    user_id: int
    telegram_enabled: bool
    telegram_chat_id: str | None
    email_enabled: bool
    email_address: str | None
    in_app_enabled: bool
    notify_service_events: bool
    notify_trading_events: bool
    notify_system_events: bool
    notify_errors: bool
    quiet_hours_start: str | None
    quiet_hours_end: str | None
    timezone: str
    quiet_hours_mode: str
    updated_at: datetime | None


class PreferencesUpdate(BaseModel):
    """Fields to change; those left out stay as they are. ``null`` clears a chat id, an
    address, or (both together) the quiet hours. Validated like ``tradelog prefs set``."""

    model_config = ConfigDict(extra="forbid")

    telegram_enabled: StrictBool | None = None
    telegram_chat_id: StrictStr | StrictInt | None = None
    email_enabled: StrictBool | None = None
    email_address: StrictStr | None = None
    in_app_enabled: StrictBool | None = None
    notify_service_events: StrictBool | None = None
    notify_trading_events: StrictBool | None = None
    notify_system_events: StrictBool | None = None
    notify_errors: StrictBool | None = None
    quiet_hours_start: StrictStr | None = Field(None, examples=["22:00"])
    quiet_hours_end: StrictStr | None = Field(None, examples=["07:00"])
    timezone: StrictStr | None = Field(None, examples=["Asia/Kolkata"])
    quiet_hours_mode: Literal["defer", "silent", "drop"] | None = None


# -- logs, errors, status, config ----------------------------------------------------------


class LogEntryOut(BaseModel):
    """One ``service_logs`` row."""

    id: int
    user_id: int
    level: str
    module: str
    message: str
    context: dict[str, Any] | None
    timestamp: datetime


class LogPageOut(BaseModel):
    """A page of log entries, newest first."""

    data: list[LogEntryOut]
    next: str | None
    has_more: bool


def log_out(entry: LogEntry) -> LogEntryOut:
    """The API form of a log entry."""
    return LogEntryOut.model_validate(entry, from_attributes=True)


class ErrorOut(BaseModel):
    """One of the user's own errors (what happened and whether it is resolved)."""

    id: int
    error_type: str
    error_message: str
    fingerprint: str | None
    occurred_at: datetime
    resolved: bool
    resolved_at: datetime | None


class ErrorPageOut(BaseModel):
    """A page of errors, newest first."""

    data: list[ErrorOut]
    next: str | None
    has_more: bool


def error_out(row: ErrorLog) -> ErrorOut:
    """The owner's view of an error row (no traceback, context or notes)."""
    return ErrorOut.model_validate(row, from_attributes=True)


class ServiceOut(BaseModel):
    """The state of one user's service: ``running``, ``stale`` or ``stopped``."""

    user_id: int
    state: Literal["running", "stale", "stopped"]
    last_heartbeat: datetime | None
    last_task: datetime | None
    error_count: int
    last_error: str | None


class TaskOut(BaseModel):
    """One run of a task (``service_task_execution``)."""

    id: int
    task_name: str
    status: str
    executed_at: datetime
    duration_seconds: float
    details: dict[str, Any] | None


def task_out(row: ServiceTaskExecution) -> TaskOut:
    """The API form of a task run."""
    return TaskOut.model_validate(row, from_attributes=True)


class StatusOut(BaseModel):
    """The user's service (``null`` before its first heartbeat) and its latest task runs."""

    service: ServiceOut | None
    stale_after_seconds: float
    tasks: list[TaskOut]


_KINDS: dict[type, Any] = {
    int: StrictInt | None,
    float: StrictFloat | StrictInt | None,
    bool: StrictBool | None,
    str: StrictStr | None,
    dict: dict[str, Any] | None,
}

_CONFIG_FIELDS: dict[str, Any] = {name: (_KINDS[spec.kind], None) for name, spec in FIELDS.items()}
ConfigOut: type[BaseModel] = create_model(
    "ConfigOut",
    __doc__="A user's trading configuration.",
    user_id=(int, ...),
    **_CONFIG_FIELDS,
)
ConfigUpdate: type[BaseModel] = create_model(
    "ConfigUpdate",
    __doc__="Trading configuration fields to change (validated like ``tradelog config set``).",
    __config__=ConfigDict(extra="forbid"),
    **_CONFIG_FIELDS,
)


class ConfigChangeOut(BaseModel):
    """The configuration after a change, and ``{field: {before, after}}`` of what changed."""

    config: ConfigOut  # type: ignore[valid-type]
    changed: dict[str, Any]


# -- admin ---------------------------------------------------------------------------------


class ErrorGroupOut(BaseModel):
    """All occurrences of one fingerprint and the group's status."""

    fingerprint: str | None
    error_type: str
    count: int
    users: int
    unresolved: int
    first_seen: datetime
    last_seen: datetime
    sample_message: str
    status: str
    substatus: str | None


def group_out(group: ErrorGroup) -> ErrorGroupOut:
    """The API form of an error group."""
    return ErrorGroupOut.model_validate(group, from_attributes=True)


class OccurrenceOut(ErrorOut):
    """One error with everything an admin needs to reproduce it."""

    user_id: int
    traceback: str | None
    context: dict[str, Any] | None
    resolved_by: int | None
    resolution_notes: str | None


class OccurrencePageOut(BaseModel):
    """A page of error occurrences, newest first."""

    data: list[OccurrenceOut]
    next: str | None
    has_more: bool


def occurrence_out(row: ErrorLog) -> OccurrenceOut:
    """The admin's view of an error row."""
    return OccurrenceOut.model_validate(row, from_attributes=True)


class ResolveIn(BaseModel):
    """Why the errors are resolved (optional, up to 512 characters are kept)."""

    model_config = ConfigDict(extra="forbid")

    notes: StrictStr | None = Field(None, max_length=4096)


class ResolvedOut(BaseModel):
    """The errors this call resolved (``changed`` = how many)."""

    resolved: list[int]
    changed: int


class DeliveryOut(BaseModel):
    """One outbox delivery."""

    id: int
    notification_id: int
    user_id: int
    channel: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    sent_at: datetime | None
    last_error: str | None
    updated_at: datetime | None


def delivery_out(row: NotificationDelivery) -> DeliveryOut:
    """The API form of a delivery (``next_attempt_at`` only while it is pending or sending)."""
    waiting = row.status in ("pending", "sending")
    return DeliveryOut(
        id=row.id,
        notification_id=row.notification_id,
        user_id=row.user_id,
        channel=row.channel,
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at if waiting else None,
        sent_at=row.sent_at,
        last_error=row.last_error,
        updated_at=row.updated_at,
    )


class DeliveriesOut(BaseModel):
    """The outbox at a glance (``backlog``, as ``tradelog status`` shows it) and a page of
    deliveries, newest first."""

    backlog: dict[str, Any]
    data: list[DeliveryOut]
    next: str | None
    has_more: bool


class RetryIn(BaseModel):
    """Which failed deliveries to queue again: ``delivery_ids``, or every failed one (of
    ``user_id`` when given)."""

    model_config = ConfigDict(extra="forbid")

    delivery_ids: list[StrictInt] | None = Field(None, max_length=1000)
    user_id: StrictInt | None = None


class RetryOut(BaseModel):
    """How many deliveries were queued again."""

    requeued: int


class ServicesOut(BaseModel):
    """Every user's service, and how many are stale."""

    stale_after_seconds: float
    stale: int
    data: list[ServiceOut]


class AuditOut(BaseModel):
    """One audit row: who changed what, from where."""

    id: int
    user_id: int
    action: str
    resource_type: str
    resource_id: int | None
    changes: dict[str, Any] | None
    ip_address: str | None
    user_agent: str | None
    timestamp: datetime


class AuditPageOut(BaseModel):
    """A page of the audit trail, newest first."""

    data: list[AuditOut]
    next: str | None
    has_more: bool


def audit_out(row: AuditLog) -> AuditOut:
    """The API form of an audit row."""
    return AuditOut.model_validate(row, from_attributes=True)
