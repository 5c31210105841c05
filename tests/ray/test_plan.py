"""Which deployments a served PATH becomes on Ray, and what each model's settings give its replicas.

No Ray instance: planning reads manifests and settings only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelpod.ray.options import DeploymentOptions
from modelpod.ray.plan import choose_layout, model_options, plan_models
from modelpod.ray.router import merge_metrics, request_kind
from modelpod.serving.http.messages import Response
from modelpod.serving.settings import ModelSettings, parse_metadata
from tests.helpers.addition import pack_addition

BASE = DeploymentOptions(replicas=3, ray_actor_options={"num_cpus": 0.5})


def test_the_eas_keys_size_the_models_deployment() -> None:
    own = parse_metadata({"instance": 4, "cpu": 2, "memory": 2048}, "config")
    options, one_instance = model_options(own, BASE)
    assert options.replicas == 4 and options.autoscale is None and one_instance  # instances are the replicas
    assert dict(options.ray_actor_options) == {"num_cpus": 2, "memory": 2048 << 20}


def test_a_ray_object_wins_and_instance_keeps_its_in_server_meaning() -> None:
    own = parse_metadata({"instance": 2, "cpu": 1, "ray": {"autoscale": "1:5", "num_cpus": 0.25, "num_gpus": 1,
                                                           "memory_mb": 512, "max_ongoing_requests": 8}}, "config")
    options, one_instance = model_options(own, BASE)
    assert options.autoscale == (1, 5) and not one_instance
    assert dict(options.ray_actor_options) == {"num_cpus": 0.25, "num_gpus": 1, "memory": 512 << 20}
    assert options.max_ongoing_requests == 8
    assert options.serve_options()["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 5,
                                                             "initial_replicas": 1}


def test_a_model_without_settings_gets_the_apps_options() -> None:
    assert model_options(ModelSettings(), BASE) == (BASE, False)


@pytest.mark.parametrize("metadata, message", [
    ({"ray": {"replicas": 0}}, "ray.replicas"),
    ({"ray": {"autoscale": "four"}}, "ray.autoscale"),
    ({"ray": {"cpus": 1}}, "not a setting"),
])
def test_bad_ray_settings_name_the_key(metadata: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_metadata(metadata, "service 0")


def test_a_service_config_plans_one_deployment_per_model(tmp_path: Path) -> None:
    pack_addition(tmp_path / "add")
    config = tmp_path / "services.json"
    config.write_text(json.dumps([
        {"name": "big", "model_path": str(tmp_path / "add"), "metadata": {"instance": 4, "cpu": 1}},
        {"name": "small", "model_path": str(tmp_path / "add"), "token": "own"},
    ]))
    plans = {p.name: p for p in plan_models(config, BASE)}
    assert plans["big"].options.replicas == 4 and plans["big"].own
    assert plans["small"].options == BASE and not plans["small"].own and plans["small"].guarded
    assert choose_layout("auto", list(plans.values())) == "models"
    assert choose_layout("repository", list(plans.values())) == "repository"


def test_a_repository_without_own_settings_is_one_deployment(tmp_path: Path) -> None:
    pack_addition(tmp_path / "repo" / "a")
    pack_addition(tmp_path / "repo" / "b")
    plans = plan_models(tmp_path / "repo", BASE)
    assert [p.name for p in plans] == ["a", "b"] and choose_layout("auto", plans) == "repository"
    assert choose_layout("models", plans) == "models"
    with pytest.raises(ValueError, match="layout must be one of"):
        choose_layout("cluster", plans)  # type: ignore[arg-type]


@pytest.mark.parametrize("path, kind", [
    ("/v2/models/m/infer", ("model", "m")),
    ("/v2/models/m/versions/2/ready", ("model", "m")),
    ("/v1/models/m:predict", ("model", "m")),
    ("/v1/models/m/versions/3:classify", ("model", "m")),
    ("/api/predict/m", ("model", "m")),
    ("/api/predict/m/sub/path", ("model", "m")),
    ("/v2/repository/models/m/load", ("model", "m")),
    ("/v2/repository/index", ("index", "")),
    ("/v2/health/ready", ("ready", "")),
    ("/healthz", ("ready", "")),
    ("/metrics", ("metrics", "")),
    ("/v2", ("any", "")),
    ("/v2/health/live", ("any", "")),
    ("/v2%2Fmodels%2Fm/infer", ("any", "")),  # an escaped slash names no model, as in the server
])
def test_the_router_reads_the_model_as_the_server_does(path: str, kind: tuple[str, str]) -> None:
    assert request_kind(path) == kind


def test_merged_metrics_label_each_deployment_and_keep_one_header_per_family() -> None:
    text = ("# HELP up Up.\n# TYPE up gauge\nup 1\n# HELP req Requests.\n# TYPE req counter\n"
            'req_total{model="a"} 3\n')
    merged = merge_metrics([("a", Response(200, text.encode(), [], "text/plain")),
                            ("b", Response(200, text.replace('"a"', '"b"').encode(), [], "text/plain"))])
    lines = merged.body.decode().splitlines()
    assert lines.count("# TYPE up gauge") == 1 and lines.count("# TYPE req counter") == 1
    assert 'up{deployment="a"} 1' in lines and 'up{deployment="b"} 1' in lines
    assert 'req_total{deployment="b",model="b"} 3' in lines
    refused = Response(401, b"no", [], "application/json")
    assert merge_metrics([("a", Response(200, text.encode())), ("b", refused)]) is refused
