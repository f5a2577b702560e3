"""``quantserve``: run the service, submit and fetch jobs, quantize locally.

Server side (settings from ``QUANTSERVE_*``, see ``service.settings``):

- ``serve``: migrations, the API (uvicorn) and one worker subprocess; Ctrl-C stops both.
  ``--no-worker`` runs the API alone (the deployed shape), ``--workers N`` N API processes.
- ``worker``: a Celery worker on the configured broker.
- ``create-key --team T``: a new API key for team T, printed once.

Client side (``--url``, default ``$QUANTSERVE_URL`` or the settings' host and port;
``--api-key``, default ``$QUANTSERVE_API_KEY``):

- ``submit MODEL [--dataset D] [--spec JSON|FILE] [--kind K] [--wait]``: MODEL and D are files
  to upload or ids of uploads; the job is printed as JSON; ``--wait`` draws a progress bar on
  stderr and exits 1 unless the job succeeds.
- ``status JOB``, ``fetch JOB [--out DIR]`` (every artifact, sha256 checked),
  ``batch FILE.jsonl`` (one job per line, one JSON line out per job; exit 1 if any failed).

Local, no server: ``quantize MODEL --spec ... --out DIR`` (the worker's ``run_job``: same
artifacts and ``report.json``) and ``unpack PACKAGE.qpack [--out FILE]`` (the model file
the package restores, named after the package with its format's suffix by default).

Exit codes: 0 success, 1 a job or request failed, 2 bad arguments or input.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import mmap
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from service.cli.client import ApiError, load_spec
from service.cli.output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ProgressBar, error, print_json
from service.cli.remote import cmd_batch, cmd_fetch, cmd_status, cmd_submit
from service.settings import Settings, get_settings

_PR_SET_PDEATHSIG = 1  # prctl(2)

# --- server side -----------------------------------------------------------------------


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
    from service.logging import configure_logging
    from service.store.db import Database

    settings = get_settings()
    configure_logging(settings.log_level)
    Database(settings.database_url).migrate()
    from service.queue.celery_app import app

    app.worker_main(_worker_argv(settings, args))
    return EXIT_OK


def _stop(process: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)  # Celery's warm shutdown: the running job finishes
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


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
    from service.store.db import Database

    settings = get_settings()
    Database(settings.database_url).migrate()
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
        worker = subprocess.Popen(
            argv, preexec_fn=_die_with_parent if sys.platform == "linux" else None
        )
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
            )
        else:
            uvicorn.run(
                create_served_app(settings), host=host, port=port,
                log_level=settings.log_level.lower(), access_log=False,
            )
    finally:
        if worker is not None:
            _stop(worker)
    return EXIT_OK


def cmd_create_key(args: argparse.Namespace) -> int:
    from service.api.auth import create_api_key
    from service.store.db import Database

    db = Database(get_settings().database_url)
    db.migrate()
    issued = create_api_key(db, team=args.team, name=args.name)
    print_json(
        {
            "key": issued.key,
            "key_id": issued.key_id,
            "team": issued.team_name,
            "team_id": issued.team_id,
        }
    )
    return EXIT_OK


# --- client side -----------------------------------------------------------------------

# --- local ------------------------------------------------------------------------------


def cmd_quantize(args: argparse.Namespace) -> int:
    from quantcore import JobInput, JobKind, run_job
    from quantcore.errors import QuantError

    settings = get_settings()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    job = JobInput(
        kind=JobKind(args.kind),
        model_path=Path(args.model),
        spec=load_spec(args.spec),
        dataset_path=Path(args.dataset) if args.dataset else None,
    )
    limits = settings.job_limits()
    bar = ProgressBar(sys.stderr, enabled=not args.quiet)
    try:
        output = run_job(
            job, out_dir, progress=lambda stage, f: bar.update(f, str(stage)), limits=limits
        )
    except QuantError as exc:
        bar.close()
        error(f"{exc.code}: {exc.message}")
        return EXIT_USAGE
    bar.close()
    print_json(
        {
            "out": str(out_dir),
            "artifacts": [p.name for p in output.artifacts],
            "summary": output.report.get("summary"),
        }
    )
    return EXIT_OK


def restored_name(package: Path) -> Path:
    """``package`` with the suffix of the model it restores (``.onnx``, ``.safetensors`` or
    ``.npz``, from the header's format). The file is mapped, so only the header is read."""
    from quantcore.formats import qpack
    from service.store.jobs import MODEL_SUFFIX

    try:
        with package.open("rb") as file:
            mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return package.with_suffix(".onnx")  # unreadable or empty: unpack_file says why
    # Unmapped when collected, not closed here: a header error's traceback still holds a view.
    fmt = qpack.read_header(memoryview(mapped))[0]["format"]
    return package.with_suffix(MODEL_SUFFIX[fmt])


def cmd_unpack(args: argparse.Namespace) -> int:
    from quantcore.errors import QuantError
    from quantcore.formats import qpack

    package = Path(args.package)
    try:
        out = Path(args.out) if args.out else restored_name(package)
        written = qpack.unpack_file(package, out)
    except QuantError as exc:
        error(f"{exc.code}: {exc.message}")
        return EXIT_USAGE
    print_json({"files": [{"path": str(p), "size_bytes": p.stat().st_size} for p in written]})
    return EXIT_OK


# --- arguments --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quantserve", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def client_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", help="the API's base URL (default $QUANTSERVE_URL)")
        p.add_argument("--api-key", help="API key (default $QUANTSERVE_API_KEY)")

    p = sub.add_parser("serve", help="the API and one worker, on the settings' defaults")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--no-worker", action="store_true", help="the API only (deployed shape)")
    p.add_argument("--concurrency", type=int, default=1, help="processes of the worker")
    p.add_argument("--workers", type=int, default=1, help="API processes (uvicorn workers)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="a Celery worker on the configured broker")
    p.add_argument("--concurrency", type=int, help="pool processes (default: CPU count)")
    p.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"])
    p.add_argument("--hostname", help="worker node name (default celery@HOST)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("create-key", help="print a new API key for a team")
    p.add_argument("--team", required=True)
    p.add_argument("--name", default="", help="a label for the key")
    p.set_defaults(func=cmd_create_key)

    p = sub.add_parser("submit", help="submit a job (uploading files as needed)")
    p.add_argument("model", help="a model file to upload, or a model id")
    p.add_argument("--dataset", help="a .npz evaluation set to upload, or a dataset id")
    p.add_argument("--spec", help="the spec: inline JSON or a JSON file")
    p.add_argument("--kind", choices=["quantize", "sweep", "search"])
    p.add_argument("--idempotency-key")
    p.add_argument("--wait", action="store_true", help="wait for the job, with a progress bar")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    client_options(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="print a job")
    p.add_argument("job")
    client_options(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("fetch", help="download a job's artifacts, checking their sha256")
    p.add_argument("job")
    p.add_argument("--out", help="folder (default: the job id)")
    client_options(p)
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("batch", help="submit one job per line of a JSONL file")
    p.add_argument("file")
    p.add_argument("--wait", action="store_true", help="then wait for every job")
    client_options(p)
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("quantize", help="run a job locally, without a server")
    p.add_argument("model")
    p.add_argument("--dataset")
    p.add_argument("--spec", help="the spec: inline JSON or a JSON file")
    p.add_argument("--kind", default="quantize", choices=["quantize", "sweep", "search"])
    p.add_argument("--out", required=True, help="folder for the artifacts and report.json")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("unpack", help="restore the model file from a .qpack package")
    p.add_argument("package")
    p.add_argument("--out", help="output file (default: PACKAGE with the suffix of the "
                   "package's format: .onnx, .safetensors or .npz)")
    p.set_defaults(func=cmd_unpack)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    try:
        code = int(args.func(args))
    except ApiError as exc:
        error(f"{exc.status or 'no answer'} {exc.code}: {exc.message}")
        code = EXIT_FAILED
    except (ValueError, FileNotFoundError) as exc:
        error(str(exc))
        code = EXIT_USAGE
    except KeyboardInterrupt:
        error(f"interrupted after {time.monotonic() - started:.1f} s")
        code = 130
    return code


if __name__ == "__main__":
    sys.exit(main())
