"""EAS-style service configs, per-model ``serving.json`` settings, and loading one served model.

A service config is one JSON object or a list of them::

    {"name": "add", "model_path": "add.tar.gz", "processor": "tensorflow_cpu_2.7",
     "warm_up_data_path": "warm.bin", "token": "secret",
     "metadata": {"instance": 1, "rpc.max_queue_size": 64, "rpc.keepalive": 5000}}

``processor`` may be a modelpod platform or an EAS processor name; when given it must match the
package's platform. Relative paths are relative to the config file. In a repository folder,
``<model>/serving.json`` may hold the same settings (processor, warm_up_data_path, token,
metadata) for that model. :class:`modelpod.serving.lifecycle.ModelManager` decides what PATH holds.
"""

from __future__ import annotations

from modelpod.package.layout import SETTINGS_FILE

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelpod.backends.base import canonical_platform
from modelpod.runtime.model import load
from modelpod.serving.served import ServedModel, ServingOptions

log = logging.getLogger("modelpod.serve")


class ModelSettings(BaseModel):
    """``<repository>/<model>/serving.json``: a service config's settings for one model folder."""

    model_config = ConfigDict(extra="forbid")

    processor: str | None = None
    warm_up_data_path: str | None = None
    token: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class ServiceConfig(ModelSettings):
    """One service in an EAS-style config file."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    model_path: str
    version: int = 1




def read_model_settings(model_dir: Path) -> ModelSettings | None:
    """The model folder's ``serving.json`` (None when it has none); relative paths from that folder."""
    path = model_dir / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        settings = ModelSettings.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(root)"
        raise ValueError(f"{path}: field '{field}': {err['msg']}") from None
    if settings.warm_up_data_path and not Path(settings.warm_up_data_path).is_absolute():
        settings.warm_up_data_path = str((model_dir / settings.warm_up_data_path).resolve())
    return settings


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
    """Load one package (or ModelArts model folder) as a ServedModel and warm it up.

    A model that fails its warm-up is returned FAILED (with the reason); a package that cannot be
    loaded, a processor that does not match, or warm-up data that cannot be read raise.
    """
    from modelpod.runtime.modelarts import is_modelarts_folder, load_modelarts
    from modelpod.runtime.service import load_service

    if is_modelarts_folder(package):  # served unchanged through its own hooks
        modelarts = load_modelarts(package, name)
        served = ServedModel(modelarts.name, version, modelarts.model, options, service=modelarts,
                             observer=metrics.observer(modelarts.name, version) if metrics else None)
        if warm_up:
            served.warm_up()
        return served
    model = load(package)
    if processor and canonical_platform(processor) != canonical_platform(model.platform):
        model.close()
        raise ValueError(
            f"{package}: processor {processor!r} does not match the package platform {model.platform!r}"
        )
    service = load_service(model, name or model.name)
    served_name = name or model.name
    served = ServedModel(served_name, version, model, options, service=service,
                         observer=metrics.observer(served_name, version) if metrics else None)
    if warm_up:
        try:
            extra = load_warm_up(options.warm_up_data_path) if options.warm_up_data_path else []
        except (OSError, ValueError) as exc:
            model.close()
            hint = "" if isinstance(exc, OSError) else (
                "; give an .npz, a v2 JSON infer request or a serialized EAS PredictRequest")
            raise ValueError(f"model '{served.name}': cannot read warm_up_data_path "
                             f"{options.warm_up_data_path} ({exc}){hint}") from None
        served.warm_up(extra)
    return served
