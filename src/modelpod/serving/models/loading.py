"""Loading one served model: a package (or ModelArts folder) becomes a warmed-up ServedModel.

What PATH holds and with which settings is :mod:`modelpod.serving.models.lifecycle` and
:mod:`modelpod.serving.settings`; this module turns one entry into a ServedModel.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from modelpod.backends.base import canonical_platform
from modelpod.runtime.model import load
from modelpod.serving.execution.served import ServedModel
from modelpod.serving.settings import ModelSettings

log = logging.getLogger("modelpod.serve")


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


def build_served(name: str | None, version: int, package: Path, settings: ModelSettings,
                 processor: str | None = None, *, metrics: Any = None,
                 stopping: threading.Event | None = None) -> ServedModel:
    """Load one package (or ModelArts model folder) as a ServedModel and warm it up.

    A model that fails its warm-up is returned FAILED (with the reason); a package that cannot be
    loaded, a processor that does not match, or warm-up data that cannot be read raise.
    ``stopping`` is the server's shutdown flag (worker processes that die once it is set stay down).
    """
    from modelpod.runtime.modelarts import is_modelarts_folder, load_modelarts
    from modelpod.runtime.service import load_service

    extra: list[dict[str, np.ndarray]] = []
    if is_modelarts_folder(package):  # served unchanged through its own hooks
        service = load_modelarts(package, name)
        model, served_name = service.model, service.name
    else:
        model = load(package)
        try:
            if processor and canonical_platform(processor) != canonical_platform(model.platform):
                raise ValueError(f"{package}: processor {processor!r} does not match the package platform "
                                 f"{model.platform!r}")
            served_name = name or model.name
            service = load_service(model, served_name)
            extra = _warm_up_requests(served_name, settings.warm_up_data_path)
        except BaseException:
            model.close()
            raise
    served = ServedModel(served_name, version, model, settings, service=service, stopping=stopping,
                         observer=metrics.observer(served_name, version) if metrics else None)
    served.warm_up(extra)
    return served


def _warm_up_requests(name: str, path: str | None) -> list[dict[str, np.ndarray]]:
    """The settings' extra warm-up requests (none without ``warm_up_data_path``); ValueError naming the file."""
    if not path:
        return []
    try:
        return load_warm_up(path)
    except (OSError, ValueError) as exc:
        hint = "" if isinstance(exc, OSError) else (
            "; give an .npz, a v2 JSON infer request or a serialized EAS PredictRequest")
        raise ValueError(f"model '{name}': cannot read warm_up_data_path {path} ({exc}){hint}") from None
