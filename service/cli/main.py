"""``quantserve``: run the service, submit and fetch jobs, quantize locally.

Server side (settings from ``QUANTSERVE_*``, see ``service.settings``):

- ``serve``: migrations, the API (uvicorn) and one supervised worker subprocess (restarted
  with backoff if it dies; ``/readyz`` reports it); Ctrl-C stops both.
  ``--no-worker`` runs the API alone (the deployed shape), ``--workers N`` N API processes.
- ``worker``: a Celery worker on the configured broker.
- ``create-key --team T``: a new API key for team T, printed once; ``revoke-key KEY_ID``
  (or the key itself) revokes one.

Client side (``--url``, default ``$QUANTSERVE_URL`` or the settings' host and port;
``--api-key``, default ``$QUANTSERVE_API_KEY``):

- ``submit MODEL [--dataset D] [--spec JSON|FILE] [--kind K] [--name N] [--label K=V ...]
  [--callback-url URL] [--wait]``: MODEL and D are files to upload or ids of uploads; the job
  is printed as JSON; ``--wait`` follows the job's event stream with a progress bar on stderr
  and exits 1 unless the job succeeds; ``--presigned`` PUTs model and dataset files straight
  to the service's S3 store rather than through the API.
- ``status JOB``, ``fetch JOB [--out DIR] [--presigned]`` (every artifact, sha256 checked;
  ``--presigned``: straight from the S3 store by URLs the API signs),
  ``batch FILE.jsonl [--presigned]`` (one job per line, one JSON line out per job; exit 1 if
  any failed).

Local, no server: ``quantize MODEL --spec ... --out DIR`` (the worker's ``run_job``: same
artifacts and ``report.json``) and ``unpack PACKAGE.qpack [--out FILE]`` (the model file
the package restores, named after the package with its format's suffix by default);
``warm`` compiles (or loads) the numba kernels that jobs use, ahead of the first job (the
Docker image runs it at build time, into ``NUMBA_CACHE_DIR``).

Exit codes: 0 success, 1 a job or request failed, 2 bad arguments or input.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Callable, Sequence

from service.cli.errors import ApiError
from service.cli.output import EXIT_FAILED, EXIT_USAGE, error

Command = Callable[[argparse.Namespace], int]


def _command(module: str, name: str) -> Command:
    """The command ``name`` of ``service.cli.<module>``, imported when it runs: a local
    ``quantize`` never loads the HTTP client, a ``submit`` never loads the core."""

    def run(args: argparse.Namespace) -> int:
        func: Command = getattr(importlib.import_module(f"service.cli.{module}"), name)
        return func(args)

    run.__name__ = name
    return run


cmd_serve, cmd_worker = _command("server", "cmd_serve"), _command("server", "cmd_worker")
cmd_create_key = _command("server", "cmd_create_key")
cmd_revoke_key = _command("server", "cmd_revoke_key")
cmd_submit, cmd_status = _command("remote", "cmd_submit"), _command("remote", "cmd_status")
cmd_fetch, cmd_batch = _command("remote", "cmd_fetch"), _command("remote", "cmd_batch")
cmd_quantize, cmd_unpack = _command("local", "cmd_quantize"), _command("local", "cmd_unpack")
cmd_warm = _command("local", "cmd_warm")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quantserve", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def client_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", help="the API's base URL (default $QUANTSERVE_URL)")
        p.add_argument("--api-key", help="API key (default $QUANTSERVE_API_KEY)")

    def presigned_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--presigned", action="store_true",
                       help="upload model and dataset files straight to the service's S3 "
                       "store (presigned PUTs) instead of through the API")

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

    p = sub.add_parser("revoke-key", help="revoke an API key (its id, or the key itself)")
    p.add_argument("key", help="the key_id printed by create-key, or the key")
    p.set_defaults(func=cmd_revoke_key)

    p = sub.add_parser("submit", help="submit a job (uploading files as needed)")
    p.add_argument("model", help="a model file to upload, or a model id")
    p.add_argument("--dataset", help="a .npz evaluation set to upload, or a dataset id")
    p.add_argument("--spec", help="the spec: inline JSON or a JSON file")
    p.add_argument("--kind", choices=["quantize", "sweep", "search"])
    p.add_argument("--idempotency-key")
    p.add_argument("--name", help="a name for the job")
    p.add_argument("--label", action="append", metavar="KEY=VALUE",
                   help="a label for the job (repeat for several)")
    p.add_argument("--callback-url", help="a URL told of the job's end (a signed webhook)")
    p.add_argument("--wait", action="store_true", help="wait for the job, with a progress bar")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    presigned_option(p)
    client_options(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="print a job")
    p.add_argument("job")
    client_options(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("fetch", help="download a job's artifacts, checking their sha256")
    p.add_argument("job")
    p.add_argument("--out", help="folder (default: the job id)")
    p.add_argument("--presigned", action="store_true",
                   help="download straight from the service's S3 store (presigned GET URLs "
                   "the API signs) instead of through the API")
    client_options(p)
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("batch", help="submit one job per line of a JSONL file")
    p.add_argument("file")
    p.add_argument("--wait", action="store_true", help="then wait for every job")
    presigned_option(p)
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
    p.add_argument("--out", help="output file, or an existing folder to write it into, "
                   "its folders made if missing (default: PACKAGE with the suffix of the "
                   "package's format: .onnx, .safetensors or .npz)")
    p.set_defaults(func=cmd_unpack)

    p = sub.add_parser("warm", help="compile the kernels that jobs use, ahead of the first job")
    p.set_defaults(func=cmd_warm)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    if argv is None and args.command in EXIT_AT_ONCE:
        from quantcore import idle_blas_threads, keep_freed_memory

        # The process is the job's (see quantcore.allocator and quantcore.blas_threads).
        keep_freed_memory()
        idle_blas_threads()
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
    if argv is None and args.command in EXIT_AT_ONCE:
        _exit_now(code)
    return code


# Local commands that leave large arrays, onnxruntime sessions and thread pools behind: the
# process ends as soon as their output is flushed, without the interpreter's teardown
# (freeing every object one by one, joining pools), which took 0.5-2.5 s of a quantize
# job's process. Their files are closed by then; only a process started as the command
# (argv None) ends this way, never a caller of main().
EXIT_AT_ONCE = frozenset({"quantize", "unpack", "warm"})


def _exit_now(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
