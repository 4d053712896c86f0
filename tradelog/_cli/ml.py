"""``tradelog ml``: training jobs and model versions (admins only).

Changes name the admin making them (``--as ADMIN_ID``, required; recorded in the audit trail):
``start``, ``running``, ``complete``, ``fail``, ``register``, ``activate``, ``deactivate``.
Reads (``jobs``, ``job``, ``models``, ``active``, ``effective``) act as ``--as`` or, without
it, as the system administrator account. A non-admin is refused (exit 4); a move a job's state
does not allow, or a version registered twice, is a conflict (exit 6).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from tradelog._access import ActorLike
from tradelog._cli._common import CommandError, Context, acting_user, emit, positive_int, safe_text
from tradelog._db.models import MLModel, MLTrainingJob
from tradelog.ml import (
    JOB_STATUSES,
    activate,
    active_model,
    complete_job,
    deactivate,
    effective_model,
    fail_job,
    get_job,
    list_jobs,
    list_models,
    mark_running,
    register_model,
    start_job,
)

__all__ = ["register"]

_JOB_COLUMNS = ["id", "status", "model_type", "algorithm", "started_at", "completed_at", "accuracy"]
_MODEL_COLUMNS = ["id", "model_type", "version", "active", "accuracy", "job", "created_at"]


def register(subparsers: Any) -> None:
    """Add the ``ml`` command group."""
    parser = subparsers.add_parser(
        "ml",
        help="ML training jobs and model versions (admins only)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="ml_command", metavar="ACTION", required=True)

    jobs = _command(commands, "jobs", "training jobs, newest first", _jobs)
    jobs.add_argument("--status", choices=JOB_STATUSES)
    jobs.add_argument("--type", dest="model_type", help="only this model type")
    jobs.add_argument("--limit", type=positive_int, default=50)
    job = _command(commands, "job", "one training job with its logs", _job)
    job.add_argument("job_id", type=int, metavar="ID")

    start = _command(commands, "start", "record a training job (pending)", _start, change=True)
    start.add_argument("--type", dest="model_type", required=True, help="e.g. verdict_classifier")
    start.add_argument("--algorithm", required=True, help="e.g. xgboost")
    start.add_argument("--data", required=True, help="training data path")
    running = _command(commands, "running", "pending -> running", _running, change=True)
    running.add_argument("job_id", type=int, metavar="ID")
    complete = _command(commands, "complete", "running -> completed", _complete, change=True)
    complete.add_argument("job_id", type=int, metavar="ID")
    complete.add_argument("--accuracy", type=float, required=True)
    complete.add_argument("--model-path", required=True)
    _logs_option(complete)
    fail = _command(commands, "fail", "running -> failed", _fail, change=True)
    fail.add_argument("job_id", type=int, metavar="ID")
    fail.add_argument("--error", required=True, help="what went wrong")
    _logs_option(fail)

    models = _command(commands, "models", "registered model versions", _models)
    models.add_argument("--type", dest="model_type", help="only this model type")
    reg = _command(
        commands, "register", "register a version from a completed job", _register, change=True
    )
    reg.add_argument("--type", dest="model_type", required=True)
    reg.add_argument("--version", required=True, help="e.g. v1.3")
    reg.add_argument("--path", required=True, help="the model file")
    reg.add_argument("--job", type=int, required=True, metavar="ID", help="its training job")
    reg.add_argument("--accuracy", type=float, help="default: the job's")
    act = _command(
        commands, "activate", "make a version the active one of its type", _activate, change=True
    )
    act.add_argument("--type", dest="model_type", required=True)
    act.add_argument("--version", required=True)
    off = _command(
        commands, "deactivate", "leave a type without an active model", _deactivate, change=True
    )
    off.add_argument("--type", dest="model_type", required=True)
    active = _command(commands, "active", "the active model of a type", _active)
    active.add_argument("--type", dest="model_type", required=True)
    effective = _command(commands, "effective", "the model that applies to a user", _effective)
    effective.add_argument("--user", type=int, required=True)
    effective.add_argument("--type", dest="model_type", required=True)


def _command(
    commands: Any, name: str, text: str, handler: Any, *, change: bool = False
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(name, help=text)
    if change:
        parser.add_argument(
            "--as", dest="actor", type=int, required=True, metavar="ADMIN_ID", help="the admin"
        )
    else:
        parser.add_argument(
            "--as",
            dest="actor",
            type=int,
            metavar="USER_ID",
            help="act as this user (default: the system administrator account)",
        )
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    parser.set_defaults(handler=handler)
    return parser


def _logs_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--logs", metavar="FILE", help="training logs from FILE ('-': standard input)"
    )


def _read_logs(source: str | None) -> str | None:
    if source is None:
        return None
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise CommandError(f"cannot read {source}: {exc.strerror or exc}", exit_code=2) from exc


def _actor(session: Session, args: argparse.Namespace) -> ActorLike:
    return acting_user(session, args.actor)


def _job_row(job: MLTrainingJob, context: Context) -> dict[str, Any]:
    zone = context.settings.zone
    return {
        "id": job.id,
        "status": job.status,
        "model_type": job.model_type,
        "algorithm": job.algorithm,
        "training_data_path": job.training_data_path,
        "started_by": job.started_by,
        "started_at": job.started_at.astimezone(zone),
        "completed_at": job.completed_at.astimezone(zone) if job.completed_at else None,
        "model_path": job.model_path,
        "accuracy": job.accuracy,
        "error_message": job.error_message,
    }


def _model_row(model: MLModel | None, context: Context) -> dict[str, Any]:
    if model is None:
        return {"model_type": None, "version": None, "active": None}
    return {
        "id": model.id,
        "model_type": model.model_type,
        "version": model.version,
        "active": model.is_active,
        "accuracy": model.accuracy,
        "job": model.training_job_id,
        "model_path": model.model_path,
        "created_at": model.created_at.astimezone(context.settings.zone),
        "created_by": model.created_by,
    }


def _run(args: argparse.Namespace, context: Context, work: Any) -> Any:
    """``work(session, actor)`` in one committed transaction; ValueError is a usage error."""
    with context.session() as session:
        try:
            result = work(session, _actor(session, args))
        except ValueError as exc:
            raise CommandError(str(exc), exit_code=2) from exc
        session.commit()
        return result


def _jobs(args: argparse.Namespace, context: Context) -> int:
    found = _run(
        args,
        context,
        lambda s, a: list_jobs(
            s, a, status=args.status, model_type=args.model_type, limit=args.limit
        ),
    )
    emit(context, [_job_row(job, context) for job in found], None if context.json else _JOB_COLUMNS)
    return 0


def _job(args: argparse.Namespace, context: Context) -> int:
    job = _run(args, context, lambda s, a: get_job(s, a, args.job_id))
    row = _job_row(job, context) | {"logs": job.logs}
    if context.json:
        emit(context, [row])
        return 0
    logs = row.pop("logs")
    emit(context, [{"field": k, "value": v} for k, v in row.items()])
    if logs:
        context.out.write("\n" + safe_text(logs.rstrip("\n"), lines=True) + "\n")
    return 0


def _changed_job(args: argparse.Namespace, context: Context, work: Any) -> int:
    job = _run(args, context, work)
    emit(context, [_job_row(job, context)], None if context.json else _JOB_COLUMNS)
    return 0


def _start(args: argparse.Namespace, context: Context) -> int:
    return _changed_job(
        args,
        context,
        lambda s, a: start_job(
            s, a, model_type=args.model_type, algorithm=args.algorithm, training_data_path=args.data
        ),
    )


def _running(args: argparse.Namespace, context: Context) -> int:
    return _changed_job(args, context, lambda s, a: mark_running(s, a, args.job_id))


def _complete(args: argparse.Namespace, context: Context) -> int:
    logs = _read_logs(args.logs)
    return _changed_job(
        args,
        context,
        lambda s, a: complete_job(
            s, a, args.job_id, accuracy=args.accuracy, model_path=args.model_path, logs=logs
        ),
    )


def _fail(args: argparse.Namespace, context: Context) -> int:
    logs = _read_logs(args.logs)
    return _changed_job(
        args,
        context,
        lambda s, a: fail_job(s, a, args.job_id, error_message=args.error, logs=logs),
    )


def _models(args: argparse.Namespace, context: Context) -> int:
    found = _run(args, context, lambda s, a: list_models(s, a, model_type=args.model_type))
    rows = [_model_row(model, context) for model in found]
    emit(context, rows, None if context.json else _MODEL_COLUMNS)
    return 0


def _one_model(args: argparse.Namespace, context: Context, work: Any) -> int:
    model = _run(args, context, work)
    emit(
        context,
        [_model_row(model, context)],
        None if context.json or model is None else _MODEL_COLUMNS,
    )
    return 0


def _register(args: argparse.Namespace, context: Context) -> int:
    return _one_model(
        args,
        context,
        lambda s, a: register_model(
            s,
            a,
            model_type=args.model_type,
            version=args.version,
            model_path=args.path,
            training_job_id=args.job,
            accuracy=args.accuracy,
        ),
    )


def _activate(args: argparse.Namespace, context: Context) -> int:
    return _one_model(args, context, lambda s, a: activate(s, a, args.model_type, args.version))


def _deactivate(args: argparse.Namespace, context: Context) -> int:
    return _one_model(args, context, lambda s, a: deactivate(s, a, args.model_type))


def _active(args: argparse.Namespace, context: Context) -> int:
    return _one_model(args, context, lambda s, a: active_model(s, a, args.model_type))


def _effective(args: argparse.Namespace, context: Context) -> int:
    return _one_model(args, context, lambda s, a: effective_model(s, a, args.user, args.model_type))
