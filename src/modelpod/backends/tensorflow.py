"""The tensorflow platform: TF1 graphs (GraphDef / frozen graph) and SavedModels.

Two payload formats, told apart by ``platform_options["format"]``:

* ``graph``: ``model/frozen_graph.pb``, a frozen GraphDef. ``node_name_mapping`` ties each spec
  name to a graph tensor (``{"x": "some_namespace/in_x:0"}``), as in Neuropod. The spec is required.
* ``saved_model``: ``model/saved_model/``, a copy of the SavedModel folder. ``signature`` names the
  default signature; the spec is derived from the signatures when not given (like
  ``saved_model_cli show``: unknown dims become ``None``), and every other signature of the model
  is recorded in ``platform_options["signatures"]`` so a request may name it.

Both run in one ``tf.compat.v1.Session`` per model, with one ``Session.make_callable`` per
(signature, requested outputs). Of the public ways to run a graph that has the lowest per-call
overhead: for the addition model on a 2-core CPU, about 115-125 us per call, against 240-250 us
for a ``wrap_function(...).prune(...)`` concrete function (its structured-call binding fails over
to the flat signature on every call) and 130-160 us for a SavedModel signature function from
``tf.saved_model.load``. SavedModels written by TF2 (variables, lookup tables) load into the
session the way TF Serving loads them.

TensorFlow is imported when this module is; ``TF_CPP_MIN_LOG_LEVEL`` defaults to 2 here, which
hides TF's INFO and WARNING lines but never its errors.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from modelpod.backends.base import Backend
from modelpod.backends.tf_signatures import (  # noqa: E402
    DEFAULT_SIGNATURE,
    DEFAULT_TAGS,
    Spec,
    _check_tensor,
    _shape_dims,
    spec_dtype,
)
from modelpod.errors import BackendError  # noqa: E402
from modelpod.spec import parse_spec  # noqa: E402

FROZEN_GRAPH = "model/frozen_graph.pb"
SAVED_MODEL = "model/saved_model"


# ---------------------------------------------------------------------------------------------
# graphs


def as_graph_def(graph_def: Any) -> tf.compat.v1.GraphDef:
    if isinstance(graph_def, tf.Graph):
        return graph_def.as_graph_def()
    if isinstance(graph_def, tf.compat.v1.GraphDef):
        return graph_def
    raise TypeError(f"graph_def must be a tf.compat.v1.GraphDef or tf.Graph, got {type(graph_def).__name__}")


def read_graph_def(path: Path) -> tf.compat.v1.GraphDef:
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(Path(path).read_bytes())
    except Exception as exc:  # DecodeError is not exported under a stable name
        raise ValueError(f"{path} is not a binary GraphDef (frozen graph): {exc}") from None
    return graph_def


def _import_graph(graph_def: tf.compat.v1.GraphDef) -> tf.Graph:
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    return graph


def _graph_tensor(graph: tf.Graph, tensor_name: str, what: str) -> tf.Tensor:
    try:
        return graph.get_tensor_by_name(tensor_name)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{what}: {tensor_name!r} is not a tensor of the graph ({exc})") from None


def default_mapping(specs: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    return {s["name"]: f"{s['name']}:0" for s in specs}


def check_graph(
    graph_def: tf.compat.v1.GraphDef, mapping: Mapping[str, str], input_spec: Spec, output_spec: Spec
) -> None:
    """Raise ValueError unless every spec tensor is mapped to a graph tensor of its dtype and rank."""
    names = {s["name"] for s in (*input_spec, *output_spec)}
    unknown = sorted(set(mapping) - names)
    if unknown:
        raise ValueError(f"node_name_mapping names {unknown}, which the spec does not declare")
    graph = _import_graph(graph_def)
    for role, specs in (("input", input_spec), ("output", output_spec)):
        for spec in specs:
            if spec["name"] not in mapping:
                raise ValueError(
                    f"node_name_mapping has no entry for {role} '{spec['name']}'; map it to a graph "
                    "tensor such as 'scope/op:0'"
                )
            what = f"{role} '{spec['name']}' ({mapping[spec['name']]})"
            tensor = _graph_tensor(graph, mapping[spec["name"]], f"node_name_mapping {role} '{spec['name']}'")
            _check_tensor(spec, spec_dtype(tensor.dtype, what), _shape_dims(tensor.shape), what)


# ---------------------------------------------------------------------------------------------
# the backend


@contextmanager
def _quiet_tf_warnings() -> Iterator[None]:
    """Hide TF's python-side deprecation WARNINGs (the v1 loader's); errors still show."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class _SessionSignature:
    """One signature bound to a session: feeds and fetches by spec name, callables per output set."""

    def __init__(self, session: tf.compat.v1.Session, feeds: dict[str, tf.Tensor], fetches: dict[str, tf.Tensor]):
        self.session = session
        self.input_names = list(feeds)
        self.feed_list = [feeds[n] for n in self.input_names]
        self.fetches = fetches
        self.all_outputs = tuple(fetches)
        self._callables: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()

    def _callable(self, outputs: tuple[str, ...]) -> Any:
        fn = self._callables.get(outputs)
        if fn is None:
            with self._lock:
                fn = self._callables.get(outputs)
                if fn is None:
                    fn = self.session.make_callable([self.fetches[n] for n in outputs], self.feed_list)
                    self._callables[outputs] = fn
        return fn

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None) -> dict[str, Any]:
        names = self.all_outputs if outputs is None else tuple(o for o in outputs if o in self.fetches)
        values = self._callable(names)(*[inputs[n] for n in self.input_names])
        return {n: _from_tf(v) for n, v in zip(names, values)}


def _from_tf(value: Any) -> Any:
    """Session results as arrays: scalar strings come back as bytes, scalars as numpy scalars."""
    if isinstance(value, bytes):
        return np.array(value, dtype=object)
    return value


class TensorFlowBackend(Backend):
    """Runs a frozen graph or a SavedModel in a ``tf.compat.v1.Session``."""

    platform = "tensorflow"

    def __init__(self, root: Path, manifest: Any) -> None:
        super().__init__(root, manifest)
        options = manifest.platform_options
        fmt = options.get("format")
        self._graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=self._graph)
        self._by_name: dict[str | None, _SessionSignature] = {}
        try:
            if fmt == "graph":
                self._load_graph(options)
            elif fmt == "saved_model":
                self._load_saved_model(options)
            else:
                raise BackendError(f"unknown tensorflow payload format {fmt!r} (expected graph or saved_model)")
        except BaseException:
            self._session.close()
            raise

    def _load_graph(self, options: Mapping[str, Any]) -> None:
        graph_def = read_graph_def(self.root / FROZEN_GRAPH)
        with self._graph.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="")
        mapping = options["node_name_mapping"]
        feeds = {s.name: self._graph.get_tensor_by_name(mapping[s.name]) for s in self.manifest.inputs}
        fetches = {s.name: self._graph.get_tensor_by_name(mapping[s.name]) for s in self.manifest.outputs}
        self._by_name[None] = _SessionSignature(self._session, feeds, fetches)

    def _load_saved_model(self, options: Mapping[str, Any]) -> None:
        tags = list(options.get("tags", DEFAULT_TAGS))
        with self._graph.as_default(), _quiet_tf_warnings():
            meta = tf.compat.v1.saved_model.loader.load(self._session, tags, str(self.root / SAVED_MODEL))
        default = options.get("signature", DEFAULT_SIGNATURE)
        wanted = {default: (self.manifest.inputs, self.manifest.outputs)}
        for name, spec in options.get("signatures", {}).items():
            wanted[name] = (parse_spec(spec["input_spec"]), parse_spec(spec["output_spec"]))
        for name, (ins, outs) in wanted.items():
            if name not in meta.signature_def:
                raise BackendError(f"the SavedModel has no signature {name!r}")
            sig = meta.signature_def[name]
            feeds = {s.name: self._graph.get_tensor_by_name(sig.inputs[s.name].name) for s in ins}
            fetches = {s.name: self._graph.get_tensor_by_name(sig.outputs[s.name].name) for s in outs}
            runner = _SessionSignature(self._session, feeds, fetches)
            self._by_name[name] = runner
            if name == default:
                self._by_name[None] = runner

    def signatures(self) -> dict[str, tuple[Spec, Spec]]:
        return {
            name: (list(spec["input_spec"]), list(spec["output_spec"]))
            for name, spec in self.manifest.platform_options.get("signatures", {}).items()
        }

    def run(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None,
        signature: str | None = None,
    ) -> Mapping[str, Any]:
        runner = self._by_name.get(signature)
        if runner is None:
            raise BackendError(f"unknown signature {signature!r}; known: {[s for s in self._by_name if s]}")
        return runner.run(inputs, outputs)

    def close(self) -> None:
        self._session.close()


# ---------------------------------------------------------------------------------------------
# packing
