"""One typed settings model: EAS metadata, serving.json, CLI defaults all parse into ModelSettings."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from modelpod.serving.settings import (
    BatchingSettings, ModelSettings, parse_metadata, read_model_settings, read_service_configs,
)


def test_eas_names_and_modelpod_names_give_the_same_settings() -> None:
    eas = parse_metadata({"instance": 2, "rpc.max_queue_size": 8, "rpc.keepalive": 750}, "here")
    ours = ModelSettings(instances=2, max_queue_size=8, timeout_ms=750)
    assert eas == ours and (eas.instances, eas.max_queue_size, eas.timeout_ms) == (2, 8, 750.0)


def test_batching_keys_go_flat_or_nested() -> None:
    flat = parse_metadata({"max_batch_size": 16, "max_batch_delay_ms": 2, "preferred_batch_sizes": [4, 8]}, "x")
    nested = parse_metadata({"batching": {"max_batch_size": 16, "max_batch_delay_ms": 2,
                                          "preferred_batch_sizes": [4, 8]}}, "x")
    assert flat.batching == nested.batching == BatchingSettings(max_batch_size=16, max_batch_delay_ms=2,
                                                                  preferred_batch_sizes=(4, 8))
    assert flat.batching.enabled and not ModelSettings().batching.enabled


def test_a_model_s_own_settings_go_on_top_of_the_defaults() -> None:
    defaults = ModelSettings(instances=3, timeout_ms=100)
    own = parse_metadata({"rpc.keepalive": 900, "worker": "process"}, "x")
    merged = own.over(defaults)
    assert (merged.instances, merged.timeout_ms, merged.worker, merged.max_queue_size) == (3, 900.0, "process", 64)
    assert parse_metadata({}, "x").over(defaults) == defaults


@pytest.mark.parametrize(("metadata", "key", "says"), [
    ({"rpc.max_queue_size": 0}, "metadata.rpc.max_queue_size", "must be at least 1, got 0"),
    ({"rpc.keepalive": 0}, "metadata.rpc.keepalive", "must be more than 0"),
    ({"instance": "two"}, "metadata.instance", "must be a number"),
    ({"execution": "sometimes"}, "metadata.execution", "must be 'auto', 'inline' or 'queued'"),
    ({"max_batch_size": 0}, "metadata.batching.max_batch_size", "must be at least 1"),
    ({"instance": 1, "instances": 2}, "metadata", "give 'instance' or 'instances', not both"),
])
def test_a_bad_value_names_the_file_the_service_and_the_key(tmp_path: Path, metadata: dict, key: str,
                                                           says: str) -> None:
    config = tmp_path / "services.json"
    config.write_text(json.dumps([{"name": "ok", "model_path": "a"}, {"name": "bad", "model_path": "b",
                                                                        "metadata": metadata}]))
    with pytest.raises(ValueError) as caught:
        read_service_configs(config)
    message = str(caught.value)
    assert message.startswith(f"{config}: service 1: key '{key}'") and says in message, message


def test_serving_json_is_read_into_the_same_settings(tmp_path: Path) -> None:
    (tmp_path / "serving.json").write_text(json.dumps({
        "token": "t", "warm_up_data_path": "warm.npz", "metadata": {"instance": 2, "max_batch_size": 4}}))
    settings, entry = read_model_settings(tmp_path)
    assert (settings.instances, settings.batching.max_batch_size, entry.token) == (2, 4, "t")
    assert settings.warm_up_data_path == str((tmp_path / "warm.npz").resolve())
    (tmp_path / "serving.json").write_text(json.dumps({"metadata": {"rpc.keepalive": -1}}))
    with pytest.raises(ValueError, match=r"serving.json: key 'metadata.rpc.keepalive' must be more than 0"):
        read_model_settings(tmp_path)
    (tmp_path / "serving.json").write_text(json.dumps({"instances": 2}))
    with pytest.raises(ValueError, match=r"serving.json: key 'instances' is not a setting modelpod knows"):
        read_model_settings(tmp_path)


def test_eas_resource_keys_are_read_or_ignored_and_unknown_keys_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "modelpod.serve"):
        settings = parse_metadata({"cpu": 2, "memory": 4000, "gpu": 0, "instance": 1, "max_queue_sise": 3},
                                  "cfg.json")
    assert settings == ModelSettings(instances=1, cpu=2, memory=4000)
    assert settings.threads == 2 and settings.in_processes  # a memory cap runs the model in worker processes
    assert "max_queue_sise" in caplog.text and "gpu" not in caplog.text and "cfg.json" in caplog.text
    with pytest.raises(ValueError, match="memory"):
        parse_metadata({"memory": 1}, "cfg.json")


def test_settings_are_frozen() -> None:
    with pytest.raises(Exception):
        ModelSettings().instances = 4  # type: ignore[misc]
