"""EAS-style service configs and turning PATH into a loaded, warmed-up Repository.

A service config is one JSON object or a list of them::

    {"name": "add", "model_path": "add.tar.gz", "processor": "tensorflow_cpu_2.7",
     "warm_up_data_path": "warm.bin", "token": "secret",
     "metadata": {"instance": 1, "rpc.max_queue_size": 64, "rpc.keepalive": 5000}}

``processor`` may be a modelpod platform or an EAS processor name; when given it must match the
package's platform. Relative paths are relative to the config file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelpod.backends.base import canonical_platform
from modelpod.runtime.model import load
from modelpod.runtime.modelarts import is_modelarts_folder, load_modelarts
from modelpod.serving.repository import Repository, discover
from modelpod.serving.served import ServedModel, ServingOptions

log = logging.getLogger("modelpod.serve")


class ServiceConfig(BaseModel):
    """One service in an EAS-style config file."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    model_path: str
    processor: str | None = None
    warm_up_data_path: str | None = None
    token: str | None = None
    version: int = 1
    metadata: dict[str, Any] = Field(default_factory=dict)


def read_service_configs(path: Path) -> list[ServiceConfig]:
    """Parse a service config file (object or list); relative paths resolve against its folder."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the service config ({exc})") from None
    items = raw if isinstance(raw, list) else [raw]
    configs = []
    for i, item in enumerate(items):
        try:
            cfg = ServiceConfig.model_validate(item)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            raise ValueError(f"{path}: service {i}: field '{field}': {err['msg']}") from None
        for attr in ("model_path", "warm_up_data_path"):
            value = getattr(cfg, attr)
            if value and not Path(value).is_absolute():
                setattr(cfg, attr, str((path.parent / value).resolve()))
        configs.append(cfg)
    return configs


def load_warm_up(path: str) -> list[dict[str, np.ndarray]]:
    """Warm-up requests from an .npz, a v2 JSON request, or a serialized EAS PredictRequest."""
    file = Path(path)
    data = file.read_bytes()
    if file.suffix == ".npz":
        from modelpod.package.vectors import load_npz

        return [load_npz(file)]
    if data[:1] == b"{":
        from modelpod.codecs.v2 import decode_request

        return [decode_request(data, None).inputs]
    from modelpod.codecs.eas import decode_predict_request

    return [decode_predict_request(data).inputs]


def build_served(name: str | None, version: int, package: Path, options: ServingOptions,
                 processor: str | None = None, warm_up: bool = True, metrics: Any = None) -> ServedModel:
    """Load one package as a ServedModel and warm it up (a failure leaves it FAILED, not raised)."""
    from modelpod.runtime.service import load_service

    model = load(package)
    if processor and canonical_platform(processor) != canonical_platform(model.platform):
        model.close()
        raise ValueError(
            f"{package}: processor {processor!r} does not match the package platform {model.platform!r}"
        )
    service = load_service(model, name or model.name)
    served = ServedModel(name or model.name, version, model, options, service=service)
    if metrics is not None:
        served.observer = metrics.observer(served.name, version)
    if warm_up:
        extra = load_warm_up(options.warm_up_data_path) if options.warm_up_data_path else []
        served.warm_up(extra)
    return served


def build_repository(path: Path, *, token: str | None = None, defaults: dict[str, Any] | None = None,
                     repo: Repository | None = None, metrics: Any = None) -> Repository:
    """Load everything ``path`` names (package, archive, repository folder, service config)."""
    repo = repo if repo is not None else Repository()
    defaults = defaults or {}
    if path.is_file() and path.suffix == ".json":
        for cfg in read_service_configs(path):
            options = ServingOptions.from_metadata(cfg.metadata, warm_up_data_path=cfg.warm_up_data_path, **defaults)
            served = build_served(cfg.name, cfg.version, Path(cfg.model_path), options, cfg.processor,
                                  metrics=metrics)
            repo.add(served, token=cfg.token)
        return repo
    if is_modelarts_folder(path):
        service = load_modelarts(path)
        served = ServedModel(service.name, 1, service.model, ServingOptions(**defaults), service=service,
                             observer=metrics.observer(service.name, 1) if metrics is not None else None)
        served.warm_up()
        repo.add(served)
        return repo
    for name, version, package in discover(path):
        served = build_served(name, version, package, ServingOptions(**defaults), metrics=metrics)
        repo.add(served)
        log.info("loaded %s version %s from %s (%s)", served.name, version, package, served.state)
    return repo
