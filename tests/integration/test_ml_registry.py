"""The ML registry: job transitions, logs, registration, atomic activation (also under
concurrency on PostgreSQL), effective models, audit rows and the CLI."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from tests.support.db import MigratedDatabase
from tradelog import ml
from tradelog._cli import main
from tradelog.exceptions import ConflictError, NotFound, PermissionDenied
from tradelog.trading_config import update_config

KIND = "verdict_classifier"


def completed_job(session: Session, admin: int, *, kind: str = KIND, accuracy: float = 0.8) -> int:
    job = ml.start_job(
        session, admin, model_type=kind, algorithm="xgboost", training_data_path="data/2026-01"
    )
    ml.mark_running(session, admin, job.id)
    ml.complete_job(session, admin, job.id, accuracy=accuracy, model_path=f"models/{job.id}.pkl")
    return job.id


def registered(db: MigratedDatabase, admin: int, *versions: str) -> None:
    with db.session() as session:
        for version in versions:
            job = completed_job(session, admin)
            ml.register_model(
                session,
                admin,
                model_type=KIND,
                version=version,
                model_path=f"models/{version}.pkl",
                training_job_id=job,
            )
        session.commit()


def active_versions(db: MigratedDatabase) -> list[str]:
    return [
        str(r["version"])
        for r in db.rows("SELECT version FROM ml_models WHERE is_active ORDER BY version")
    ]


def test_a_job_moves_only_forward(db: MigratedDatabase, users: dict[str, int]) -> None:
    """pending -> running -> completed | failed; anything else is a conflict naming the
    state; long logs keep their tail; long error messages are cut."""
    admin = users["admin"]
    with db.session() as session:
        job = ml.start_job(
            session, admin, model_type=KIND, algorithm="random_forest", training_data_path="d"
        )
        assert job.status == "pending"
        with pytest.raises(ConflictError, match="is pending: only a running job"):
            ml.complete_job(session, admin, job.id, accuracy=0.9, model_path="m")
        ml.mark_running(session, admin, job.id)
        with pytest.raises(ConflictError, match="is running: only a pending job"):
            ml.mark_running(session, admin, job.id)
        logs = "".join(f"epoch {i}: loss {1 / (i + 1):.5f}\n" for i in range(2000)) + "done\n"
        assert len(logs) > 16_384
        done = ml.complete_job(session, admin, job.id, accuracy=0.83, model_path="m/v1", logs=logs)
        assert (done.status, done.accuracy, done.model_path) == ("completed", 0.83, "m/v1")
        assert done.completed_at is not None
        assert done.logs is not None
        assert len(done.logs) == 16_384
        assert done.logs.endswith("epoch 1999: loss 0.00050\ndone\n")
        assert done.logs.startswith("[… ")
        for move in (
            lambda: ml.fail_job(session, admin, job.id, error_message="late"),
            lambda: ml.complete_job(session, admin, job.id, accuracy=0.9, model_path="m"),
        ):
            with pytest.raises(ConflictError, match="is completed"):
                move()
        other = ml.start_job(session, admin, model_type=KIND, algorithm="x", training_data_path="d")
        ml.mark_running(session, admin, other.id)
        failed = ml.fail_job(session, admin, other.id, error_message="OOM " * 600)
        assert failed.status == "failed"
        assert failed.error_message is not None
        assert len(failed.error_message) == 1024
        with pytest.raises(NotFound):
            ml.mark_running(session, admin, 99999)
        with pytest.raises(ValueError, match="accuracy"):
            ml.complete_job(session, admin, other.id, accuracy=float("nan"), model_path="m")
        with pytest.raises(ValueError, match="model_type"):
            ml.start_job(session, admin, model_type="", algorithm="x", training_data_path="d")
        session.commit()
        assert [j.status for j in ml.list_jobs(session, admin)] == ["failed", "completed"]
        assert [j.id for j in ml.list_jobs(session, admin, status="failed")] == [other.id]


def test_only_admins(db: MigratedDatabase, users: dict[str, int]) -> None:
    """Every registry call refuses a non-admin; the effective model is the user's own too."""
    alice = users["alice"]
    with db.session() as session:
        for call in (
            lambda: ml.start_job(
                session, alice, model_type=KIND, algorithm="x", training_data_path="d"
            ),
            lambda: ml.list_jobs(session, alice),
            lambda: ml.list_models(session, alice),
            lambda: ml.active_model(session, alice, KIND),
            lambda: ml.activate(session, alice, KIND, "v1"),
            lambda: ml.effective_model(session, alice, users["bob"], KIND),
        ):
            with pytest.raises(PermissionDenied):
                call()
        assert ml.effective_model(session, alice, alice, KIND) is None


def test_registration(db: MigratedDatabase, users: dict[str, int]) -> None:
    """From a completed job of the same type; a type and version twice is a conflict (also a
    second process's); the accuracy defaults to the job's."""
    admin = users["admin"]
    with db.session() as session:
        job = completed_job(session, admin, accuracy=0.77)
        model = ml.register_model(
            session, admin, model_type=KIND, version="v1.0", model_path="m", training_job_id=job
        )
        assert (model.accuracy, model.is_active) == (0.77, False)
        with pytest.raises(ConflictError, match=r"v1\.0 is already registered"):
            ml.register_model(
                session, admin, model_type=KIND, version="v1.0", model_path="m", training_job_id=job
            )
        session.commit()
        pending = ml.start_job(
            session, admin, model_type=KIND, algorithm="x", training_data_path="d"
        )
        with pytest.raises(ConflictError, match="not completed"):
            ml.register_model(
                session,
                admin,
                model_type=KIND,
                version="v2.0",
                model_path="m",
                training_job_id=pending.id,
            )
        with pytest.raises(ValueError, match="trained a verdict_classifier"):
            ml.register_model(
                session,
                admin,
                model_type="price_regressor",
                version="v2.0",
                model_path="m",
                training_job_id=job,
            )
        with pytest.raises(NotFound):
            ml.register_model(
                session, admin, model_type=KIND, version="v2", model_path="m", training_job_id=999
            )
        with pytest.raises(ValueError, match="at most 16"):
            ml.register_model(
                session,
                admin,
                model_type=KIND,
                version="v" * 17,
                model_path="m",
                training_job_id=job,
            )
        session.commit()
    # a registration racing past the check: the database decides, still a ConflictError,
    # and the loser's transaction stays usable
    outcome: list[BaseException] = []
    with db.session() as first:
        job = completed_job(first, admin)
        first.commit()
        ml.register_model(
            first, admin, model_type=KIND, version="v9", model_path="m", training_job_id=job
        )

        def racer() -> None:
            with db.session() as second:
                try:
                    ml.register_model(
                        second,
                        admin,
                        model_type=KIND,
                        version="v9",
                        model_path="m",
                        training_job_id=job,
                    )
                except ConflictError as exc:
                    outcome.append(exc)
                ml.start_job(second, admin, model_type=KIND, algorithm="x", training_data_path="d")
                second.commit()

        thread = threading.Thread(target=racer)
        thread.start()
        time.sleep(0.3)
        first.commit()
        thread.join()
    assert [str(e) for e in outcome] == [f"{KIND} v9 is already registered"]
    assert db.scalar("SELECT count(*) FROM ml_models") == 2


def test_activation_replaces_the_active_version(
    db: MigratedDatabase, users: dict[str, int]
) -> None:
    """Activating a version deactivates the previous one in the same transaction; activating
    the active one changes nothing; each change is audited."""
    admin = users["admin"]
    registered(db, admin, "v1", "v2")
    with db.session() as session:
        assert ml.activate(session, admin, KIND, "v1").is_active
        session.commit()
        assert ml.activate(session, admin, KIND, "v2").version == "v2"
        session.commit()
        assert ml.activate(session, admin, KIND, "v2").is_active
        session.commit()
        active = ml.active_model(session, admin, KIND)
        assert active is not None
        assert active.version == "v2"
        with pytest.raises(NotFound):
            ml.activate(session, admin, KIND, "v7")
        assert ml.active_model(session, admin, "price_regressor") is None
    assert active_versions(db) == ["v2"]
    audit = db.rows(
        "SELECT a.action, m.version, a.changes FROM audit_logs a JOIN ml_models m "
        "ON m.id = a.resource_id WHERE a.resource_type = 'ml_model' AND a.action != 'create' "
        "ORDER BY a.id"
    )
    assert [(a["action"], a["version"]) for a in audit] == [
        ("activate", "v1"),
        ("deactivate", "v1"),
        ("activate", "v2"),
    ]
    changes = audit[0]["changes"]
    assert (json.loads(changes) if isinstance(changes, str) else changes) == {
        "is_active": {"before": False, "after": True}
    }
    with db.session() as session:
        assert ml.deactivate(session, admin, KIND) is not None
        assert ml.deactivate(session, admin, KIND) is None
        session.commit()
    assert active_versions(db) == []


@pytest.mark.parametrize("backend", ["postgresql"])
def test_concurrent_activations_leave_exactly_one_active(
    db: MigratedDatabase, users: dict[str, int]
) -> None:
    """Two sessions activating different versions at the same moment, 25 times over: each
    commits, none trips the one-active index, and exactly one version is active after each
    round."""
    admin = users["admin"]
    registered(db, admin, "v1", "v2", "v3")
    errors: list[BaseException] = []
    for round_ in range(25):
        start = threading.Barrier(2)
        versions = ("v1", "v2") if round_ % 2 else ("v2", "v3")

        def activate(version: str, start: threading.Barrier = start) -> None:
            try:
                with db.session() as session:
                    start.wait()
                    ml.activate(session, admin, KIND, version)
                    session.commit()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=activate, args=(v,)) for v in versions]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(active_versions(db)) == 1
        assert active_versions(db)[0] in versions


def test_effective_model(db: MigratedDatabase, users: dict[str, int]) -> None:
    """The pinned version when the trading config names one, else the active one."""
    admin, alice = users["admin"], users["alice"]
    registered(db, admin, "v1.0", "v1.1")
    with db.session() as session:
        assert ml.effective_model(session, alice, alice, KIND) is None
        ml.activate(session, admin, KIND, "v1.1")
        session.commit()
        model = ml.effective_model(session, alice, alice, KIND)
        assert model is not None
        assert model.version == "v1.1"
        update_config(session, alice, alice, ml_model_version="v1.0")
        session.commit()
        pinned = ml.effective_model(session, admin, alice, KIND)
        assert pinned is not None
        assert pinned.version == "v1.0"
        update_config(session, alice, alice, ml_model_version="v0.9")
        session.commit()
        with pytest.raises(NotFound, match=r"pins ml_model_version 'v0\.9'"):
            ml.effective_model(session, alice, alice, KIND)


def test_cli(
    db: MigratedDatabase,
    users: dict[str, int],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The whole path from the command line; a non-admin gets exit 4, a conflict exit 6."""
    admin, alice = str(users["admin"]), str(users["alice"])

    def run(*args: str) -> Any:
        code = main(["--database-url", db.url, "--json", "ml", *args])
        out = capsys.readouterr().out
        return code, json.loads(out) if code == 0 and out.strip() else None

    code, [job] = run(
        "start", "--type", KIND, "--algorithm", "xgboost", "--data", "d", "--as", admin
    )
    assert (code, job["status"]) == (0, "pending")
    assert run("start", "--type", KIND, "--algorithm", "x", "--data", "d", "--as", alice)[0] == 4
    assert (
        run("complete", str(job["id"]), "--accuracy", "0.8", "--model-path", "m", "--as", admin)[0]
        == 6
    )
    assert run("running", str(job["id"]), "--as", admin)[0] == 0
    logs = tmp_path / "train.log"
    logs.write_text("x" * 20_000 + "finished\n")
    code, [done] = run(
        "complete",
        str(job["id"]),
        "--accuracy",
        "0.8",
        "--model-path",
        "m",
        "--logs",
        str(logs),
        "--as",
        admin,
    )
    assert done["status"] == "completed"
    code, [shown] = run("job", str(job["id"]))
    assert shown["logs"].endswith("finished\n")
    assert len(shown["logs"]) == 16_384
    args = (
        "--type",
        KIND,
        "--version",
        "v1",
        "--path",
        "m",
        "--job",
        str(job["id"]),
        "--as",
        admin,
    )
    assert run("register", *args)[0] == 0
    assert run("register", *args)[0] == 6
    assert run("activate", "--type", KIND, "--version", "v1", "--as", admin)[0] == 0
    code, [active] = run("active", "--type", KIND)
    assert (active["version"], active["active"]) == ("v1", True)
    code, [effective] = run("effective", "--user", alice, "--type", KIND, "--as", alice)
    assert effective["version"] == "v1"
    assert run("models", "--as", alice)[0] == 4
    code, models = run("models")
    assert [m["version"] for m in models] == ["v1"]
    code, jobs = run("jobs", "--status", "completed")
    assert [j["id"] for j in jobs] == [job["id"]]
    assert db.scalar("SELECT count(*) FROM audit_logs WHERE resource_type LIKE 'ml_%'") == 5


def test_two_processes_finishing_one_job(db: MigratedDatabase, users: dict[str, int]) -> None:
    """Completing and failing the same running job at once: exactly one wins, the other gets a
    conflict, and the job holds the winner's outcome."""
    admin = users["admin"]
    with db.session() as session:
        job = ml.start_job(session, admin, model_type=KIND, algorithm="x", training_data_path="d")
        ml.mark_running(session, admin, job.id)
        session.commit()
        job_id = job.id
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def finish(how: str) -> None:
        with db.session() as session:
            start.wait()
            try:
                if how == "complete":
                    ml.complete_job(session, admin, job_id, accuracy=0.7, model_path="m")
                else:
                    ml.fail_job(session, admin, job_id, error_message="killed")
                session.commit()
                outcomes.append(how)
            except ConflictError:
                session.rollback()
                outcomes.append("conflict")

    threads = [threading.Thread(target=finish, args=(how,)) for how in ("complete", "fail")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) in (["complete", "conflict"], ["conflict", "fail"])
    winner = next(o for o in outcomes if o != "conflict")
    status = db.scalar("SELECT status FROM ml_training_jobs WHERE id = :i", i=job_id)
    assert status == {"complete": "completed", "fail": "failed"}[winner]
    audited = db.scalar(
        "SELECT count(*) FROM audit_logs WHERE resource_type = 'ml_training_job' "
        "AND action IN ('complete', 'fail')"
    )
    assert audited == 1
