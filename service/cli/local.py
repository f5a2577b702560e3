"""The local commands of ``quantserve``, which need no server: ``quantize`` runs a job the way
a worker does (same artifacts and ``report.json``) and ``unpack`` restores the model file a
``.qpack`` package holds, and ``warm`` compiles the kernels that jobs use.

The core is imported inside the commands, so that the other commands start without loading
onnx, onnxruntime or SciPy.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from service.cli.output import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    ProgressBar,
    error,
    output_folder,
    print_json,
)
from service.cli.specs import load_spec

if TYPE_CHECKING:
    from quantcore import JobLimits

SETTINGS_PREFIX = "QUANTSERVE_"
SETTINGS_FILE = ".env"  # service.settings reads it from the working folder


def job_limits() -> JobLimits:
    """The settings' job limits (``service.settings``). When nothing could change them (no
    ``QUANTSERVE_*`` variable, no ``.env`` file), they are the core's defaults, which the
    settings' own defaults equal (a test holds them to it), and the settings' validation
    (pydantic: a fifth of the command's imports) is not loaded."""
    overridden = Path(SETTINGS_FILE).exists() or any(
        name.upper().startswith(SETTINGS_PREFIX) for name in os.environ
    )
    if overridden:
        from service.settings import get_settings

        return get_settings().job_limits()
    from quantcore import JobLimits

    return JobLimits()


def cmd_quantize(args: argparse.Namespace) -> int:
    from quantcore import JobInput, JobKind, QuantError, run_job

    out_dir = output_folder(args.out)
    job = JobInput(
        kind=JobKind(args.kind),
        model_path=Path(args.model),
        spec=load_spec(args.spec),
        dataset_path=Path(args.dataset) if args.dataset else None,
    )
    limits = job_limits()
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
    ``.npz``, from the header's format); only the header is read."""
    from quantcore import FORMAT_SUFFIX, package_format

    try:
        fmt = package_format(package)
    except OSError:
        return package.with_suffix(".onnx")  # unreadable: unpack_file says why
    return package.with_suffix(FORMAT_SUFFIX[fmt])


def cmd_unpack(args: argparse.Namespace) -> int:
    from quantcore import QuantError, unpack_file

    package = Path(args.package)
    try:
        out = Path(args.out) if args.out else restored_name(package)
        if out.is_dir():  # as cp does: the restored file goes into the folder
            out = out / restored_name(package).name
        else:
            output_folder(str(out.parent), f"--out {out}: its folder")
        written = unpack_file(package, out)
    except QuantError as exc:
        error(f"{exc.code}: {exc.message}")
        return EXIT_USAGE
    except FileNotFoundError:
        raise  # a usage error (main says which path)
    except OSError as exc:  # the disk full, a file size limit, a folder not writable
        error(f"cannot write the restored model: {exc.strerror or exc}")
        return EXIT_FAILED
    print_json({"files": [{"path": str(p), "size_bytes": p.stat().st_size} for p in written]})
    return EXIT_OK


def cmd_warm(args: argparse.Namespace) -> int:
    """Run the warm-up jobs; prints each with its time (the first run on a machine compiles,
    later ones load the kernels from numba's cache). Fails where the cache could not be
    written: filling it is the command's purpose."""
    from quantcore import warm_kernels

    started = time.monotonic()
    try:
        runs = warm_kernels()
    except RuntimeError as exc:  # a kernel compiled but not saved: the cache is not warm
        error(str(exc))
        return EXIT_FAILED
    print_json({
        "jobs": [{"model": r.model, "spec": r.spec, "seconds": round(r.seconds, 2)}
                 for r in runs],
        "seconds": round(time.monotonic() - started, 2),
    })  # fmt: skip
    return EXIT_OK
