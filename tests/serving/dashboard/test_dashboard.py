"""The dashboard at /ui in a real headless browser (Debian's chromium driven by Playwright).

One server with a token serves a repository under ``--watch``: the page asks for the token, lists
the models the repository index lists, answers a try-it call with the model's numbers, its charts
move while a client sends load, and a package swapped on disk shows up as an event.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.addition import pack_addition
from tests.helpers.packages import pack_scaled
from tests.helpers.sched_models import wait_until
from tests.helpers.servers import RunningServer, module_server

sync_api = pytest.importorskip("playwright.sync_api")  # part of the dev extra; this guards a bare venv

pytestmark = pytest.mark.timeout(180)
TOKEN = "dash-secret"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("dash") / "repo"
    pack_addition(repo / "addition" / "1")
    pack_scaled(repo / "scaled" / "1", 2)
    return repo


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from module_server(tmp_path_factory, repo, "--token", TOKEN, "--watch", "--watch-interval", "0.3")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: `make test` installs it (apt-get install chromium)"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture()
def page(browser: object, server: RunningServer) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        yield page
    finally:
        context.close()


def log_in(page: object, server: RunningServer) -> None:
    page.goto(f"{server.url}/ui")  # type: ignore[attr-defined]
    page.fill("#token", TOKEN)  # type: ignore[attr-defined]
    page.click("#login-form button")  # type: ignore[attr-defined]
    page.wait_for_selector("#models tbody tr")  # type: ignore[attr-defined]


def test_the_token_gate(page: object, server: RunningServer) -> None:
    assert httpx.get(f"{server.url}/ui/api/overview").status_code == 401  # the data needs the token
    assert httpx.get(f"{server.url}/ui/api/models/addition").status_code == 401
    page.goto(f"{server.url}/ui")
    page.wait_for_selector("#login-form", state="visible")
    assert not page.is_visible("#main")
    page.fill("#token", "wrong")
    page.click("#login-form button")
    page.wait_for_selector("#login-error:has-text('refused')")
    assert not page.is_visible("#main")
    page.fill("#token", TOKEN)
    page.click("#login-form button")
    page.wait_for_selector("#main", state="visible")
    page.reload()  # the token is kept for the browser session
    page.wait_for_selector("#main", state="visible")
    page.click("#logout")
    page.wait_for_selector("#login-form", state="visible")


def test_the_models_table_matches_the_repository(page: object, server: RunningServer) -> None:
    log_in(page, server)
    index = httpx.post(f"{server.url}/v2/repository/index", headers=AUTH).json()
    rows = page.eval_on_selector_all(
        "#models tbody tr", "rows => rows.map(r => [r.dataset.model, r.dataset.version, "
                            "r.querySelector('.state').textContent])")
    assert sorted(map(tuple, rows)) == sorted((e["name"], e["version"], e["state"]) for e in index)
    assert page.text_content("#models tbody tr[data-model='addition'] td:nth-child(4)") == "python"


def test_try_it_returns_the_models_answer(page: object, server: RunningServer) -> None:
    log_in(page, server)
    page.click("#models tbody tr[data-model='addition']")
    page.wait_for_selector("#detail-name:has-text('addition')")
    page.wait_for_selector("#try-inputs textarea[name='y']")
    page.fill("#try-inputs textarea[name='x']", "[1, 2.5, 3]")
    page.fill("#try-inputs textarea[name='y']", "[10, 20, 30]")
    page.click("#try-form button")
    page.wait_for_selector("#try-result[data-status]")
    assert page.text_content("#try-result") == "out FP32 [3]: [11,22.5,33]"
    page.fill("#try-inputs textarea[name='y']", "[10, 20]")  # a symbol mismatch: the server's 400 message
    page.click("#try-form button")
    page.wait_for_selector("#try-result[data-status='400']")
    assert "num_inputs" in page.text_content("#try-result")
    spec = page.eval_on_selector_all("#spec tbody tr", "rows => rows.map(r => r.textContent)")
    assert spec == ["inxFP32[num_inputs]", "inyFP32[num_inputs]", "outoutFP32[num_inputs]"]
    page.wait_for_selector("#errors tbody tr")  # the 400 among the recent errors
    assert "num_inputs" in page.text_content("#errors tbody")


def test_charts_move_under_load(page: object, server: RunningServer, tmp_path: Path) -> None:
    log_in(page, server)
    page.click("#models tbody tr[data-model='scaled']")
    page.wait_for_selector("#chart-rps")
    stop = threading.Event()
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}]}

    def load() -> None:
        with httpx.Client(headers=AUTH) as client:
            while not stop.is_set():
                client.post(f"{server.url}/v2/models/scaled/infer", json=body)

    sender = threading.Thread(target=load, daemon=True)
    sender.start()
    try:
        wait_until(lambda: float(page.get_attribute("#chart-rps", "data-max") or 0) > 10, "the rps chart to rise")
        wait_until(lambda: float(page.get_attribute("#chart-latency", "data-max") or 0) > 0, "latency points")
        assert page.eval_on_selector("#chart-rps svg polyline", "p => p.getAttribute('points').split(' ').length") > 1
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        assert (tmp_path / "dashboard.png").stat().st_size > 0
    finally:
        stop.set()
        sender.join(10)


def test_a_swap_shows_up_in_events(page: object, server: RunningServer, repo: Path) -> None:
    log_in(page, server)
    pack_scaled(repo / "scaled" / "1", 3)  # a new package in place: --watch swaps it in
    wait_until(lambda: page.query_selector("#events tr[data-kind='replaced'] td:has-text('scaled')"),
               "the swap among the events")
    answer = httpx.post(f"{server.url}/v2/models/scaled/infer", headers=AUTH, json={
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]})
    assert answer.json()["outputs"][0]["data"] == [3.0]
    kinds = page.eval_on_selector_all("#events tbody tr", "rows => rows.map(r => r.dataset.kind)")
    assert kinds.count("loaded") == 2  # both models at start, oldest last


def test_static_files_ship_in_the_package_and_ask_no_cdn(server: RunningServer) -> None:
    for path in ("/ui", "/ui/app.js", "/ui/style.css"):
        answer = httpx.get(f"{server.url}{path}")
        assert answer.status_code == 200 and "http://" not in answer.text.replace("http://www.w3.org", "")
        assert "https://" not in answer.text
    assert httpx.get(f"{server.url}/ui/nope").status_code == 404
    assert httpx.post(f"{server.url}/ui/api/overview", headers=AUTH).status_code == 405
    overview = httpx.get(f"{server.url}/ui/api/overview", headers=AUTH).json()
    assert json.dumps(overview)  # plain JSON
    assert {m["name"] for m in overview["models"]} == {"addition", "scaled"}
