"""Service hooks (the ModelArts customize_service flow) for packages that carry ``service.py``.

``service.py`` defines one subclass of :class:`ModelService`. The server creates it once after the
model loads, calls :meth:`ModelService.setup`, and for each request on ``/api/predict/<service>``
runs ``postprocess(inference(preprocess(request)))``, returning the result as JSON.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from modelpod.package.codeimport import forget_modules, import_entrypoint
from modelpod.package.layout import SERVICE_FILE

if TYPE_CHECKING:
    from modelpod.runtime.model import Model



class ModelService:
    """Base class for custom pre/post-processing around a packaged model.

    Attributes available in every hook: ``self.model`` (the loaded :class:`modelpod.Model`),
    ``self.model_path`` (the package folder), ``self.name`` and ``self.config`` (the environment
    variables, so deploy-time parameters arrive the ModelArts way).

    ``request`` handed to :meth:`preprocess` is the decoded body: a dict for JSON, a dict
    ``{field: {filename: file object}}`` for multipart uploads (as ModelArts passes them; plain
    form fields arrive as ``{field: value}``), or ``bytes`` for anything else.
    """

    def __init__(self, model: "Model", model_path: str, name: str) -> None:
        self.model = model
        self.model_path = model_path
        self.name = name
        self.config: dict[str, str] = dict(os.environ)

    def setup(self) -> None:
        """Called once after the model is loaded, before any request."""

    def preprocess(self, request: Any) -> Mapping[str, Any]:
        """Turn the decoded request into the model's input tensors (default: use it as is)."""
        return request

    def inference(self, tensors: Mapping[str, Any]) -> Mapping[str, np.ndarray]:
        """Run the model (default: ``self.model.infer``)."""
        return self.model.infer(tensors)

    def postprocess(self, tensors: Mapping[str, Any]) -> Any:
        """Turn the outputs into a JSON-ready answer (default: arrays become lists)."""
        return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in tensors.items()}

    def handle(self, request: Any) -> Any:
        """The whole flow for one request."""
        return self.postprocess(self.inference(self.preprocess(request)))


def load_service(model: "Model", name: str) -> ModelService | None:
    """Create and set up the package's ModelService, or return None when it has no service.py."""
    if not (model.root / SERVICE_FILE).is_file():
        return None
    namespace, modules = import_entrypoint(model.root, "service", "__dict__")
    classes = [
        obj for obj in namespace.values()
        if inspect.isclass(obj) and issubclass(obj, ModelService) and obj is not ModelService
        and obj.__module__ == namespace.get("__name__")
    ]
    if len(classes) != 1:
        forget_modules(modules)
        raise ValueError(
            f"{model.root / SERVICE_FILE} must define exactly one modelpod.ModelService subclass, "
            f"found {len(classes)}"
        )
    service = classes[0](model, str(model.root), name)
    service.setup()
    return service
