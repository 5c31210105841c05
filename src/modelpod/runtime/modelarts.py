"""ModelArts model folders, served unchanged: ``config.json`` + ``customize_service.py``.

A ModelArts folder is the model directory Huawei ModelArts imports: ``config.json`` (``model_type``,
``runtime``, ``apis``, ``dependencies``...), ``customize_service.py`` with one subclass of the
platform's base service, and the model files. ModelArts creates the subclass once as
``Cls(model_name, model_path)`` and runs ``_postprocess(_inference(_preprocess(data)))`` per request.

The base classes live in the ModelArts image under ``model_service.*``. modelpod provides stand-ins
(:class:`TfServingBaseService` and aliases) under those import paths **only while the folder is
imported and its class created**: synthetic modules go into ``sys.modules`` and come out again, so
nothing named ``model_service`` stays behind. Deploy-time parameters come from environment
variables, as on ModelArts.
"""

from __future__ import annotations

import inspect
import json
import sys
import threading
import types
from pathlib import Path
from typing import Any

from modelpod.package.codeimport import forget_modules, import_entrypoint
from modelpod.package.layout import MODELARTS_CONFIG_FILE, MODELARTS_SERVICE_FILE
from modelpod.spec import SpecError

PLATFORM = "modelarts"


class TfServingBaseService:
    """Stand-in for ModelArts' ``model_service.tfserving_model_service.TfServingBaseService``.

    ``__init__`` stores ``model_name`` and ``model_path``; the three hooks pass data through, so
    a subclass overrides the ones it needs (a frozen graph: all of them).
    """

    def __init__(self, model_name: str, model_path: str) -> None:
        self.model_name = model_name
        self.model_path = model_path

    def _preprocess(self, data: Any) -> Any:
        return data

    def _inference(self, data: Any) -> Any:
        return data

    def _postprocess(self, data: Any) -> Any:
        return data


# ModelArts' other base classes share the flow; these names make such folders import too.
SingleNodeService = TfServingBaseService
PTServingBaseService = TfServingBaseService

#: synthetic module name -> {attribute: object}
_STAND_INS: dict[str, dict[str, Any]] = {
    "model_service": {},
    "model_service.model_service": {"SingleNodeService": SingleNodeService},
    "model_service.tfserving_model_service": {"TfServingBaseService": TfServingBaseService},
    "model_service.pytorch_model_service": {"PTServingBaseService": PTServingBaseService},
}
_BASES = (TfServingBaseService,)
_install_lock = threading.Lock()


def read_config(path: str | Path) -> dict[str, Any] | None:
    """``config.json`` as a dict, or None when it is missing or not a JSON object."""
    try:
        config = json.loads((Path(path) / MODELARTS_CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def is_modelarts_folder(path: str | Path) -> bool:
    """True for a folder holding ``customize_service.py`` and a ``config.json`` with
    ``model_type`` or ``runtime`` (ModelArts' model configuration)."""
    path = Path(path)
    if not path.is_dir() or not (path / MODELARTS_SERVICE_FILE).is_file():
        return False
    config = read_config(path)
    return config is not None and ("model_type" in config or "runtime" in config)


class _StandIns:
    """Context manager: the ``model_service`` modules exist in ``sys.modules`` inside it only."""

    def __enter__(self) -> None:
        _install_lock.acquire()
        self._saved = {name: sys.modules.get(name) for name in _STAND_INS}
        for name, attributes in _STAND_INS.items():
            module = types.ModuleType(name, f"modelpod stand-in for ModelArts' {name}")
            module.__dict__.update(attributes)
            if name == "model_service":
                module.__path__ = []  # type: ignore[attr-defined]
            sys.modules[name] = module
        root = sys.modules["model_service"]
        for name in _STAND_INS:
            if "." in name:
                setattr(root, name.rsplit(".", 1)[1], sys.modules[name])

    def __exit__(self, *exc: object) -> None:
        try:
            for name, previous in self._saved.items():
                if previous is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = previous
        finally:
            _install_lock.release()


class ModelArtsModel:
    """The minimal model object a served entry needs: a name, an empty spec, no tensor API.

    A ModelArts service takes requests only through its hooks (``/api/predict/<name>``); tensor
    protocols get a SpecError (400) that says so.
    """

    platform = PLATFORM

    def __init__(self, name: str, root: Path, modules: list[str]) -> None:
        from modelpod.package.manifest import Manifest
        from modelpod.runtime.model import ModelSpec

        self.name = name
        self.root = root
        self.manifest = Manifest(name=name, platform=PLATFORM, input_spec=[], output_spec=[])
        self.spec = ModelSpec((), ())
        self.signatures: dict[str, Any] = {}
        self._modules = modules

    def signature_spec(self, signature: str | None = None) -> Any:
        return self.spec

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise SpecError(
            f"'{self.name}' is a ModelArts service: send requests to POST /api/predict/{self.name} "
            "(JSON, multipart files or raw bytes); it has no tensor signature"
        )

    check_inputs = infer = _refuse

    def test_vectors(self) -> None:
        return None

    def close(self) -> None:
        forget_modules(self._modules)
        self._modules = []


class ModelArtsService:
    """A loaded ModelArts folder: ``handle(data)`` runs ``_preprocess -> _inference -> _postprocess``.

    ``data`` is what ModelArts hands ``_preprocess``: the JSON body as a dict, multipart uploads as
    ``{field: {filename: file object}}``, anything else as bytes.
    """

    def __init__(self, instance: Any, model: ModelArtsModel, config: dict[str, Any]) -> None:
        self.instance = instance
        self.model = model
        self.config = config

    @property
    def name(self) -> str:
        return self.model.name

    def handle(self, data: Any) -> Any:
        instance = self.instance
        return instance._postprocess(instance._inference(instance._preprocess(data)))


def _find_class(namespace: dict[str, Any], path: Path) -> type:
    module_name = namespace.get("__name__")
    classes = [
        obj for obj in namespace.values()
        if inspect.isclass(obj) and issubclass(obj, _BASES) and obj not in _BASES
        and obj.__module__ == module_name
    ]
    if len(classes) != 1:
        raise ValueError(
            f"{path / MODELARTS_SERVICE_FILE} must define exactly one subclass of TfServingBaseService "
            f"(model_service.tfserving_model_service), found {len(classes)}"
        )
    return classes[0]


def modelarts_name(path: str | Path) -> str:
    """The service name of a ModelArts folder: ``config.json``'s name / model_name, else the folder's."""
    path = Path(path).resolve()
    config = read_config(path) or {}
    return config.get("name") or config.get("model_name") or path.name


def load_modelarts(path: str | Path, name: str | None = None) -> ModelArtsService:
    """Import ``customize_service.py`` and create its service class as ModelArts does.

    The name is ``name``, else ``config.json``'s ``name`` / ``model_name``, else the folder name.
    """
    path = Path(path).resolve()
    if not is_modelarts_folder(path):
        raise ValueError(f"{path}: not a ModelArts model folder (config.json + {MODELARTS_SERVICE_FILE})")
    config = read_config(path) or {}
    name = name or modelarts_name(path)
    with _StandIns():
        namespace, modules = import_entrypoint(path, MODELARTS_SERVICE_FILE[:-3], "__dict__")
        try:
            cls = _find_class(namespace, path)
            instance = cls(name, str(path))
        except BaseException:
            forget_modules(modules)
            raise
    return ModelArtsService(instance, ModelArtsModel(name, path, modules), config)
