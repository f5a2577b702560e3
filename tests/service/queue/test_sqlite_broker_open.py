"""Processes opening a new embedded broker file at once (an API and its worker at their first
job): each gets its tables and its queue row (kombu looks each up and then creates it, so two
of them could create the same one and the second failed)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from kombu import Connection

from service.queue.sqlite_broker import BUSY_TIMEOUT_S
from tests.workers.services import ROOT

OPENERS = 8
TRANSPORT = "service.queue.sqlite_broker:Transport"
_OPEN = f"""
import sys, time
from kombu import Connection
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
with Connection("sqlite:///" + sys.argv[1], transport="{TRANSPORT}") as conn:
    queue = conn.SimpleQueue("jobs")
    queue.put({{"n": 1}})
    queue.close()
print("ok")
"""


def test_processes_opening_a_new_broker_file_at_once_all_publish(tmp_path: Path) -> None:
    broker = tmp_path / "broker.db"
    start = time.time() + 3.0  # after every interpreter has imported kombu
    procs = [subprocess.Popen([sys.executable, "-c", _OPEN, str(broker), str(start)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(OPENERS)]  # fmt: skip
    results = [p.communicate(timeout=120) for p in procs]
    failed = [next((line for line in err.splitlines() if "Error" in line), err[-300:])
              for (out, err) in results if out.strip() != "ok"]
    assert not failed, failed
    with_kombu = (f"from kombu import Connection\n"
                  f"with Connection('sqlite:///{broker}', transport='{TRANSPORT}') as c:\n"
                  f"    q = c.SimpleQueue('jobs'); print(q.qsize())")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", with_kombu], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=True)  # fmt: skip
    assert done.stdout.strip().splitlines()[-1] == str(OPENERS)


def test_every_connection_waits_for_the_write_lock_unless_told_otherwise(tmp_path: Path) -> None:
    """The busy timeout is the transport's default for any caller (the app sets none), and a
    caller's own is kept."""
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    for options, expected in (({}, BUSY_TIMEOUT_S), ({"connect_args": {"timeout": 3}}, 3)):
        with Connection(url, transport=TRANSPORT, transport_options=options) as conn:
            queue = conn.SimpleQueue("jobs")
            queue.put({"n": 1})
            queue.close()
            assert conn.transport_options["connect_args"]["timeout"] == expected


def test_a_broker_file_in_a_folder_not_made_yet_gets_its_folder(tmp_path: Path) -> None:
    """The defaults' ``./var`` is made by the job store; with the store elsewhere (or an
    operator's broker path), the broker must make its own, or no worker ever connects."""
    broker = tmp_path / "not" / "yet" / "broker.db"
    with Connection(f"sqlite:///{broker}", transport=TRANSPORT) as conn:
        queue = conn.SimpleQueue("jobs")
        queue.put({"n": 1})
        assert queue.get(timeout=5).payload == {"n": 1}
        queue.close()
    assert broker.is_file()
