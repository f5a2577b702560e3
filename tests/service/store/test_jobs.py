"""The job store on SQLite and on PostgreSQL: migrations, and the status state machine."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text

from service.errors import InvalidTransitionError, NotFoundError
from service.store.db import MIGRATIONS_DIR, Database
from service.store.jobs import FINAL, TRANSITIONS, JobsRepo, JobStatus, sources
from service.store.models import DEFAULT_TEAM_ID, Artifact, Job, Model
from service.store.records import ArtifactRecord


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path}/jobs.db")
    else:
        database = Database(request.getfixturevalue("postgres_url"))
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def repo(db: Database) -> JobsRepo:
    return JobsRepo(db)


def new_job(
    db: Database, status: JobStatus = JobStatus.QUEUED, task_id: str | None = None
) -> str:
    with db.session() as session:
        model = Model(team_id=DEFAULT_TEAM_ID, sha256=uuid.uuid4().hex * 2, size_bytes=10,
                      format="onnx", n_tensors=1, n_params=4, tensors=[],
                      storage_key="blobs/x.onnx")
        session.add(model)
        session.flush()
        job = Job(team_id=DEFAULT_TEAM_ID, kind="quantize", status=status.value, progress=0.0,
                  attempts=0, model_id=model.id, spec={"bits": 4}, task_id=task_id)
        session.add(job)
        session.commit()
        return job.id


def artifact(name: str, sha: str = "0" * 64) -> ArtifactRecord:
    return ArtifactRecord(name=name, size_bytes=3, sha256=sha, media_type="application/json",
                          storage_key=f"jobs/j/artifacts/{name}")


def test_migrations_from_empty_reach_head(db: Database) -> None:
    tables = set(inspect(db.engine).get_table_names())
    assert {"teams", "api_keys", "models", "datasets", "jobs", "artifacts", "leases"} <= tables
    with db.engine.connect() as conn:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        teams = conn.execute(text("SELECT id FROM teams")).scalars().all()
    assert DEFAULT_TEAM_ID in teams
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert version == ScriptDirectory.from_config(config).get_current_head()
    db.migrate()  # running again changes nothing


def test_transition_table_matches_docstring() -> None:
    doc = JobStatus.__doc__ or ""
    listed = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    for a, b in listed:
        assert f"{a.value} → {b.value}" in doc
    assert {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED} == FINAL
    assert set(sources(JobStatus.RUNNING)) == {JobStatus.QUEUED}


def test_claim_then_succeed(repo: JobsRepo, db: Database) -> None:
    job_id = new_job(db)
    claimed = repo.claim(job_id)
    assert claimed is not None and claimed.attempts == 1
    assert claimed.model_key == "blobs/x.onnx" and claimed.model_suffix == ".onnx"
    assert claimed.spec == {"bits": 4}
    assert repo.set_progress(job_id, "quantizing", 1.7, attempt=1)
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == "running" and job.progress == 1.0
        assert job.stage == "quantizing" and job.started_at is not None
    assert repo.succeed(job_id, {"summary": {"bits_per_weight": 4.0}}, [artifact("a.json")],
                        attempt=1)
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == "succeeded"
        assert job.summary == {"bits_per_weight": 4.0} and job.duration_s is not None
    assert repo.claim(job_id) is None  # a redelivered task of a finished job does nothing
    assert not repo.set_progress(job_id, "writing", 0.5, attempt=1)


def test_redelivery_reruns_and_leaves_one_set_of_artifacts(repo: JobsRepo, db: Database) -> None:
    job_id = new_job(db)
    assert repo.claim(job_id) is not None
    # the first worker died after recording nothing; the broker redelivers the task
    again = repo.claim(job_id)
    assert again is not None and again.attempts == 2
    assert repo.succeed(job_id, {"summary": {}}, [artifact("model.onnx"), artifact("r.json")],
                        attempt=2)
    with db.session() as session:
        names = session.scalars(select(Artifact.name).where(Artifact.job_id == job_id)).all()
    assert sorted(names) == ["model.onnx", "r.json"]


def test_succeed_replaces_artifacts_of_an_earlier_attempt(repo: JobsRepo, db: Database) -> None:
    job_id = new_job(db)
    repo.claim(job_id)
    with db.session() as session:  # a partial record left by a dead attempt
        session.add(Artifact(job_id=job_id, name="model.onnx", size_bytes=1, sha256="1" * 64,
                             media_type="x", storage_key="k"))
        session.commit()
    assert repo.succeed(job_id, {}, [artifact("model.onnx", "2" * 64)], attempt=1)
    with db.session() as session:
        rows = session.scalars(select(Artifact).where(Artifact.job_id == job_id)).all()
    assert [(a.name, a.sha256) for a in rows] == [("model.onnx", "2" * 64)]


def test_fail_records_code_and_message(repo: JobsRepo, db: Database) -> None:
    job_id = new_job(db)
    repo.claim(job_id)
    assert repo.fail(job_id, "invalid_model", "the file is truncated")
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert (job.status, job.error_code, job.error_message) == (
            "failed", "invalid_model", "the file is truncated")
    assert not repo.fail(job_id, "other", "again")  # final: unchanged
    assert not repo.succeed(job_id, {}, [], attempt=1)


def test_cancel_queued_and_running(repo: JobsRepo, db: Database) -> None:
    queued = new_job(db, task_id="task-1")  # the task id is written with the row
    assert repo.cancel(queued) == "task-1"
    assert repo.is_cancelled(queued)
    assert repo.claim(queued) is None  # the worker finds it cancelled and does nothing

    running = new_job(db)
    repo.claim(running)
    repo.cancel(running)
    assert not repo.set_progress(running, "quantizing", 0.5, attempt=1)  # the worker stops
    assert not repo.succeed(running, {}, [artifact("x")], attempt=1)
    assert repo.status(running) is JobStatus.CANCELLED


def test_cancel_finished_job_is_a_conflict(repo: JobsRepo, db: Database) -> None:
    job_id = new_job(db)
    repo.claim(job_id)
    repo.succeed(job_id, {}, [], attempt=1)
    with pytest.raises(InvalidTransitionError, match="is succeeded") as err:
        repo.cancel(job_id)
    assert err.value.status_code == 409
    with pytest.raises(NotFoundError):
        repo.cancel("no-such-job")


def test_requeue_only_from_running(repo: JobsRepo, db: Database) -> None:
    job_id = new_job(db)
    assert not repo.requeue(job_id)
    repo.claim(job_id)
    assert repo.requeue(job_id)
    assert repo.status(job_id) is JobStatus.QUEUED


def test_racing_finishers_only_one_wins(repo: JobsRepo, db: Database) -> None:
    job_id = new_job(db)
    repo.claim(job_id)
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def finish(i: int) -> None:
        barrier.wait()
        if i % 2:
            results.append(repo.fail(job_id, "timeout", "too slow"))
        else:
            results.append(repo.succeed(job_id, {}, [artifact(f"a{i}")], attempt=1))

    threads = [threading.Thread(target=finish, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1


def test_a_job_whose_worker_keeps_dying_fails_after_max_attempts(
    repo: JobsRepo, db: Database
) -> None:
    job_id = new_job(db)
    runs = [repo.claim(job_id, max_attempts=3) for _ in range(3)]
    assert [r.attempts for r in runs if r is not None] == [1, 2, 3]
    assert repo.claim(job_id, max_attempts=3) is None  # a fourth delivery
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == "failed" and job.error_code == "worker_lost"
        assert job.error_message == "the worker running this job died 3 times; it is not run again"


def test_a_stale_attempt_can_no_longer_write(repo: JobsRepo, db: Database) -> None:
    job_id = new_job(db)
    first = repo.claim(job_id)
    second = repo.claim(job_id)  # redelivered while the first run still goes on
    assert first is not None and second is not None
    assert (first.attempts, second.attempts) == (1, 2)
    assert not repo.is_running(job_id, attempt=1) and repo.is_running(job_id, attempt=2)
    assert not repo.set_progress(job_id, "quantizing", 0.9, attempt=1)  # the old run stops
    assert not repo.succeed(job_id, {"summary": {"old": True}}, [artifact("old")], attempt=1)
    assert not repo.fail(job_id, "internal_error", "the old run broke", attempt=1)
    assert repo.set_progress(job_id, "writing", 0.5, attempt=2)
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None and (job.status, job.stage, job.progress) == (
            "running", "writing", 0.5)
    assert repo.succeed(job_id, {"summary": {"new": True}}, [artifact("new")], attempt=2)
    with db.session() as session:
        job = session.get(Job, job_id)
        names = session.scalars(select(Artifact.name).where(Artifact.job_id == job_id)).all()
        assert job is not None and job.summary == {"new": True} and job.error_code is None
    assert names == ["new"]
    assert not repo.fail(job_id, "internal_error", "too late", attempt=2)  # final now
    assert not repo.is_running(job_id, attempt=2)


def test_fail_of_the_current_attempt_or_of_any(repo: JobsRepo, db: Database) -> None:
    job_id = new_job(db)
    repo.claim(job_id)
    repo.claim(job_id)
    assert repo.fail(job_id, "timeout", "too slow", attempt=2)
    other = new_job(db)
    repo.claim(other)
    repo.claim(other)
    assert repo.fail(other, "timeout", "killed at the hard limit")  # any attempt
    assert repo.status(other) is JobStatus.FAILED
