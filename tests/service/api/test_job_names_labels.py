"""Job names and labels: given in JSON, multipart and batch submissions, validated, and
filtered on in GET /v1/jobs with kind, label and text."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from tests.service.helpers import mlp_bytes, upload_model


def _submit(client: TestClient, model_id: str, **extra: object) -> dict:
    r = client.post("/v1/jobs", json={"model_id": model_id, "spec": {"bits": 4}, **extra})
    assert r.status_code == 202, r.text
    return r.json()


def test_name_and_labels_are_kept_and_shown(client: TestClient) -> None:
    model = upload_model(client)
    job = _submit(client, model["id"], name="ResNet nightly", labels={"team": "vision",
                                                                         "commit": "abc123"})
    assert job["name"] == "ResNet nightly" and job["labels"] == {"team": "vision",
                                                                "commit": "abc123"}
    assert client.get(f"/v1/jobs/{job['id']}").json()["labels"]["commit"] == "abc123"
    bare = _submit(client, model["id"])
    assert bare["name"] is None and bare["labels"] == {} and bare["callback_url"] is None


def test_multipart_and_batch_take_them_too(client: TestClient) -> None:
    r = client.post("/v1/jobs", files={"model": ("m.onnx", mlp_bytes(seed=3))},
                    data={"spec": '{"bits": 5}', "name": "from a form",
                          "labels": json.dumps({"source": "portal"})})
    assert r.status_code == 202, r.text
    assert r.json()["name"] == "from a form" and r.json()["labels"] == {"source": "portal"}
    r = client.post("/v1/jobs", files={"model": ("m.onnx", mlp_bytes(seed=3))},
                    data={"labels": "{not json"})
    assert r.status_code == 422 and "labels" in r.json()["error"]["message"]
    model_id = upload_model(client)["id"]
    r = client.post("/v1/jobs/batch", json={"jobs": [
        {"model_id": model_id, "name": f"point {i}", "labels": {"sweep": "s1"}} for i in range(2)
    ]})
    assert r.status_code == 202
    assert [j["name"] for j in r.json()["data"]] == ["point 0", "point 1"]


def test_bad_names_and_labels_are_422(client: TestClient) -> None:
    model_id = upload_model(client)["id"]
    for extra in ({"labels": {"-starts-badly": "x"}}, {"labels": {"a": "x" * 201}},
                  {"labels": {f"k{i}": "v" for i in range(33)}}, {"name": ""},
                  {"name": "n" * 201}, {"labels": {"k": "line\nbreak"}}, {"labels": ["a"]}):
        r = client.post("/v1/jobs", json={"model_id": model_id, **extra})
        assert r.status_code == 422, extra
        assert r.json()["error"]["code"] == "invalid_request"


def test_list_filters_by_label_kind_and_text(client: TestClient) -> None:
    model_id = upload_model(client)["id"]
    a = _submit(client, model_id, name="Vision nightly", labels={"team": "vision", "env": "ci"})
    b = _submit(client, model_id, name="NLP weekly", labels={"team": "nlp"})
    c = client.post("/v1/jobs", json={"model_id": model_id, "kind": "sweep", "name": "grid",
                                      "spec": {"grid": {"bits": [3, 4]}}}).json()

    def ids(query: str) -> list[str]:
        r = client.get(f"/v1/jobs?{query}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["count"] == len(body["data"])
        return [j["id"] for j in body["data"]]

    assert ids("label=team=vision") == [a["id"]]
    assert ids("label=team") == [b["id"], a["id"]]
    assert ids("label=team=vision&label=env=ci") == [a["id"]]
    assert ids("label=team=vision&label=env=prod") == []
    assert ids("label=nothere") == []
    assert ids("kind=sweep") == [c["id"]]
    assert ids("kind=quantize&label=team") == [b["id"], a["id"]]
    assert ids("q=NIGHTLY") == [a["id"]]
    assert ids(f"q={b['id'][:10]}") == [b["id"]]
    assert ids("q=%25") == []  # LIKE wildcards are text here
    assert ids("status=queued&q=ly") == [b["id"], a["id"]]
    r = client.get("/v1/jobs?label=-bad")
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    assert client.get("/v1/jobs?kind=nope").status_code == 422


def test_filters_hold_across_pages(client: TestClient) -> None:
    model_id = upload_model(client)["id"]
    made = [_submit(client, model_id, labels={"batch": "b1" if i % 2 else "b2"})["id"]
            for i in range(7)]
    seen: list[str] = []
    cursor = None
    while True:
        query = "label=batch=b1&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(f"/v1/jobs?{query}").json()
        assert page["count"] == 3
        seen += [j["id"] for j in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [made[i] for i in (5, 3, 1)]
