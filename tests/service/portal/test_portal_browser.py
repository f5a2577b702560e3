"""The portal in a real browser (Debian's Chromium, headless, driven by Playwright) against
``quantserve serve`` (API and worker) with authentication on:

sign in with a team's key, submit a model from the form (after the page shows the API's own
message for a bad value), watch the job succeed live, read the report inline, find the job
in the list and in a comparison with a search, fail to see another team's job, and check
that no page asks anything of another host and that every control has a label, at 1400 px
and at a phone's width.

Set ``QUANTSERVE_SCREENSHOTS=<folder>`` to keep screenshots of the pages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest

from service.cli.client import Client
from service.store.db import Database
from service.store.keys import KeysRepo
from tests import models
from tests.workers.conftest import embedded_env
from tests.workers.services import Service

pytestmark = pytest.mark.slow

WIDE = {"width": 1400, "height": 1000}
PHONE = {"width": 390, "height": 844}

# Every control's accessible name, computed the way the page states it (hidden inputs aside).
UNLABELLED_JS = """() => Array.from(document.querySelectorAll(
    'input:not([type=hidden]), select, textarea, button, a[href]')).filter((el) => {
  if (el.closest('[hidden]')) return false;
  const named = (el.labels && el.labels.length) || el.getAttribute('aria-label')
    || el.getAttribute('aria-labelledby') || (el.textContent || '').trim();
  return !named;
}).map((el) => el.outerHTML.slice(0, 120))"""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A scikit-learn MLP on the digits (converted with zipmap False) and its evaluation set."""
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("portal-files")
    model, x = models.sklearn_mlp()
    onnx.save(model, folder / "digits.onnx")
    np.savez(folder / "eval.npz", X=x[:300], labels=load_digits().target[:300].astype(np.int64))
    return {"model": folder / "digits.onnx", "dataset": folder / "eval.npz"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    folder = tmp_path_factory.mktemp("portal-service")
    env = {**embedded_env(folder), "QUANTSERVE_AUTH_ENABLED": "true",
           "QUANTSERVE_EVENTS_POLL_INTERVAL_S": "0.2"}
    service = Service(env, folder)
    try:
        service.start_api(with_worker=True)
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def keys(service: Service) -> dict[str, str]:
    """One key per team, as ``quantserve create-key`` issues them."""
    done = subprocess.run([sys.executable, "-m", "service.cli", "create-key", "--team", "vision"],
                          env=service.env, capture_output=True, text=True, check=True, timeout=60)
    db = Database(service.env["QUANTSERVE_DATABASE_URL"])
    try:
        return {"vision": str(json.loads(done.stdout)["key"]),
                "nlp": KeysRepo(db).issue(team="nlp").key}
    finally:
        db.dispose()


def _run(service: Service, key: str, model: Path, *, dataset: Path | None = None,
         **job: Any) -> dict[str, Any]:
    """Upload and submit through the CLI's client, and wait for the job."""
    with Client(service.url, api_key=key) as client:
        model_id = client.upload_model(model)["id"]
        body: dict[str, Any] = {"model_id": model_id, **job}
        if dataset is not None:
            body["dataset_id"] = client.upload_dataset(dataset)["id"]
        submitted = client.http.post("/v1/jobs", json=body).json()
        final = client.wait(submitted["id"], timeout_s=120)
    assert final["status"] == "succeeded", final
    return final


class Pages:
    """A browser context signed in (or not), recording every request it makes."""

    def __init__(self, browser: Any, base: str, viewport: dict[str, int],
                 storage_state: Any = None) -> None:
        self.base = base
        self.context = browser.new_context(viewport=viewport, storage_state=storage_state)
        self.requests: list[str] = []
        self.context.on("request", lambda request: self.requests.append(request.url))
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def go(self, path: str) -> Any:
        self.page.goto(self.base + path)
        self.page.wait_for_load_state("load")
        return self.page

    def outside(self) -> list[str]:
        own = (self.base + "/", f"blob:{self.base}/", "data:", "about:")
        return [u for u in self.requests if not u.startswith(own)]

    def shot(self, name: str) -> None:
        folder = os.environ.get("QUANTSERVE_SCREENSHOTS")
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()


def _sign_in(pages: Pages, key: str) -> None:
    page = pages.go("/ui/")
    assert "/ui/login" in page.url  # a page of the portal asks for a key first
    page.get_by_label("API key").fill("qs_not_a_key")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == \
        "That API key is not valid (unknown or revoked)."
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(pages.base + "/ui/")


def test_the_portal_end_to_end(browser: Any, service: Service, keys: dict[str, str],
                               files: dict[str, Path]) -> None:
    wide = Pages(browser, service.url, WIDE)
    try:
        _sign_in(wide, keys["vision"])
        page = wide.page

        # --- submit from the form, after a value the API refuses ----------------------------
        page.get_by_role("link", name="New job").first.click()
        page.wait_for_url("**/ui/new")
        page.get_by_label("Model file").set_input_files(str(files["model"]))
        page.get_by_label("Evaluation set").set_input_files(str(files["dataset"]))
        page.get_by_label("Job kind").select_option("quantize")
        page.get_by_label("Name").fill("digits 4-bit")
        page.get_by_label("Labels").fill("team=vision, commit=abc123")
        bits = page.get_by_label("Bits", exact=True)
        bits.fill("40")
        api_message = httpx.post(f"{service.url}/v1/quantizers/check",
                                 headers={"X-API-Key": keys["vision"]},
                                 json={"spec": {"bits": 40}}).json()["error"]["message"]
        error = page.locator("#f-bits-error")
        error.wait_for(state="visible")
        assert error.inner_text() == api_message == "bits=40 must be between 1 and 16"
        assert bits.get_attribute("aria-invalid") == "true"
        page.get_by_label("Job kind").select_option("sweep")  # the form builds a sweep's spec
        page.get_by_label("Sweep bits").fill("3, 4")
        bits.fill("4")
        page.locator("summary", has_text="Spec to send").click()
        page.wait_for_function(
            "() => (JSON.parse(document.getElementById('spec-preview').textContent).base "
            "|| {}).bits === 4")
        assert json.loads(page.locator("#spec-preview").inner_text()) == \
            {"base": {"bits": 4}, "grid": {"bits": [3, 4]}}
        assert page.get_by_label("Largest top-1 drop").is_hidden()
        page.get_by_label("Job kind").select_option("quantize")
        page.wait_for_function("() => !document.getElementById('f-bits-error').textContent")
        assert not wide.outside()
        unlabelled = page.evaluate(UNLABELLED_JS)
        assert unlabelled == [], unlabelled
        wide.shot("portal-new")
        page.get_by_role("button", name="Submit").click()

        # --- the job's page: live until it succeeds, then the report inline -----------------
        page.wait_for_url("**/ui/jobs/*")
        job_id = page.url.rsplit("/", 1)[1]
        page.locator("#job-status", has_text="succeeded").wait_for(timeout=120_000)
        page.wait_for_load_state("load")
        assert page.get_by_role("heading", name="digits 4-bit").is_visible()
        report = page.frame_locator("#report-frame")
        assert report.locator("h1").first.inner_text() == "Quantization report (quantize)"
        assert report.locator("svg").count() >= 1  # the figures
        assert report.locator("table").count() >= 3  # summary, accuracy, layers ...
        summary = page.get_by_role("table").first.inner_text()
        assert "Size ratio" in summary and "Top-1 drop" in summary
        assert page.get_by_role("link", name="model.qpack").get_attribute("href") == \
            f"/v1/jobs/{job_id}/artifacts/model.qpack"
        download = page.request.get(f"{service.url}/v1/jobs/{job_id}/artifacts/model.qpack")
        assert download.status == 200 and len(download.body()) > 0  # the session cookie works
        wide.shot("portal-job")

        # --- a search through the API, then the list and the comparison ----------------------
        search = _run(service, keys["vision"], files["model"], dataset=files["dataset"],
                      kind="search", name="digits search", spec={"max_top1_drop": 0.02},
                      labels={"team": "vision", "kind": "search"})
        other = _run(service, keys["nlp"], files["model"], name="nlp private job")
        page = wide.go("/ui/")
        table = page.locator("table.jobs")
        table.get_by_role("link", name="digits 4-bit").wait_for()
        assert table.get_by_role("link", name="digits search").is_visible()
        assert "nlp private job" not in table.inner_text()  # another team's job
        row = page.locator(f"tr[data-id='{job_id}']").inner_text()
        assert "uniform, 4 bits" in row and "digits.onnx" in row and "commit=abc123" in row
        page.get_by_label("Label").fill("kind=search")
        page.get_by_role("button", name="Filter").click()
        page.wait_for_url("**label=kind*")
        assert page.locator("table.jobs tbody tr").count() == 1
        page = wide.go("/ui/?q=4-BIT")
        assert page.locator("table.jobs tbody tr").count() == 1
        page = wide.go("/ui/")
        wide.shot("portal-jobs")
        page.get_by_label("Select digits 4-bit for comparison").check()
        page.get_by_label("Select digits search for comparison").check()
        page.get_by_role("button", name="Compare selected").click()
        page.wait_for_url("**/ui/compare?*")
        compared = page.get_by_role("table").first.inner_text()
        assert "digits 4-bit" in compared and "digits search" in compared
        assert "chose uniform" in compared and "SQNR" in compared
        figures = page.locator("figure svg[role=img]")
        assert figures.count() == 2
        assert figures.first.get_attribute("aria-label") == \
            "Weight SQNR against entropy bits per weight"
        assert page.locator("figure circle").count() > 2  # the search's path, the quantize point
        page.get_by_text("The search's own figures: digits search").click()
        assert page.frame_locator("details iframe").locator("h1").first.inner_text() == \
            "Quantization report (search)"
        wide.shot("portal-compare")

        # --- another team's job is nowhere to be had -----------------------------------------
        page = wide.go(f"/ui/jobs/{other['id']}")
        assert page.get_by_role("heading", name="Not found").is_visible()
        assert page.request.get(f"{service.url}/v1/jobs/{other['id']}").status == 404
        assert page.request.get(f"{service.url}/v1/jobs/{search['id']}").status == 200

        # --- run again with changes: the form starts from the job -----------------------------
        page = wide.go(f"/ui/jobs/{job_id}")
        page.get_by_role("link", name="Run again with changes").click()
        page.wait_for_url(f"**/ui/new?from={job_id}")
        assert page.get_by_label("Bits", exact=True).input_value() == "4"
        assert page.get_by_label("Name").input_value() == "digits 4-bit"
        page.get_by_label("Bits", exact=True).fill("6")
        page.get_by_label("Name").fill("digits 6-bit")
        page.get_by_role("button", name="Submit").click()
        page.wait_for_url("**/ui/jobs/*")
        page.locator("#job-status", has_text="succeeded").wait_for(timeout=120_000)
        again = page.url.rsplit("/", 1)[1]
        job = page.request.get(f"{service.url}/v1/jobs/{again}").json()
        first = page.request.get(f"{service.url}/v1/jobs/{job_id}").json()
        assert job["spec"]["bits"] == 6 and job["model_id"] == first["model_id"]
        assert job["dataset_id"] == first["dataset_id"]

        # --- the API docs load only the service's files --------------------------------------
        page = wide.go("/docs")
        page.locator(".swagger-ui .info").wait_for()
        page = wide.go("/redoc")
        page.get_by_role("heading", name="Submit a job").first.wait_for()

        assert not wide.outside(), wide.outside()
        assert not wide.errors, wide.errors

        # --- a phone's width: every page fits, nothing unlabelled ----------------------------
        phone = Pages(browser, service.url, PHONE, storage_state=wide.context.storage_state())
        try:
            for path in ("/ui/", f"/ui/jobs/{job_id}", "/ui/new",
                         f"/ui/compare?id={job_id}&id={search['id']}"):
                page = phone.go(path)
                width = page.evaluate("document.documentElement.scrollWidth")
                assert width <= PHONE["width"], (path, width)
                assert page.evaluate(UNLABELLED_JS) == [], path
            phone.go(f"/ui/jobs/{job_id}")
            phone.shot("portal-job-phone")
            assert not phone.outside(), phone.outside()
        finally:
            phone.close()

        # --- signing out ends the session -----------------------------------------------------
        page = wide.go("/ui/")
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url("**/ui/login")
        assert page.request.get(f"{service.url}/v1/jobs").status == 401
        assert "/ui/login" in wide.go("/ui/").url
    finally:
        wide.close()
