"""Loading one served model: a package (or ModelArts folder) becomes a warmed-up ServedModel.

What PATH holds and with which settings is :mod:`modelpod.serving.models.lifecycle` and
:mod:`modelpod.serving.settings`; this module turns one entry into a ServedModel.
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np

from modelpod.backends.base import canonical_platform
from modelpod.errors import FrameworkMissingError
from modelpod.package.layout import LOCK_FILE, SERVICE_FILE
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

    modelarts = is_modelarts_folder(package)
    if wants_isolation(package, settings, modelarts):
        return build_isolated(name, version, package, settings, processor, modelarts=modelarts, metrics=metrics,
                              stopping=stopping)
    extra: list[dict[str, np.ndarray]] = []
    if modelarts:  # served unchanged through its own hooks
        service = load_modelarts(package, name)
        model, served_name = service.model, service.name
    else:
        try:
            model = load(package)
        except FrameworkMissingError as exc:  # say which model, as the rest of the server's messages do
            raise exc.for_model(name or _manifest_name(package)) from exc
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
                         observer=metrics.observer(served_name, version) if metrics else None,
                         compute=metrics.compute_recorder(served_name, version) if metrics else None)
    served.warm_up(extra)
    return served


def _manifest_name(package: Path) -> str:
    """The model name in a package's manifest (an archive's manifest member is read, nothing extracted)."""
    if package.is_file():
        from modelpod.package.archive import read_archive_manifest

        return read_archive_manifest(package)[0].name
    from modelpod.package.manifest import read_manifest

    return read_manifest(package, verify_hashes=False).name


def wants_isolation(package: Path, settings: ModelSettings, modelarts: bool) -> bool:
    """Whether the model runs in its own environment: ``isolation`` "on", or "auto" and the package
    has requirements (a lock, manifest requirements, a ModelArts folder's dependencies)."""
    if settings.isolation != "auto":
        return settings.isolation == "on"
    if modelarts:  # what the server already has is used from the server, as pip would
        from modelpod.envs.sources import modelarts_missing
        from modelpod.errors import EnvBuildError

        try:
            return bool(modelarts_missing(package))
        except EnvBuildError:  # dependencies it cannot install: build_isolated reports why
            return True
    if package.is_file():
        from modelpod.package.archive import read_archive_manifest

        manifest, members = read_archive_manifest(package)
        return LOCK_FILE in members or bool(manifest.requirements)
    if (package / LOCK_FILE).is_file():
        return True
    from modelpod.package.manifest import read_manifest

    return bool(read_manifest(package, verify_hashes=False).requirements)


def build_isolated(name: str | None, version: int, package: Path, settings: ModelSettings,
                   processor: str | None = None, *, modelarts: bool = False, metrics: Any = None,
                   stopping: threading.Event | None = None) -> ServedModel:
    """A model whose instances are worker processes in its own environment (built on first use).

    The server reads only the manifest (and spec); the package's code, framework and service hooks
    run in the workers. An environment that cannot be built, or a worker that cannot load the
    model, leave the model FAILED with the reason (the server and other models serve on)."""
    from modelpod.errors import EnvBuildError
    from modelpod.package.manifest import read_manifest
    from modelpod.runtime.isolated import env_source, open_environment
    from modelpod.runtime.model import Model, resolve_package
    from modelpod.runtime.modelarts import ModelArtsModel, modelarts_name
    from modelpod.runtime.workerproc import worker_command
    from modelpod.serving.execution.workers import InstanceBackend, ProcessInstance, RemoteService, hung_after_s

    root, tmp = (package.resolve(), None) if modelarts else resolve_package(package)
    environment = None
    try:
        manifest = None if modelarts else read_manifest(root)
        served_name = name or (modelarts_name(root) if modelarts else manifest.name)  # type: ignore[union-attr]
        if manifest is not None and processor and canonical_platform(processor) != canonical_platform(manifest.platform):
            raise ValueError(f"{package}: processor {processor!r} does not match the package platform "
                             f"{manifest.platform!r}")
        extra = _warm_up_requests(served_name, settings.warm_up_data_path)
        hooks = modelarts or (root / SERVICE_FILE).is_file()
        instances = [ProcessInstance(root, served_name, i, stopping, hooks=hooks, modelarts=modelarts,
                                     request_timeout_s=hung_after_s(settings.timeout_ms),
                                     threads=settings.threads, memory_mb=settings.memory)
                     for i in range(settings.instances)]
        reason = ""
        try:
            source = env_source(root, None if manifest is None else manifest.requirements, modelarts=modelarts,
                                platform=manifest.platform if manifest is not None else "python",
                                force=True)
            assert source is not None
            log.info("model %s: opening its environment (%s)", served_name,
                     "locked" if source.lock is not None else ", ".join(source.requirements) or "worker only")
            environment = open_environment(source, used_by=str(Path(package).resolve()),
                                           progress=lambda line: log.info("model %s: %s", served_name, line))
            for instance in instances:
                instance.command = worker_command(environment.python)
            instances[0].start()
        except EnvBuildError as exc:
            reason = f"its environment cannot be built: {exc}"
        except RuntimeError as exc:
            reason = str(exc)
        if manifest is None:
            model: Any = ModelArtsModel(served_name, root, [])
        else:
            model = Model(root, manifest, InstanceBackend(root, manifest, instances[0]), tmp)
            tmp = None  # the model removes it when closed
    except BaseException:
        if environment is not None:
            environment.release()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    service = RemoteService(served_name, instances) if hooks else None
    served = ServedModel(served_name, version, model, settings, service=service, stopping=stopping,
                         observer=metrics.observer(served_name, version) if metrics else None,
                         compute=metrics.compute_recorder(served_name, version) if metrics else None,
                         workers=instances, environment=environment)
    if reason:
        served.state, served.reason = "FAILED", reason
        log.error("model %s version %s: %s", served_name, version, reason)
        return served
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
