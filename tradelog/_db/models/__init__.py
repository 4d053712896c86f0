"""Every tradelog table, importable from one place."""

from tradelog._db.models.audit import AuditLog
from tradelog._db.models.batches import WriteBatch
from tradelog._db.models.config import UserTradingConfig
from tradelog._db.models.errors import ErrorGroup, ErrorLog
from tradelog._db.models.logs import ServiceLog
from tradelog._db.models.ml import MLModel, MLTrainingJob
from tradelog._db.models.notifications import Notification, UserNotificationPreferences
from tradelog._db.models.outbox import NotificationDelivery, NotificationRateLimit
from tradelog._db.models.service import ServiceStaleEpisode, ServiceStatus, ServiceTaskExecution
from tradelog._db.models.users import Activity, Order, User

__all__ = [
    "Activity",
    "AuditLog",
    "ErrorGroup",
    "ErrorLog",
    "MLModel",
    "MLTrainingJob",
    "Notification",
    "NotificationDelivery",
    "NotificationRateLimit",
    "Order",
    "ServiceLog",
    "ServiceStaleEpisode",
    "ServiceStatus",
    "ServiceTaskExecution",
    "User",
    "UserNotificationPreferences",
    "UserTradingConfig",
    "WriteBatch",
]
