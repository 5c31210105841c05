"""A model that failed to load, as the dashboard shows it in a real headless browser: its row is
FAILED with the reason under the state, and the events carry a "load failed" line with the reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers.addition import pack_addition
from tests.helpers.packages import VANISHING_MODULE, pack_import_fails

sync_api = pytest.importorskip("playwright.sync_api")  # part of the dev extra; this guards a bare venv

pytestmark = pytest.mark.timeout(180)


def test_a_model_that_failed_to_load_shows_failed_with_its_reason(tmp_path: Path, serve_factory) -> None:
    repo = tmp_path / "repo"
    pack_addition(repo / "addition" / "1")
    pack_import_fails(repo / "broken" / "1")
    server = serve_factory(repo, "--grpc-port", "-1", wait_ready=False)
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: `make test` installs it (apt-get install chromium)"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.goto(f"{server.url}/ui")
            row = "#models tbody tr[data-model='broken']"
            page.wait_for_selector(row)
            assert page.text_content(f"{row} .state") == "FAILED"
            reason = page.text_content(f"{row} .reason")
            assert reason.startswith("load failed: ImportError: packaged module 'main' could not be imported")
            assert f"no module named '{VANISHING_MODULE}'" in reason
            assert page.text_content("#models tbody tr[data-model='addition'] .state") == "READY"
            event = "#events tbody tr[data-kind='load failed']"
            page.wait_for_selector(event)
            cells = page.eval_on_selector(event, "r => Array.from(r.cells).map(c => c.textContent)")
            assert cells[1:] == ["broken", "1", "load failed", reason]
        finally:
            browser.close()
