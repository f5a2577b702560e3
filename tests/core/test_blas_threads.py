"""``quantcore.blas_threads``: OpenBLAS's threads stop spinning soon after a call."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# A dot product long enough for OpenBLAS to run it on its threads, then a sleep: whatever
# CPU time the process spends asleep is the idle threads spinning.
_PROBE = """
import json, sys, time
from quantcore.blas_threads import idle_blas_threads
changed = idle_blas_threads() if sys.argv[1] == "idle" else False
import numpy as np
a = np.random.default_rng(0).random(4_000_000)
a @ a
start = time.process_time()
time.sleep(0.3)
print(json.dumps({"changed": changed, "idle_cpu_s": time.process_time() - start}))
"""


def _probe(mode: str, **env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS_")}
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                          check=True, env={**clean, **env})  # fmt: skip
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="OpenBLAS runs on one thread here")
def test_idle_blas_threads_stop_spinning_after_a_call() -> None:
    plain = _probe("plain")
    idle = _probe("idle")
    assert plain["idle_cpu_s"] > 0.03  # OpenBLAS's default: about 0.1 s of spinning
    assert idle["changed"] is True
    assert idle["idle_cpu_s"] < 0.02


def test_the_operators_own_timeout_is_left_alone() -> None:
    kept = _probe("idle", OPENBLAS_THREAD_TIMEOUT="28")
    assert kept["changed"] is False


def test_the_worker_command_sets_it_before_numpy_loads() -> None:
    # OpenBLAS reads the setting once, when NumPy first loads it; the worker's pool children
    # are forked from the process that ran ``cmd_worker`` and inherit what it loaded.
    probe = (
        "import sys; import service.cli.main, service.cli.server; "
        "from quantcore import idle_blas_threads; print('numpy' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)  # fmt: skip
    assert done.stdout.strip() == "False"


def _numpy_blas_threads() -> set[int]:
    import numpy  # noqa: F401  (its OpenBLAS, loaded)
    from threadpoolctl import threadpool_info

    return {int(p["num_threads"]) for p in threadpool_info() if p["user_api"] == "blas"}


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="OpenBLAS runs on one thread here")
def test_one_blas_thread_is_held_until_the_last_overlapping_caller_leaves() -> None:
    """A pool process's warm-up job (on a thread) and its first job overlap: the first to
    leave must not give BLAS its threads back under the other."""
    import threading

    from quantcore.blas_threads import one_blas_thread

    before = _numpy_blas_threads()
    entered, leave_first = threading.Event(), threading.Event()
    seen: list[set[int]] = []

    def first() -> None:
        with one_blas_thread():
            entered.set()
            leave_first.wait(10)

    thread = threading.Thread(target=first)
    thread.start()
    assert entered.wait(10)
    with one_blas_thread():
        seen.append(_numpy_blas_threads())
        leave_first.set()
        thread.join(10)
        seen.append(_numpy_blas_threads())  # the first has left; this caller is still in
    seen.append(_numpy_blas_threads())
    assert before != {1}  # a thread a core: OpenBLAS's default here
    assert seen == [{1}, {1}, before]
