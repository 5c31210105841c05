"""The app resolves each request path once and keeps the route: the kept routes stay bounded
however many distinct paths clients send, and answers stay right after the cache starts over.

In process, on a real loaded package (the HTTP side of these routes is tested on the real server
in test_serve_*.py).
"""

from __future__ import annotations

import asyncio

from pathlib import Path

import orjson
import pytest
from tests.helpers.addition import pack_addition

from modelpod.serving import app as app_module
from modelpod.serving.app import ServerApp
from modelpod.serving.factory import open_server
from modelpod.serving.http.messages import Request, Response

pytestmark = pytest.mark.timeout(60)

BODY = orjson.dumps({"inputs": [
    {"name": "x", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0]},
    {"name": "y", "datatype": "FP32", "shape": [2], "data": [3.0, 4.0]},
]})


@pytest.fixture
def app(tmp_path: Path) -> ServerApp:
    """The app as every server builds it (:func:`open_server`), closed after the test."""
    parts = asyncio.run(open_server(pack_addition(tmp_path / "addition")))
    yield parts.app
    asyncio.run(parts.close())


def infer(app: ServerApp) -> Response:
    response = app.dispatch(Request("POST", "/v2/models/addition/infer", body=BODY))
    assert isinstance(response, Response)
    return response


def test_kept_routes_stay_bounded_and_answers_stay_right(app: ServerApp, monkeypatch) -> None:
    monkeypatch.setattr(app_module, "ROUTE_CACHE_SIZE", 8)
    assert orjson.loads(infer(app).body)["outputs"][0]["data"] == [4.0, 6.0]
    for i in range(50):
        response = app.dispatch(Request("GET", f"/v2/models/m{i}/versions/{i}"))
        assert response.status == 404 and f"unknown model: 'm{i}'" in orjson.loads(response.body)["error"]
        assert len(app._routes) <= 8
        assert infer(app).status == 200
    assert orjson.loads(infer(app).body)["outputs"][0]["data"] == [4.0, 6.0]


def test_one_path_one_route_whatever_the_method(app: ServerApp) -> None:
    """The route depends on the path alone: a GET on the infer path is still answered as v2 (405)."""
    assert infer(app).status == 200
    response = app.dispatch(Request("GET", "/v2/models/addition/infer"))
    assert response.status == 405 and "POST" in orjson.loads(response.body)["error"]
    assert infer(app).status == 200
    assert list(app._routes) == ["/v2/models/addition/infer"]
