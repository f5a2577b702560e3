"""A load generator for the service's benchmarks: concurrent keep-alive HTTP/1.1 clients.

The clients are a minimal HTTP/1.1 client on asyncio streams, not httpx: the load generator
shares the cores with the server, and httpx spent 3-6 ms of CPU per request here (more than
the API spends on a submission), so a closed loop of httpx clients measured httpx. This one
spends about 0.15 ms. ``load`` runs them closed loop or paced, and records latencies, the
accepted count and both sides' CPU time.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


@dataclass(frozen=True, kw_only=True)
class Load:
    latencies: list[float]
    accepted: int
    wall_s: float
    client_cpu_s: float
    server_cpu_s: float | None


class _Client:
    """One client of the load: a keep-alive HTTP/1.1 connection that sends prepared requests
    and reads each answer (status line, headers, a ``Content-Length`` body)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def send(self, request: bytes) -> int:
        """The answer's status; the connection is reopened if the server closed it."""
        if self.reader is None or self.writer is None:
            await self.connect()
        assert self.reader is not None and self.writer is not None
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, close = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = value.strip().lower() == b"close"
            elif name == b"transfer-encoding":
                raise RuntimeError(f"unexpected Transfer-Encoding: {value.strip()!r}")
        await self.reader.readexactly(length)
        if close:
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()
        self.reader = self.writer = None


def _request_bytes(url: str, method: str, path: str, body: Any) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {urlsplit(url).netloc}\r\n"
    data = b""
    if body is not None:
        data = json.dumps(body).encode()
        head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    return head.encode() + b"\r\n" + data


def process_group_cpu_s(pgid: int) -> float | None:
    """CPU seconds used so far by the live processes of process group ``pgid`` (Linux)."""
    total, ticks = 0.0, os.sysconf("SC_CLK_TCK")
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp, ...
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


async def load(
    url: str,
    method: str,
    path: str,
    body: Any,
    *,
    clients: int,
    total: int,
    rate: float | None = None,
    server_pgid: int | None = None,
) -> Load:
    """``total`` requests from ``clients`` concurrent clients, each on its own connection
    (opened before the clock starts).

    ``rate=None``: closed loop, each client sends its next request as soon as the last one
    is answered (saturation: the server's throughput). ``rate``: open loop, one Poisson
    schedule of ``rate`` requests per second dealt round-robin to the clients; a latency is
    counted from the scheduled time, so a late answer also delays (and is charged to) the
    client's next request rather than silently thinning the load.
    """
    latencies: list[float] = []
    accepted = 0
    if rate is None:
        offsets: list[float | None] = [None] * total
    else:
        gaps = np.random.default_rng(0).exponential(1.0 / rate, total)
        offsets = [float(t) for t in np.cumsum(gaps)]
    request = _request_bytes(url, method, path, body)
    parts = urlsplit(url)
    pool = [_Client(parts.hostname or "127.0.0.1", parts.port or 80) for _ in range(clients)]
    await asyncio.gather(*(c.connect() for c in pool))

    async def one_client(client: _Client, mine: list[float | None], t0: float) -> None:
        nonlocal accepted
        for offset in mine:
            if offset is not None:
                await asyncio.sleep(max(0.0, t0 + offset - time.perf_counter()))
            start = time.perf_counter() if offset is None else t0 + offset
            async with asyncio.timeout(60):
                status = await client.send(request)
            latencies.append(time.perf_counter() - start)
            accepted += status in (200, 202)

    server_cpu = None if server_pgid is None else process_group_cpu_s(server_pgid)
    cpu = time.process_time()
    started = time.perf_counter()
    try:
        shares = [offsets[k::clients] for k in range(clients)]
        await asyncio.gather(
            *(one_client(c, share, started) for c, share in zip(pool, shares, strict=True))
        )
        wall = time.perf_counter() - started
    finally:
        await asyncio.gather(*(c.close() for c in pool))
    client_cpu = time.process_time() - cpu
    if server_cpu is not None and server_pgid is not None:
        now = process_group_cpu_s(server_pgid)
        server_cpu = None if now is None else now - server_cpu
    return Load(latencies=latencies, accepted=accepted, wall_s=wall, client_cpu_s=client_cpu,
                server_cpu_s=server_cpu)


@dataclass(frozen=True, kw_only=True)
class Mixed:
    latencies: dict[str, list[float]]  # by request name
    sent_s: dict[str, list[float]]  # when each was sent, seconds from the start
    statuses: list[int]
    client_cpu_s: float
    wall_s: float


async def alternating(
    url: str,
    requests: list[tuple[str, str, str, Any]],
    *,
    clients: int,
    period_s: float,
    seconds: float,
) -> Mixed:
    """``clients`` clients, each sending ``requests`` (``(name, method, path, body)``) in turn,
    one every ``period_s``, for ``seconds`` (open loop: client ``i`` starts ``i·period_s /
    clients`` in, so the load is even). A latency counts from the moment the request is
    sent: a client's requests share one connection, so a slow answer to one kind (a
    submission waiting on a frozen broker) delays that client's next request, and charging
    the delay to it would measure the other kind."""
    prepared = [(name, _request_bytes(url, method, path, body))
                for name, method, path, body in requests]  # fmt: skip
    latencies: dict[str, list[float]] = {name: [] for name, _ in prepared}
    sent_s: dict[str, list[float]] = {name: [] for name, _ in prepared}
    statuses: list[int] = []
    parts = urlsplit(url)
    pool = [_Client(parts.hostname or "127.0.0.1", parts.port or 80) for _ in range(clients)]
    await asyncio.gather(*(c.connect() for c in pool))

    async def one_client(i: int, client: _Client, t0: float) -> None:
        turn = 0
        while True:
            scheduled = t0 + (i / clients + turn) * period_s
            if scheduled - t0 >= seconds:
                return
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            name, request = prepared[turn % len(prepared)]
            sent = time.perf_counter()
            async with asyncio.timeout(60):
                statuses.append(await client.send(request))
            latencies[name].append(time.perf_counter() - sent)
            sent_s[name].append(sent - t0)
            turn += 1

    cpu = time.process_time()
    started = time.perf_counter()
    try:
        await asyncio.gather(*(one_client(i, c, started) for i, c in enumerate(pool)))
    finally:
        await asyncio.gather(*(c.close() for c in pool))
    return Mixed(latencies=latencies, sent_s=sent_s, statuses=statuses,
                 wall_s=time.perf_counter() - started, client_cpu_s=time.process_time() - cpu)
