"""Every tradelog table, importable from one place."""

from tradelog.db.models.audit import AuditLog
from tradelog.db.models.config import UserTradingConfig
from tradelog.db.models.errors import ErrorLog
from tradelog.db.models.logs import ServiceLog
from tradelog.db.models.ml import MLModel, MLTrainingJob
from tradelog.db.models.notifications import Notification, UserNotificationPreferences
from tradelog.db.models.outbox import NotificationDelivery, NotificationRateLimit
from tradelog.db.models.service import ServiceStatus, ServiceTaskExecution
from tradelog.db.models.users import Activity, Order, User

__all__ = [
    "Activity",
    "AuditLog",
    "ErrorLog",
    "MLModel",
    "MLTrainingJob",
    "Notification",
    "NotificationDelivery",
    "NotificationRateLimit",
    "Order",
    "ServiceLog",
    "ServiceStatus",
    "ServiceTaskExecution",
    "User",
    "UserNotificationPreferences",
    "UserTradingConfig",
]
