"""A hostile caller's inputs, through the API on PostgreSQL: each one is a 4xx with a code
naming what is wrong, never a 500, and each new limit accepts just under (or at) it and
refuses just over.

The service runs with small input limits (``LIMITS``) so that the boundaries are tiny files.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from httpx import Response

from service.api.app import create_app
from service.settings import Settings
from tests import bad_files as bf
from tests.service.helpers import dataset_bytes, mlp_bytes

LIMITS = {"max_array_bytes": 4096, "max_inflated_bytes": 10_000, "max_npz_members": 4,
          "max_header_bytes": 512, "max_json_depth": 8}
HEADER = len(bf.npy_header((1,), "|u1"))


@dataclass(frozen=True, kw_only=True)
class World:
    client: TestClient
    model_id: str
    dataset_id: str
    job_id: str


@dataclass(frozen=True, kw_only=True)
class Case:
    name: str
    call: Callable[[World], Response]
    status: int
    code: str | None = None  # None: a success
    message: str = ""  # a fragment the message must contain


@pytest.fixture(scope="module")
def world(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("hostile")
    settings = Settings(_env_file=None, database_url=postgres_url,  # type: ignore[call-arg]
                        broker_url=f"sqla+sqlite:///{tmp}/broker.db",
                        storage_path=str(tmp / "storage"), max_upload_bytes=4 << 20,
                        rate_limit_per_minute=0, **LIMITS)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        model = client.post("/v1/models", files={"file": ("m.onnx", mlp_bytes())}).json()
        dataset = client.post("/v1/datasets", files={"file": ("d.npz", dataset_bytes())}).json()
        job = client.post("/v1/jobs", json={"model_id": model["id"]}).json()
        yield World(client=client, model_id=model["id"], dataset_id=dataset["id"],
                    job_id=job["id"])


def _model(name: str, data: bytes) -> Callable[[World], Response]:
    return lambda w: w.client.post("/v1/models", files={"file": (name, data)})


def _dataset(data: bytes) -> Callable[[World], Response]:
    return lambda w: w.client.post("/v1/datasets", files={"file": ("eval.npz", data)})


def _json(text: str | bytes, path: str = "/v1/jobs") -> Callable[[World], Response]:
    def call(w: World) -> Response:
        body = text.replace("MODEL", w.model_id) if isinstance(text, str) else text
        return w.client.post(path, content=body, headers={"Content-Type": "application/json"})

    return call


def _job(**fields: Any) -> Callable[[World], Response]:
    def call(w: World) -> Response:
        body = {"model_id": w.model_id, **fields}
        if body.get("dataset_id") == "DATASET":
            body["dataset_id"] = w.dataset_id
        return w.client.post("/v1/jobs", json=body)

    return call


def _multipart_job(spec: str, kind: str = "quantize",
                   dataset: bytes | None = None) -> Callable[[World], Response]:
    def call(w: World) -> Response:
        files = {"model": ("m.onnx", mlp_bytes())}
        if dataset is not None:
            files["dataset"] = ("eval.npz", dataset)
        return w.client.post("/v1/jobs", files=files, data={"spec": spec, "kind": kind})

    return call


def _u8(n: int) -> bytes:
    return bf.npy(np.zeros(n, np.uint8))


def _evalset(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def _metadata_header(n: int) -> bytes:
    head, tail = b'{"__metadata__": {"a": "', b'"}}'
    return head + b"x" * (n - len(head) - len(tail)) + tail


def _raw_multipart(filename: bytes) -> Callable[[World], Response]:
    """An upload whose file name holds the raw bytes given (clients escape NUL; this does not)."""
    body = (b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + filename
            + b"\"\r\nContent-Type: application/octet-stream\r\n\r\n" + mlp_bytes()
            + b"\r\n--B--\r\n")
    return lambda w: w.client.post("/v1/models", content=body,
                                   headers={"Content-Type": "multipart/form-data; boundary=B"})


def _batch(second: dict[str, Any]) -> Callable[[World], Response]:
    def call(w: World) -> Response:
        job = {**second, "model_id": w.model_id}
        if job.get("dataset_id") == "DATASET":
            job["dataset_id"] = w.dataset_id
        return w.client.post("/v1/jobs/batch",
                             json={"jobs": [{"model_id": w.model_id}, job]})

    return call


X = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)
NON_FINITE = ("NaN", "Infinity", "-Infinity", "1e400")


def _spec_text(field: str, value: str, *, job: bool = False) -> str:
    """``{"field": value}`` with ``value`` as raw JSON text (in a job body with ``job``)."""
    spec = "{" + json.dumps(field) + ": " + value + "}"
    return '{"model_id": "MODEL", "spec": ' + spec + "}" if job else spec

CASES = [
    # --- .npz models: declared sizes, actual sizes, members
    Case(name="npz: 300-byte x.npy claiming (2**30, 1024)", status=413,
         code="payload_too_large",
         message="array 'x' declares shape (1073741824, 1024) of float64: 8796093022208 bytes",
         call=_model("m.npz", bf.claiming_npz())),
    Case(name="npz: array at max_array_bytes", status=201, call=_model("a.npz", bf.npz(
        {"w.npy": _u8(4096)}))),
    Case(name="npz: array one byte over", status=413, code="payload_too_large",
         message="4097 bytes", call=_model("b.npz", bf.npz({"w.npy": _u8(4097)}))),
    Case(name="npz: members at max_npz_members", status=201,
         call=_model("c.npz", bf.npz({f"w{i}.npy": _u8(8) for i in range(4)}))),
    Case(name="npz: one member over", status=413, code="payload_too_large",
         message="at most 4 members",
         call=_model("d.npz", bf.npz({f"w{i}.npy": _u8(8) for i in range(5)}))),
    Case(name="npz: inflated total at max_inflated_bytes", status=201,
         call=_model("e.npz", bf.npz({"a.npy": _u8(4096), "b.npy": _u8(4096),
                                      "c.npy": _u8(10_000 - 8192 - 3 * HEADER)}))),
    Case(name="npz: inflated total one byte over", status=413, code="payload_too_large",
         message="max_inflated_bytes",
         call=_model("f.npz", bf.npz({"a.npy": _u8(4096), "b.npy": _u8(4096),
                                      "c.npy": _u8(10_001 - 8192 - 3 * HEADER)}))),
    Case(name="npz: member inflating past its zip header", status=422, code="invalid_model",
         message="Bad CRC-32", call=_model("g.npz", bf.lying_npz(2000))),
    Case(name="npz: deflate stream broken", status=422, code="invalid_model",
         message="Error -3 while decompressing", call=_model("i.npz", bf.corrupt_deflate_npz())),
    Case(name="npz: bzip2 member", status=422, code="invalid_model",
         message="compressed with bzip2",
         call=_model("h.npz", bf.npz({"w.npy": _u8(8)}, method=zipfile.ZIP_BZIP2))),
    Case(name="npz: negative dimension", status=422, code="invalid_model",
         message="negative dimension",
         call=_model("i.npz", bf.npz({"w.npy": bf.npy_header((-5, 2))}))),
    # --- safetensors models
    Case(name="safetensors: negative offset", status=422, code="invalid_model",
         message="data_offsets [-16, 0]",
         call=_model("m.safetensors", bf.safetensors({"w": bf.f32_entry([4], -16, 0)},
                                                     bytes(16)))),
    Case(name="safetensors: overlapping tensors", status=422, code="invalid_model",
         message="overlap", call=_model("m.safetensors", bf.safetensors(
             {"w": bf.f32_entry([4], 0, 16), "v": bf.f32_entry([2], 8, 16)}, bytes(16)))),
    Case(name="safetensors: offsets outside the file", status=422, code="invalid_model",
         message="lie outside the 16-byte data section", call=_model(
             "m.safetensors", bf.safetensors({"w": bf.f32_entry([4], 8, 24)}, bytes(16)))),
    Case(name="safetensors: float shape", status=422, code="invalid_model",
         message="shape [2.5, 2] must be a list of whole numbers", call=_model(
             "m.safetensors", bf.safetensors({"w": bf.f32_entry([2.5, 2], 0, 16)},
                                             bytes(16)))),
    Case(name="safetensors: negative shape", status=422, code="invalid_model",
         message="shape [-4]", call=_model(
             "m.safetensors", bf.safetensors({"w": bf.f32_entry([-4], 0, 16)}, bytes(16)))),
    Case(name="safetensors: shape bytes differ from the range", status=422,
         code="invalid_model", message="needs 12 bytes but its offsets [0, 16) hold 16",
         call=_model("m.safetensors", bf.safetensors({"w": bf.f32_entry([3], 0, 16)},
                                                     bytes(16)))),
    Case(name="safetensors: metadata value not a string", status=422, code="invalid_model",
         message="__metadata__['a'] is int", call=_model("m.safetensors", bf.safetensors(
             {"__metadata__": {"a": 1}, "w": bf.f32_entry([4], 0, 16)}, bytes(16)))),
    Case(name="safetensors: header at max_json_depth (past the depth check)", status=422,
         code="invalid_model", message="dtype None",
         call=_model("m.safetensors", bf.safetensors(b'{"x": ' + bf.nested_json(7) + b"}"))),
    Case(name="safetensors: header one level deeper", status=422, code="invalid_model",
         message="nests 9 levels deep; at most 8",
         call=_model("m.safetensors", bf.safetensors(b'{"x": ' + bf.nested_json(8) + b"}"))),
    Case(name="safetensors: header nested 250 deep", status=422, code="invalid_model",
         message="nests 250 levels deep", call=_model(
             "m.safetensors", bf.safetensors(b"[" * 250 + b"]" * 250))),
    Case(name="safetensors: header of 200 kB nested 100000 deep", status=413,
         code="payload_too_large", message="max_header_bytes", call=_model(
             "m.safetensors", bf.safetensors(b"[" * 100_000 + b"]" * 100_000))),
    Case(name="safetensors: header at max_header_bytes", status=201,
         call=_model("m.safetensors", bf.safetensors(_metadata_header(512)))),
    Case(name="safetensors: header one byte over", status=413, code="payload_too_large",
         message="max_header_bytes",
         call=_model("n.safetensors", bf.safetensors(_metadata_header(513)))),
    # --- ONNX models
    Case(name="onnx: tensor at max_array_bytes", status=201,
         call=_model("a.onnx", bf.onnx_with(bf.raw_tensor([32, 32], bytes(4096))))),
    Case(name="onnx: tensor one row over", status=413, code="payload_too_large",
         message="initializer 'fc0.weight' of graph declares dims [33, 32]",
         call=_model("b.onnx", bf.onnx_with(bf.raw_tensor([33, 32], bytes(4224))))),
    Case(name="onnx: dims 2**40", status=413, code="payload_too_large",
         message="dims [1048576, 1048576]",
         call=_model("c.onnx", bf.onnx_with(bf.raw_tensor([2**20, 2**20], b"")))),
    Case(name="onnx: dims whose product overflows int64", status=413,
         code="payload_too_large", message="over the limit",
         call=_model("d.onnx", bf.onnx_with(bf.raw_tensor([2**62, 2**62], b"")))),
    Case(name="onnx: negative dim", status=422, code="invalid_model",
         message="a negative dimension",
         call=_model("e.onnx", bf.onnx_with(bf.raw_tensor([-32, 16], b"")))),
    Case(name="onnx: data shorter than its dims", status=422, code="invalid_model",
         message="holds 8 bytes of data but dims [32, 16] need 2048",
         call=_model("f.onnx", bf.onnx_with(bf.raw_tensor([32, 16], bytes(8))))),
    Case(name="onnx: undefined element type", status=422, code="invalid_model",
         message="has element type 0, which ONNX does not define",
         call=_model("u.onnx", bf.onnx_with(bf.raw_tensor([32, 16], bytes(2048), data_type=0)))),
    Case(name="onnx: operator name not UTF-8", status=422, code="invalid_model",
         message="not valid UTF-8", call=_model("v.onnx", bf.onnx_with_undecodable_operator())),
    Case(name="onnx: external length past the limit", status=413, code="payload_too_large",
         message="max_array_bytes", call=_model("g.onnx", bf.onnx_with(
             bf.external_tensor([2**30, 2**10], length=str(2**42))))),
    Case(name="onnx: external length not the tensor's", status=422,
         code="unsafe_external_data", message="length=12 bytes",
         call=_model("h.onnx", bf.onnx_with(bf.external_tensor([32, 16], length="12")))),
    # --- datasets
    Case(name="dataset: 300-byte x.npy claiming (2**30, 1024)", status=413,
         code="payload_too_large", message="array 'x' declares shape (1073741824, 1024)",
         call=_dataset(bf.claiming_npz())),
    Case(name="dataset: member inflating past its zip header", status=422,
         code="invalid_dataset", message="Bad CRC-32", call=_dataset(bf.lying_npz(2000))),
    Case(name="dataset: deflate stream broken", status=422, code="invalid_dataset",
         message="Error -3 while decompressing", call=_dataset(bf.corrupt_deflate_npz())),
    # --- numbers in specs
    *[Case(name=f"json: {field} {value}", status=400, code="bad_request",
           message=f"{value.lstrip('-')}",
           call=_json(_spec_text(field, value, job=True)))
      for field in ("bits", "min_elements") for value in NON_FINITE],
    *[Case(name=f"multipart: {field} {value}", status=422, code="invalid_spec",
           message="form field 'spec' is not valid JSON",
           call=_multipart_job(_spec_text(field, value)))
      for field in ("bits", "min_elements") for value in NON_FINITE],
    Case(name="json: a 5000-digit number", status=400, code="bad_request",
         message="5000 digits", call=_json('{"model_id": "MODEL", "spec": {"bits": '
                                           + "9" * 5000 + "}}")),
    Case(name="json: bits 2.0 is a whole number", status=202,
         call=_json('{"model_id": "MODEL", "spec": {"bits": 2.0}}')),
    Case(name="json: min_elements 2**62+1", status=422, code="invalid_spec",
         message="must be between 0 and", call=_job(spec={"min_elements": 2**62 + 1})),
    # --- depth
    Case(name="json: body at max_json_depth (past the depth check)", status=422,
         code="invalid_spec", message="unknown field(s): x",
         call=_json(_spec_text("x", bf.nested_json(6).decode(), job=True))),
    Case(name="json: body one level deeper", status=400, code="bad_request",
         message="nests 9 levels deep; at most 8",
         call=_json(_spec_text("x", bf.nested_json(7).decode(), job=True))),
    Case(name="json: body nested 100000 deep", status=400, code="bad_request",
         message="nests 100000 levels deep", call=_json(b"[" * 100_000 + b"]" * 100_000)),
    Case(name="json: batch nested 5000 deep", status=400, code="bad_request",
         message="nests", call=_json(b'{"jobs": ' + bf.nested_json(5000) + b"}",
                                     "/v1/jobs/batch")),
    Case(name="multipart: spec nested 5000 deep", status=422, code="invalid_spec",
         message="form field 'spec' nests 5000 levels deep",
         call=_multipart_job(bf.nested_json(5000).decode())),
    # --- NUL
    Case(name="NUL in model_id", status=400, code="bad_request", message="at model_id",
         call=_json('{"model_id": "a\\u0000b"}')),
    Case(name="NUL in dataset_id of a batch", status=400, code="bad_request",
         message="jobs[1].dataset_id", call=_json(
             '{"jobs": [{"model_id": "MODEL"}, {"model_id": "MODEL", "dataset_id": "\\u0000"}]}',
             "/v1/jobs/batch")),
    Case(name="NUL in a spec pattern", status=400, code="bad_request",
         message="spec.include[0]", call=_json(
             '{"model_id": "MODEL", "spec": {"include": ["a\\u0000"]}}')),
    Case(name="NUL in a job id path", status=404, code="not_found", message="NUL",
         call=lambda w: w.client.get("/v1/jobs/a%00b")),
    Case(name="NUL in a model id path", status=404, code="not_found", message="NUL",
         call=lambda w: w.client.get("/v1/models/%00")),
    Case(name="NUL in an artifact name", status=404, code="not_found", message="NUL",
         call=lambda w: w.client.get(f"/v1/jobs/{w.job_id}/artifacts/a%00b")),
    Case(name="NUL in a query parameter", status=400, code="bad_request", message="%00",
         call=lambda w: w.client.get("/v1/jobs?model_id=a%00b")),
    Case(name="NUL in a cursor", status=400, code="bad_request", message="cursor",
         call=lambda w: w.client.get("/v1/jobs", params={"cursor": "eyJ0IjogIjIwMjYtMDEtMDFUMDA6"
                                                         "MDA6MDAiLCAiaSI6ICJcdTAwMDAifQ"})),
    Case(name="NUL in an Idempotency-Key", status=400, code="bad_request",
         message="idempotency-key", call=lambda w: w.client.post(
             "/v1/jobs", json={"model_id": w.model_id},
             headers={"Idempotency-Key": "a\x00b"})),
    Case(name="NUL in an upload's file name", status=400, code="bad_request",
         message="file name", call=_raw_multipart(b"m\x00.onnx")),
    # --- validated before queueing
    Case(name="search without a dataset (JSON)", status=422, code="invalid_dataset",
         message="needs an evaluation dataset", call=_job(kind="search")),
    Case(name="search without a dataset (multipart)", status=422, code="invalid_dataset",
         message="needs an evaluation dataset", call=_multipart_job("{}", kind="search")),
    Case(name="search without a dataset (batch)", status=422, code="invalid_dataset",
         message="needs an evaluation dataset", call=_batch({"kind": "search"})),
    Case(name="search with a dataset", status=202,
         call=_job(kind="search", dataset_id="DATASET")),
    Case(name="dataset that does not fit (JSON)", status=422, code="invalid_dataset",
         message="dimension 1 is 15", call=lambda w: w.client.post("/v1/jobs", json={
             "model_id": w.model_id, "dataset_id": w.client.post(
                 "/v1/datasets", files={"file": ("x15.npz", _evalset(x=X[:, :15]))}
             ).json()["id"]})),
    Case(name="dataset that does not fit (multipart)", status=422, code="invalid_dataset",
         message="dtype int64 does not fit",
         call=_multipart_job("{}", dataset=_evalset(x=np.zeros((8, 16), np.int64)))),
    Case(name="dataset that does not fit (batch names the job)", status=422,
         code="invalid_dataset", message="jobs[1]: labels: 12 is out of range",
         call=lambda w: w.client.post("/v1/jobs/batch", json={"jobs": [
             {"model_id": w.model_id},
             {"model_id": w.model_id, "kind": "sweep", "spec": {"grid": {"bits": [2]}},
              "dataset_id": w.client.post("/v1/datasets", files={"file": (
                  "l.npz", _evalset(x=X, labels=np.arange(8) + 5))}).json()["id"]}]})),
    Case(name="sweep whose spec cannot parse", status=422, code="invalid_spec",
         message="unknown field(s): points",
         call=_job(kind="sweep", spec={"grid": {"bits": [2]}, "points": 1})),
    Case(name="sweep of 10**15 points", status=422, code="invalid_spec",
         message="1000000000000000 points", call=_job(kind="sweep", spec={"grid": {
             k: list(range(1000)) for k in ("bits", "method", "granularity", "rounding",
                                            "deadzone_ratio")}})),
    Case(name="sweep as multipart", status=202,
         call=_multipart_job('{"grid": {"bits": [2, 3]}}', kind="sweep")),
    # --- patterns
    Case(name="pattern with a backreference", status=422, code="invalid_spec",
         message="no backreferences or lookaround",
         call=_job(spec={"include": ["(a)\\1"]})),
    Case(name="ReDoS pattern is accepted (RE2 matches in linear time)", status=202,
         call=_job(spec={"include": ["^(a+)+$"], "exclude": ["(x+x+)+y"]})),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(world: World, case: Case) -> None:
    started = time.monotonic()
    r = case.call(world)
    assert time.monotonic() - started < 30
    assert r.status_code == case.status, r.text
    if case.code is None:
        return
    error = r.json()["error"]
    assert error["code"] == case.code, error
    assert case.message in error["message"], error


def test_a_stored_sweep_spec_is_what_the_worker_parses(world: World) -> None:
    spec = {"base": {"bits": 4}, "grid": {"method": ["uniform", "deadzone"]}}
    r = world.client.post("/v1/jobs", json={"model_id": world.model_id, "kind": "sweep",
                                            "spec": spec})
    assert r.status_code == 202, r.text
    assert r.json()["spec"] == spec
    from quantcore import JobKind, validate_job

    assert validate_job(JobKind.SWEEP, r.json()["spec"]) == spec


def test_json_bodies_keep_their_numbers(world: World) -> None:
    body = json.dumps({"model_id": world.model_id, "spec": {"bits": 5, "mu": 1e-3}})
    r = world.client.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 202, r.text
    assert (r.json()["spec"]["bits"], r.json()["spec"]["mu"]) == (5, 1e-3)
