"""One server factory: open_server builds the parts every front door uses; close() unloads them all."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from tests.helpers.addition import pack_addition

from modelpod.serving.asgi import create_app
from modelpod.serving.factory import open_server
from modelpod.serving.http.messages import Request
from modelpod.serving.settings import ModelSettings

BODY = json.dumps({"inputs": [{"name": n, "datatype": "FP32", "shape": [2], "data": [1, 2]} for n in "xy"]})


def process_repository(root: Path) -> Path:
    """A repository whose one model runs in a worker process (so closing it must end a process)."""
    pack_addition(root / "repo" / "addition" / "1")
    (root / "repo" / "addition" / "serving.json").write_text(json.dumps({"metadata": {"worker": "process"}}))
    return root / "repo"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def worker_pids(parts: Any) -> list[int]:
    return [w.pid for served in parts.repository.all() for w in served._workers if w.pid is not None]


def test_open_server_wires_every_part_and_close_ends_worker_processes(tmp_path: Path) -> None:
    async def main() -> tuple[list[int], list[str]]:
        parts = await open_server(process_repository(tmp_path), model_defaults=ModelSettings(timeout_ms=9000))
        served = list(parts.repository.all())
        assert [s.settings.worker for s in served] == ["process"] and served[0].settings.timeout_ms == 9000
        assert parts.manager.repository is parts.repository and parts.ctx.repository is parts.repository
        response = await parts.app.dispatch(Request("POST", "/v2/models/addition/infer", body=BODY.encode()))
        assert response.status == 200, response.body
        pids = worker_pids(parts)
        assert pids and all(alive(p) for p in pids)
        await parts.close()
        await parts.close()  # idempotent
        return pids, [s.state for s in served]

    pids, states = asyncio.run(main())
    assert states == ["END"] and not any(alive(p) for p in pids)


def test_the_asgi_app_loads_on_lifespan_startup_and_closes_models_on_shutdown(tmp_path: Path) -> None:
    app = create_app(process_repository(tmp_path))

    async def main() -> tuple[list[dict], list[int]]:
        inbox: asyncio.Queue = asyncio.Queue()
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        lifespan = asyncio.create_task(app({"type": "lifespan"}, inbox.get, send))
        await inbox.put({"type": "lifespan.startup"})
        while not sent:
            await asyncio.sleep(0.01)
        assert app.parts is not None
        pids = worker_pids(app.parts)
        assert pids and all(alive(p) for p in pids)
        await inbox.put({"type": "lifespan.shutdown"})
        await lifespan
        return sent, pids

    sent, pids = asyncio.run(main())
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert app.parts is None and not any(alive(p) for p in pids)


def test_a_failed_lifespan_startup_is_reported_to_the_asgi_server(tmp_path: Path) -> None:
    app = create_app(tmp_path / "nothing-here")

    async def main() -> list[dict]:
        sent: list[dict] = []
        inbox: asyncio.Queue = asyncio.Queue()
        await inbox.put({"type": "lifespan.startup"})

        async def send(message: dict) -> None:
            sent.append(message)

        await app({"type": "lifespan"}, inbox.get, send)
        return sent

    (message,) = asyncio.run(main())
    assert message["type"] == "lifespan.startup.failed" and "nothing-here" in message["message"]


def test_a_model_s_transport_setting_is_what_its_metadata_announces(tmp_path: Path) -> None:
    pack_addition(tmp_path / "repo" / "addition" / "1")
    (tmp_path / "repo" / "addition" / "serving.json").write_text(
        json.dumps({"metadata": {"transport": {"out": "float16"}}}))

    async def main() -> dict:
        parts = await open_server(tmp_path / "repo")
        try:
            response = parts.app.dispatch(Request("GET", "/v2/models/addition"))
            return json.loads(response.body)
        finally:
            await parts.close()

    assert asyncio.run(main())["parameters"] == {"transport": {"out": "float16"}}
