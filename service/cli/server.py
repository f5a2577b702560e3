"""The server side of ``quantserve``: ``serve`` (the API, with a worker subprocess unless
``--no-worker``), ``worker`` (a Celery worker), ``create-key`` and ``revoke-key``.

The web framework, the database and Celery are imported inside the commands, so that the
client and local commands start without loading them.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import sys
import tempfile
from pathlib import Path

from service.cli.output import EXIT_FAILED, EXIT_OK, error, print_json
from service.settings import Settings, get_settings

_PR_SET_PDEATHSIG = 1  # prctl(2)


def _worker_argv(settings: Settings, args: argparse.Namespace) -> list[str]:
    from service.queue.celery_app import QUEUE

    argv = [
        "worker",
        f"--loglevel={settings.log_level}",
        "-Q",
        QUEUE,
        "--without-gossip",
        "--without-mingle",
        f"--pool={args.pool}",
    ]
    if args.concurrency:
        argv.append(f"--concurrency={args.concurrency}")
    if args.hostname:
        argv.append(f"--hostname={args.hostname}")
    return argv


def cmd_worker(args: argparse.Namespace) -> int:
    from quantcore import idle_blas_threads

    idle_blas_threads()  # before the pool's children import numpy (quantcore.blas_threads)
    from service.logging import configure_logging
    from service.store.db import Database

    settings = get_settings()
    configure_logging(settings.log_level)
    Database.from_settings(settings).migrate()
    from service.queue.celery_app import app
    from workers.restart import EXIT_RESTART, restart_requested

    app.worker_main(_worker_argv(settings, args))
    # A worker that shut down to restart says so (the supervisor restarts it either way).
    return EXIT_RESTART if restart_requested() else EXIT_OK


def _exit_on_signal(signum: int, _frame: object) -> None:
    # uvicorn shuts down on SIGTERM/SIGINT, then raises the signal again with the handler it
    # found installed: this one turns it into SystemExit, so that ``finally`` stops the worker.
    raise SystemExit(128 + signum)


def _die_with_parent() -> None:
    """In the worker child (Linux): get SIGTERM when ``serve`` dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.api.app import create_served_app
    from service.api.readiness import WORKER_STATUS_ENV
    from service.cli.supervisor import WorkerSupervisor
    from service.store.db import Database

    settings = get_settings()
    Database.from_settings(settings).migrate()
    worker = None
    if not args.no_worker:
        argv = [
            sys.executable,
            "-m",
            "service.cli",
            "worker",
            "--concurrency",
            str(args.concurrency or 1),
        ]
        status = Path(tempfile.gettempdir()) / f"quantserve-serve-{os.getpid()}.worker.json"
        # The API's readiness reports the worker (uvicorn's worker processes inherit it).
        os.environ[WORKER_STATUS_ENV] = str(status)
        worker = WorkerSupervisor(
            argv, status, preexec_fn=_die_with_parent if sys.platform == "linux" else None
        )
        worker.start()
    host, port = args.host or settings.host, args.port or settings.port
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_on_signal)
    try:
        # No access log of uvicorn's own: the API logs every request as a JSON line.
        if args.workers > 1:
            # Separate processes, each building the app from the environment's settings.
            uvicorn.run(
                "service.api.app:create_served_app",
                factory=True,
                workers=args.workers,
                host=host,
                port=port,
                log_level=settings.log_level.lower(),
                access_log=False,
                timeout_keep_alive=settings.keep_alive_s,
            )
        else:
            uvicorn.run(
                create_served_app(settings), host=host, port=port,
                log_level=settings.log_level.lower(), access_log=False,
                timeout_keep_alive=settings.keep_alive_s,
            )
    finally:
        if worker is not None:
            worker.stop(settings.worker_stop_grace_s)
    return EXIT_OK


def cmd_create_key(args: argparse.Namespace) -> int:
    from service.store.db import Database
    from service.store.keys import KeysRepo

    db = Database(get_settings().database_url)
    db.migrate()
    issued = KeysRepo(db).issue(team=args.team, name=args.name)
    print_json(
        {
            "key": issued.key,
            "key_id": issued.key_id,
            "team": issued.team_name,
            "team_id": issued.team_id,
        }
    )
    return EXIT_OK


def cmd_revoke_key(args: argparse.Namespace) -> int:
    from service.store.db import Database
    from service.store.keys import KEY_PREFIX, KeysRepo

    db = Database(get_settings().database_url)
    db.migrate()
    keys = KeysRepo(db)
    key_id = args.key
    if key_id.startswith(KEY_PREFIX):  # the key itself: find its id
        owner = keys.owner(key_id)
        if owner is None:
            error("no such key")
            return EXIT_FAILED
        key_id = owner.key_id
    if not keys.revoke(key_id):
        error(f"key {key_id!r} is unknown or revoked already")
        return EXIT_FAILED
    print_json({"key_id": key_id, "revoked": True})
    return EXIT_OK
