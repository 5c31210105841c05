"""Settings changes a load asks for (a v2 config override): applied, kept across ``--watch`` reloads,
dropped by a load without any or an unload, and a refused one changes nothing. Drives the real
ModelManager on a real repository folder."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from modelpod.errors import ServeError
from modelpod.serving.models.lifecycle import ModelManager
from modelpod.serving.models.repository import Repository
from tests.helpers.image_models import pack_image

pytestmark = pytest.mark.timeout(120)


def test_load_changes_are_kept_until_a_plain_load(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    pack_image(repo / "image" / "1")
    (repo / "image" / "serving.json").write_text(json.dumps({"metadata": {"max_batch_size": 4,
                                                                        "max_batch_delay_ms": 2}}))

    def refuse(entry):
        raise ValueError("no such thing")

    async def scenario() -> None:
        repository = Repository()
        manager = ModelManager(repo, repository)
        await manager.load_all()
        try:
            def settings():
                return repository.get("image").settings

            await manager.load("image", lambda entry: {"batching": {"max_batch_size": 16}, "instances": 2})
            assert settings().batching.max_batch_size == 16 and settings().instances == 2
            assert settings().batching.max_batch_delay_ms == 2  # what the override leaves out stays
            with pytest.raises(ServeError) as info:
                await manager.load("image", refuse)
            assert str(info.value) == "failed to load 'image': no such thing"
            assert settings().batching.max_batch_size == 16  # refused: nothing changed
            manifest = repo / "image" / "1" / "modelpod.json"  # a new mtime: a new fingerprint, --watch reloads
            os.utime(manifest, ns=(manifest.stat().st_atime_ns, manifest.stat().st_mtime_ns + 10**9))
            before = repository.get("image")
            await manager.sync()
            assert repository.get("image") is not before and settings().batching.max_batch_size == 16
            await manager.load("image")  # a load without changes: back to serving.json
            assert settings().batching.max_batch_size == 4 and settings().instances == 1
            await manager.load("image", lambda entry: {"batching": {"max_batch_size": 8}})
            await manager.unload("image")
            await manager.load("image")
            assert settings().batching.max_batch_size == 4  # an unload forgets them too
        finally:
            await repository.close()

    asyncio.run(scenario())
