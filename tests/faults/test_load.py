"""Load: 50 clients submitting for 30 s (each one job every 3 s, with jitter), on both
shapes. Every accepted job ends, exactly once, with one set of artifacts; the refusals, if
any, are 503s that accepted nothing."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests import models
from tests.faults.check import assert_exactly_once, stored_local, wait_all_final
from tests.faults.common import SPEC
from tests.faults.parts import MotoProcess
from tests.workers.flow import save_model, upload_model
from tests.workers.services import Service

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

CLIENTS, DURATION_S, INTERVAL_S = 50, 30.0, 3.0


async def _client(url: str, model_id: str, until: float, accepted: list[str],
                  codes: list[int], seed: int) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        await asyncio.sleep(rng.uniform(0, INTERVAL_S))
        while time.monotonic() < until:
            r = await client.post("/v1/jobs", json={"model_id": model_id, "spec": SPEC})
            codes.append(r.status_code)
            if r.status_code == 202:
                accepted.append(r.json()["id"])
            await asyncio.sleep(INTERVAL_S * rng.uniform(0.8, 1.2))


def load(service: Service, model_id: str) -> tuple[list[str], list[int]]:
    accepted: list[str] = []
    codes: list[int] = []
    until = time.monotonic() + DURATION_S

    async def run() -> None:
        await asyncio.gather(*(_client(service.url, model_id, until, accepted, codes, i)
                               for i in range(CLIENTS)))

    # On a thread of its own: a browser test run earlier in the session may have left an
    # event loop running on this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()
    return accepted, codes


def _run(service: Service, tmp_path: Path,
         stored: Callable[[str], list[str]]) -> None:
    model = save_model(models.mlp((32, 48, 10), seed=12), tmp_path / "mlp.onnx")
    with service.client() as client:
        model_id = upload_model(client, model)["id"]
        accepted, codes = load(service, model_id)
        assert len(accepted) >= CLIENTS * DURATION_S / INTERVAL_S * 0.7, len(accepted)
        assert set(codes) <= {202, 503}, sorted(set(codes))
        assert len(set(accepted)) == len(accepted)
        done = wait_all_final(client, accepted, 240, service.logs)
        assert all(j["status"] == "succeeded" for j in done.values())
        listed = client.get("/v1/jobs", params={"limit": 1}).json()["count"]
        assert listed == len(accepted), (listed, len(accepted))  # no refused job left behind
        assert_exactly_once(client, done, service, stored=stored)


def test_load_embedded(embedded: Callable[..., Service], tmp_path: Path) -> None:
    service = embedded()
    service.start_api(with_worker=True)
    _run(service, tmp_path, lambda j: stored_local(tmp_path / "storage", j))


def test_load_deployed(deployed: Callable[..., Service], moto: MotoProcess,
                       tmp_path: Path) -> None:
    service = deployed()
    service.start_api()
    service.start_worker(concurrency=2)
    bucket = service.env["QUANTSERVE_S3_BUCKET"]
    _run(service, tmp_path,
         lambda j: [k.rsplit("/", 1)[1] for k in moto.keys(bucket, f"jobs/{j}/")])
