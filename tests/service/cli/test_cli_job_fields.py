"""``quantserve submit --name --label --callback-url``: what the client sends."""

from __future__ import annotations

import json

import httpx
import pytest

from service.cli.client import Client
from service.cli.remote import _labels


def test_submit_sends_name_labels_and_callback() -> None:
    sent: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(202, json={"id": "j", "status": "queued"})

    with Client("http://quantserve.test", transport=httpx.MockTransport(handler)) as client:
        client.submit(model_id="m", spec={}, name="nightly", labels={"team": "vision"},
                      callback_url="https://ci.example.com/hook")
        client.submit(model_id="m", spec={})
    assert sent == [
        {"model_id": "m", "spec": {}, "name": "nightly", "labels": {"team": "vision"},
         "callback_url": "https://ci.example.com/hook"},
        {"model_id": "m", "spec": {}},
    ]


def test_label_options() -> None:
    assert _labels(["team=vision", "commit=abc=1", "empty="]) == {
        "team": "vision", "commit": "abc=1", "empty": ""}
    with pytest.raises(ValueError, match="key=value"):
        _labels(["novalue"])
