"""The ML registry: training jobs, model versions, the active model per type (admins only).

Training jobs (``ml_training_jobs``) move only forward::

    pending ──mark_running──> running ──complete_job──> completed
                                  └─────fail_job─────> failed

Any other move raises :class:`~tradelog.exceptions.ConflictError` naming the job's state; the
move is one guarded ``UPDATE ... WHERE status = <expected>``, so two processes racing to finish
the same job cannot both succeed. Training logs longer than the column's 16,384 characters keep
their tail (the end of a log says how training ended) behind a marker.

Model versions (``ml_models``) are registered from a completed job; a second registration of
the same type and version is a :class:`ConflictError` (the database's unique constraint
decides between racing registrations). :func:`activate` makes one version the active model of
its type and deactivates the previous one in the same transaction; on PostgreSQL it first
locks the type's rows (``SELECT ... FOR UPDATE``), so concurrent activations run one after the
other and leave exactly one active model - the last one to commit - instead of tripping the
one-active-per-type index. A user's *effective* model is the version their trading config pins
(``ml_model_version``) or, when it pins none, the active one (:func:`effective_model`).

Every change adds an ``audit_logs`` row (resource ``ml_training_job`` or ``ml_model``) with the
before/after of the changed fields; long logs are audited by their length. Functions add to the
caller's session and flush; the caller commits::

    with tradelog.session() as s:
        job = tradelog.ml.start_job(s, admin, model_type="verdict_classifier",
                                    algorithm="xgboost", training_data_path="s3://ml/2026-01")
        tradelog.ml.mark_running(s, admin, job.id)
        tradelog.ml.complete_job(s, admin, job.id, accuracy=0.81, model_path="models/v1.3.pkl")
        tradelog.ml.register_model(s, admin, model_type="verdict_classifier", version="v1.3",
                                   model_path="models/v1.3.pkl", training_job_id=job.id)
        tradelog.ml.activate(s, admin, "verdict_classifier", "v1.3")
        s.commit()
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tradelog._access import Actor, ActorLike, require_admin, resolve_actor
from tradelog._db.base import utcnow
from tradelog._db.models import MLModel, MLTrainingJob, UserTradingConfig
from tradelog._errors.record import truncate_message
from tradelog.audit import diff, record_audit
from tradelog.exceptions import ConflictError, NotFound, PermissionDenied

__all__ = [
    "JOB_STATUSES",
    "LOGS_LENGTH",
    "activate",
    "active_model",
    "complete_job",
    "deactivate",
    "effective_model",
    "fail_job",
    "get_job",
    "keep_tail",
    "list_jobs",
    "list_models",
    "mark_running",
    "register_model",
    "start_job",
]

JOB_STATUSES: Final = ("pending", "running", "completed", "failed")
LOGS_LENGTH: Final = 16_384
_LIMITS: Final = {
    "model_type": 64,
    "algorithm": 32,
    "training_data_path": 512,
    "model_path": 512,
    "version": 16,
}
_JOB_FIELDS: Final = (
    "status",
    "model_type",
    "algorithm",
    "training_data_path",
    "started_at",
    "completed_at",
    "model_path",
    "accuracy",
    "error_message",
    "logs",
)


def _admin(session: Session, actor: ActorLike, what: str) -> Actor:
    who = resolve_actor(session, actor)
    require_admin(who, what)
    return who


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be non-empty text, got {value!r}")
    text = value.strip()
    if len(text) > _LIMITS[name]:
        raise ValueError(f"{name} must be at most {_LIMITS[name]} characters, got {len(text)}")
    return text


def _accuracy(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"accuracy must be a finite number, got {value!r}")
    return float(value)


def keep_tail(logs: str, limit: int = LOGS_LENGTH) -> str:
    """``logs`` within ``limit`` characters: a longer text keeps its end behind a marker."""
    if len(logs) <= limit:
        return logs
    marker = f"[… {len(logs) - limit} characters dropped; the end of the log follows]\n"
    tail = logs[-(limit - len(marker)) :]
    return marker + tail


def _job_state(job: MLTrainingJob) -> dict[str, Any]:
    state = {name: getattr(job, name) for name in _JOB_FIELDS}
    if state["logs"] is not None:
        state["logs"] = f"[{len(state['logs'])} characters]"
    return state


def _audit(
    session: Session,
    who: Actor,
    action: str,
    *,
    resource: str,
    resource_id: int,
    changes: dict[str, Any],
) -> None:
    if changes:
        record_audit(
            session,
            user_id=who.id,
            action=action,
            resource_type=resource,
            resource_id=resource_id,
            changes=changes,
        )


# --------------------------------------------------------------------------- training jobs


def start_job(
    session: Session,
    admin: ActorLike,
    *,
    model_type: str,
    algorithm: str,
    training_data_path: str,
    now: datetime | None = None,
) -> MLTrainingJob:
    """Record a training job (``pending``) started by ``admin``; audited as ``create``."""
    who = _admin(session, admin, "start training jobs")
    job = MLTrainingJob(
        started_by=who.id,
        status="pending",
        model_type=_text("model_type", model_type),
        algorithm=_text("algorithm", algorithm),
        training_data_path=_text("training_data_path", training_data_path),
        started_at=now or utcnow(),
    )
    session.add(job)
    session.flush()
    after = _job_state(job)
    _audit(
        session,
        who,
        "create",
        resource="ml_training_job",
        resource_id=job.id,
        changes=diff(dict.fromkeys(after), after),
    )
    session.flush()
    return job


def get_job(session: Session, admin: ActorLike, job_id: int) -> MLTrainingJob:
    """One training job; :class:`NotFound` when there is none."""
    _admin(session, admin, "read training jobs")
    job = session.get(MLTrainingJob, job_id)
    if job is None:
        raise NotFound(f"no training job with id {job_id}")
    return job


def list_jobs(
    session: Session,
    admin: ActorLike,
    *,
    status: str | None = None,
    model_type: str | None = None,
    limit: int = 50,
) -> Sequence[MLTrainingJob]:
    """Training jobs, newest first, optionally of one status and model type."""
    _admin(session, admin, "read training jobs")
    if status is not None and status not in JOB_STATUSES:
        raise ValueError(f"status must be one of {', '.join(JOB_STATUSES)}, got {status!r}")
    query = select(MLTrainingJob)
    if status is not None:
        query = query.where(MLTrainingJob.status == status)
    if model_type is not None:
        query = query.where(MLTrainingJob.model_type == model_type)
    query = query.order_by(MLTrainingJob.started_at.desc(), MLTrainingJob.id.desc())
    return session.scalars(query.limit(max(1, min(int(limit), 1000)))).all()


def _move(
    session: Session,
    who: Actor,
    job_id: int,
    *,
    expected: str,
    action: str,
    values: dict[str, Any],
) -> MLTrainingJob:
    """Move job ``job_id`` out of ``expected`` with ``values``, atomically, or raise."""
    job = session.get(MLTrainingJob, job_id, populate_existing=True)
    if job is None:
        raise NotFound(f"no training job with id {job_id}")
    before = _job_state(job)
    moved = session.execute(
        update(MLTrainingJob)
        .where(MLTrainingJob.id == job_id, MLTrainingJob.status == expected)
        .values(**values)
        .returning(MLTrainingJob.id)
        .execution_options(synchronize_session=False)
    ).first()
    session.refresh(job)
    if moved is None:
        raise ConflictError(
            f"training job {job_id} is {job.status}: only a {expected} job can be "
            f"{'marked running' if action == 'start' else action + 'd'}"
        )
    changes = diff(before, _job_state(job))
    _audit(session, who, action, resource="ml_training_job", resource_id=job_id, changes=changes)
    session.flush()
    return job


def mark_running(session: Session, admin: ActorLike, job_id: int) -> MLTrainingJob:
    """``pending`` → ``running``."""
    who = _admin(session, admin, "run training jobs")
    return _move(
        session, who, job_id, expected="pending", action="start", values={"status": "running"}
    )


def complete_job(
    session: Session,
    admin: ActorLike,
    job_id: int,
    *,
    accuracy: float,
    model_path: str,
    logs: str | None = None,
    now: datetime | None = None,
) -> MLTrainingJob:
    """``running`` → ``completed`` with the accuracy, the model's path and the logs (their
    last 16,384 characters)."""
    who = _admin(session, admin, "complete training jobs")
    values: dict[str, Any] = {
        "status": "completed",
        "completed_at": now or utcnow(),
        "accuracy": _accuracy(accuracy),
        "model_path": _text("model_path", model_path),
    }
    if logs is not None:
        values["logs"] = keep_tail(logs)
    return _move(session, who, job_id, expected="running", action="complete", values=values)


def fail_job(
    session: Session,
    admin: ActorLike,
    job_id: int,
    *,
    error_message: str,
    logs: str | None = None,
    now: datetime | None = None,
) -> MLTrainingJob:
    """``running`` → ``failed`` with the error message (1,024 characters at most) and logs."""
    who = _admin(session, admin, "fail training jobs")
    if not isinstance(error_message, str) or not error_message.strip():
        raise ValueError("error_message must be non-empty text")
    values: dict[str, Any] = {
        "status": "failed",
        "completed_at": now or utcnow(),
        "error_message": truncate_message(error_message.strip()),
    }
    if logs is not None:
        values["logs"] = keep_tail(logs)
    return _move(session, who, job_id, expected="running", action="fail", values=values)


# --------------------------------------------------------------------------- models


def _model_state(model: MLModel) -> dict[str, Any]:
    names = ("model_type", "version", "model_path", "accuracy", "training_job_id", "is_active")
    return {name: getattr(model, name) for name in names}


def register_model(
    session: Session,
    admin: ActorLike,
    *,
    model_type: str,
    version: str,
    model_path: str,
    training_job_id: int,
    accuracy: float | None = None,
) -> MLModel:
    """Register a version (inactive) from a completed job of the same model type.

    ``accuracy`` defaults to the job's. :class:`ConflictError` for a type and version already
    registered or a job that has not completed; :class:`NotFound` for an unknown job.
    """
    who = _admin(session, admin, "register models")
    kind, name = _text("model_type", model_type), _text("version", version)
    job = session.get(MLTrainingJob, training_job_id)
    if job is None:
        raise NotFound(f"no training job with id {training_job_id}")
    if job.status != "completed":
        raise ConflictError(f"training job {training_job_id} is {job.status}, not completed")
    if job.model_type != kind:
        raise ValueError(f"training job {training_job_id} trained a {job.model_type}, not {kind}")
    duplicate = ConflictError(f"{kind} {name} is already registered")
    if _find(session, kind, name) is not None:
        raise duplicate
    model = MLModel(
        model_type=kind,
        version=name,
        model_path=_text("model_path", model_path),
        accuracy=_accuracy(accuracy) if accuracy is not None else job.accuracy,
        training_job_id=job.id,
        is_active=False,
        created_by=who.id,
    )
    try:
        with session.begin_nested():
            session.add(model)
    except IntegrityError:  # registered by someone else since the check above
        raise duplicate from None
    after = _model_state(model)
    changes = diff(dict.fromkeys(after), after)
    _audit(session, who, "create", resource="ml_model", resource_id=model.id, changes=changes)
    session.flush()
    return model


def _find(session: Session, model_type: str, version: str) -> MLModel | None:
    query = select(MLModel).where(MLModel.model_type == model_type, MLModel.version == version)
    return session.scalars(query.execution_options(populate_existing=True)).first()


def _lock_type(session: Session, model_type: str) -> None:
    """On PostgreSQL, serialise activations of one type (SQLite serialises every writer)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            select(MLModel.id)
            .where(MLModel.model_type == model_type)
            .order_by(MLModel.id)
            .with_for_update()
        )


def activate(session: Session, admin: ActorLike, model_type: str, version: str) -> MLModel:
    """Make ``version`` the active ``model_type`` model, deactivating the previous one in the
    same transaction (see the module docstring). Activating the active version changes
    nothing. :class:`NotFound` for an unregistered version; audited per changed model."""
    who = _admin(session, admin, "activate models")
    if _find(session, model_type, version) is None:
        raise NotFound(f"no {model_type} model {version!r} is registered")
    _lock_type(session, model_type)
    target = _find(session, model_type, version)
    if target is None:  # pragma: no cover - models are never deleted
        raise NotFound(f"no {model_type} model {version!r} is registered")
    if target.is_active:
        return target
    replaced = session.execute(
        update(MLModel)
        .where(MLModel.model_type == model_type, MLModel.is_active.is_(True))
        .values(is_active=False)
        .returning(MLModel.id)
        .execution_options(synchronize_session=False)
    ).all()
    session.execute(
        update(MLModel)
        .where(MLModel.id == target.id)
        .values(is_active=True)
        .execution_options(synchronize_session=False)
    )
    for (old,) in replaced:
        change = {"is_active": {"before": True, "after": False}}
        _audit(session, who, "deactivate", resource="ml_model", resource_id=old, changes=change)
    change = {"is_active": {"before": False, "after": True}}
    _audit(session, who, "activate", resource="ml_model", resource_id=target.id, changes=change)
    session.flush()
    session.refresh(target)
    return target


def deactivate(session: Session, admin: ActorLike, model_type: str) -> MLModel | None:
    """Leave ``model_type`` without an active model; returns the one deactivated (or None)."""
    who = _admin(session, admin, "deactivate models")
    _lock_type(session, model_type)
    current = _active(session, model_type)
    if current is None:
        return None
    current.is_active = False
    change = {"is_active": {"before": True, "after": False}}
    _audit(session, who, "deactivate", resource="ml_model", resource_id=current.id, changes=change)
    session.flush()
    return current


def _active(session: Session, model_type: str) -> MLModel | None:
    query = select(MLModel).where(MLModel.model_type == model_type, MLModel.is_active.is_(True))
    return session.scalars(query.execution_options(populate_existing=True)).first()


def active_model(session: Session, admin: ActorLike, model_type: str) -> MLModel | None:
    """The active ``model_type`` model, or None."""
    _admin(session, admin, "read models")
    return _active(session, model_type)


def list_models(
    session: Session, admin: ActorLike, *, model_type: str | None = None
) -> Sequence[MLModel]:
    """Registered models by type, newest first."""
    _admin(session, admin, "read models")
    query = select(MLModel)
    if model_type is not None:
        query = query.where(MLModel.model_type == model_type)
    return session.scalars(
        query.order_by(MLModel.model_type, MLModel.created_at.desc(), MLModel.id.desc())
    ).all()


def effective_model(
    session: Session, actor: ActorLike, user_id: int, model_type: str
) -> MLModel | None:
    """The ``model_type`` model that applies to ``user_id``: the version their trading config
    pins (``ml_model_version``), else the active one (None when there is none).

    The user themself or an admin may ask (:class:`PermissionDenied` otherwise);
    :class:`NotFound` when the pinned version is not registered for ``model_type``.
    """
    who = resolve_actor(session, actor)
    if not who.is_admin and who.id != user_id:
        raise PermissionDenied(f"user {who.id} may not read the ML model of user {user_id}")
    pinned = session.scalar(
        select(UserTradingConfig.ml_model_version).where(UserTradingConfig.user_id == user_id)
    )
    if pinned is None:
        return _active(session, model_type)
    model = _find(session, model_type, pinned)
    if model is None:
        raise NotFound(
            f"user {user_id}'s trading config pins ml_model_version {pinned!r}, "
            f"which is not a registered {model_type} model"
        )
    return model
