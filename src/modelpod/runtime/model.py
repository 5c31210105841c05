"""``modelpod.load(path)``: the one way to run any package, whatever framework it came from."""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelpod.backends.base import Backend, backend_class
from modelpod.errors import ModelError, PackageError
from modelpod.package.archive import extract_archive, is_archive
from modelpod.package.layout import TEST_EXPECTED, TEST_INPUTS
from modelpod.package.manifest import Manifest, read_manifest
from modelpod.package.vectors import load_npz
from modelpod.runtime.sequence import ResponseCountError, SequenceContext
from modelpod.spec import SpecChecker, SpecError, TensorSpec


@dataclass(frozen=True)
class ModelSpec:
    """The inputs and outputs of one signature of a model."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


class _Signature:
    """Compiled checkers for one signature."""

    def __init__(self, input_spec: Sequence[Any], output_spec: Sequence[Any]) -> None:
        self.inputs = SpecChecker(input_spec, "input")
        self.outputs = SpecChecker(output_spec, "output")
        self.spec = ModelSpec(self.inputs.specs, self.outputs.specs)


def _check_requested(sig: _Signature, outputs: Sequence[str]) -> None:
    """SpecError unless every requested output name is one of the signature's outputs."""
    unknown = [o for o in outputs if o not in sig.outputs.by_name]
    if unknown:
        raise SpecError(f"unknown output(s) {unknown} requested; this model's outputs are {sig.outputs.names}")


_NO_ANSWER: Any = object()


class Model:
    """A loaded package. Use as a context manager, or call :meth:`close` when done."""

    def __init__(self, root: Path, manifest: Manifest, backend: Backend, cleanup: Path | None) -> None:
        self.root = root
        self.manifest = manifest
        self._backend = backend
        self._default = _Signature(manifest.input_spec, manifest.output_spec)
        self._signatures: dict[str, _Signature] = {
            name: _Signature(ins, outs) for name, (ins, outs) in backend.signatures().items()
        }
        self._finalizer = weakref.finalize(self, _cleanup, backend, cleanup)
        self._closed = False
        #: the backend keeps per-sequence state / yields its answers (modelpod.runtime.sequence)
        self._stateful = bool(getattr(backend, "stateful", False))
        self._decoupled = bool(getattr(backend, "decoupled", False))

    # -- what there is to read ---------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def platform(self) -> str:
        return self.manifest.platform

    @property
    def spec(self) -> ModelSpec:
        return self._default.spec

    @property
    def stateful(self) -> bool:
        """The model keeps state per sequence (its call takes ``sequence=``)."""
        return self._stateful

    @property
    def decoupled(self) -> bool:
        """The model yields zero, one or many answers per request (see :meth:`infer_stream`)."""
        return self._decoupled

    @property
    def signatures(self) -> dict[str, ModelSpec]:
        """Named signatures besides the default one (TF SavedModels may have several)."""
        return {name: sig.spec for name, sig in self._signatures.items()}

    def signature_spec(self, signature: str | None = None) -> ModelSpec:
        return self._signature(signature).spec

    # -- running -------------------------------------------------------------------------------
    def _signature(self, signature: str | None) -> _Signature:
        if signature is None or signature == self.manifest.platform_options.get("signature"):
            return self._default
        try:
            return self._signatures[signature]
        except KeyError:
            known = [self.manifest.platform_options.get("signature") or "(default)", *self._signatures]
            raise SpecError(f"unknown signature {signature!r}; this model has {known}") from None

    def check_inputs(
        self, inputs: Mapping[str, Any], outputs: Sequence[str] | None = None,
        signature: str | None = None,
    ) -> tuple[dict[str, np.ndarray], dict[str, tuple[int, str]]]:
        """Validate inputs (and requested output names); raise SpecError naming what is wrong."""
        return self._check_inputs(self._signature(signature), inputs, outputs)

    def infer(
        self, inputs: Mapping[str, Any], outputs: Sequence[str] | None = None,
        signature: str | None = None, *, sequence: SequenceContext | None = None,
    ) -> dict[str, np.ndarray]:
        """Run the model on a dict of named tensors and return a dict of named numpy arrays.

        Inputs are checked against the spec first (SpecError on mismatch); ``outputs`` limits the
        result to those names; ``signature`` picks a named signature where the model has several.
        A stateful model runs in ``sequence`` (default: a sequence of this one request); a
        decoupled model must yield exactly one answer here (ResponseCountError otherwise: use
        :meth:`infer_stream`).
        """
        if self._closed:
            raise RuntimeError(f"model '{self.name}' is closed")
        sig = self._default if signature is None else self._signature(signature)
        bindings: dict[str, tuple[int, str]] = {}
        arrays = sig.inputs.check(inputs, bindings)
        if outputs is not None:
            _check_requested(sig, outputs)
        if self._stateful or self._decoupled:
            raw = self._run(arrays, outputs, signature, sequence)
            if self._decoupled:
                raw = self._only_answer(raw)
        else:
            raw = self._backend.run(arrays, outputs, signature)
        return self._checked_outputs(sig, raw, outputs, bindings)

    def infer_stream(
        self, inputs: Mapping[str, Any], outputs: Sequence[str] | None = None,
        signature: str | None = None, *, sequence: SequenceContext | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Every answer of one request, each checked as :meth:`infer` checks its one.

        A decoupled model's answers come as it yields them (closing the iterator closes the
        model's generator); any other model gives its one answer. Inputs are checked at once.
        """
        if not self._decoupled:
            return iter((self.infer(inputs, outputs, signature, sequence=sequence),))
        if self._closed:
            raise RuntimeError(f"model '{self.name}' is closed")
        sig = self._default if signature is None else self._signature(signature)
        bindings: dict[str, tuple[int, str]] = {}
        arrays = sig.inputs.check(inputs, bindings)
        if outputs is not None:
            _check_requested(sig, outputs)
        return self._checked_answers(sig, self._run(arrays, outputs, signature, sequence), outputs, bindings)

    def _run(self, arrays: dict[str, np.ndarray], outputs: Sequence[str] | None, signature: str | None,
             sequence: SequenceContext | None) -> Any:
        """The backend's call of a stateful or decoupled model (a stateful one always in a sequence)."""
        if self._stateful:
            return self._backend.run(arrays, outputs, signature,  # type: ignore[call-arg]
                                     sequence=sequence if sequence is not None else SequenceContext.single())
        return self._backend.run(arrays, outputs, signature)

    def _answers(self, raw: Any) -> Iterator[Any]:
        if isinstance(raw, Mapping) or not isinstance(raw, Iterable):
            raise ModelError(f"model '{self.name}' is decoupled: it must return (or yield) an iterator of "
                             f"output dicts, got {type(raw).__name__}")
        return iter(raw)

    def _only_answer(self, raw: Any) -> Any:
        """The single answer of a decoupled call; ResponseCountError when it sends none or more."""
        answers = self._answers(raw)
        try:
            first = next(answers, _NO_ANSWER)
            extra = first is not _NO_ANSWER and next(answers, _NO_ANSWER) is not _NO_ANSWER
        finally:
            close = getattr(answers, "close", None)
            if close is not None:
                close()
        if first is _NO_ANSWER or extra:
            sent = "no answer" if first is _NO_ANSWER else "more than one answer"
            raise ResponseCountError(
                f"the model is decoupled and sent {sent} to this request; this call carries exactly "
                "one: stream it instead (gRPC ModelStreamInfer, e.g. tritonclient.grpc start_stream + "
                "async_stream_infer; in process, Model.infer_stream)")
        return first

    def _checked_answers(self, sig: _Signature, raw: Any, outputs: Sequence[str] | None,
                         bindings: dict[str, tuple[int, str]]) -> Iterator[dict[str, np.ndarray]]:
        answers = self._answers(raw)
        try:
            for answer in answers:
                yield self._checked_outputs(sig, answer, outputs, dict(bindings))
        finally:
            close = getattr(answers, "close", None)
            if close is not None:
                close()

    def _checked_outputs(self, sig: _Signature, raw: Any, outputs: Sequence[str] | None,
                         bindings: dict[str, tuple[int, str]]) -> dict[str, np.ndarray]:
        """One answer of the model, checked against the signature's outputs (ModelError if off)."""
        if type(raw) is not dict and not isinstance(raw, Mapping):
            raise ModelError(
                f"model '{self.name}' returned {type(raw).__name__}; it must return a dict of outputs"
            )
        if outputs is not None:
            raw = {name: raw[name] for name in outputs if name in raw}
            missing = [o for o in outputs if o not in raw]
            if missing:
                raise ModelError(f"model '{self.name}' did not return output(s) {missing}")
        elif len(raw) > len(sig.outputs.specs):  # the check below finds missing ones
            unexpected = [k for k in raw if k not in sig.outputs.by_name]
            raise ModelError(
                f"model '{self.name}' returned output(s) {unexpected} that its output spec does "
                f"not declare ({sig.outputs.names})"
            )
        try:
            return sig.outputs.check(raw, bindings, subset=outputs is not None)
        except SpecError as exc:
            raise ModelError(f"model '{self.name}' broke its output spec: {exc}") from None

    def _check_inputs(
        self, sig: _Signature, inputs: Mapping[str, Any], outputs: Sequence[str] | None
    ) -> tuple[dict[str, np.ndarray], dict[str, tuple[int, str]]]:
        """Check inputs and requested output names against a resolved signature."""
        bindings: dict[str, tuple[int, str]] = {}
        arrays = sig.inputs.check(inputs, bindings)
        if outputs is not None:
            _check_requested(sig, outputs)
        return arrays, bindings

    __call__ = infer

    # -- test vectors ----------------------------------------------------------------------------
    def test_vectors(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None] | None:
        """The stored (test inputs, expected outputs or None), or None when the package has none."""
        inputs = self.root / TEST_INPUTS
        if not inputs.is_file():
            return None
        expected = self.root / TEST_EXPECTED
        return load_npz(inputs), load_npz(expected) if expected.is_file() else None

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        self._closed = True
        self._finalizer()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<modelpod.Model {self.name!r} platform={self.platform!r} root={str(self.root)!r}>"


def _cleanup(backend: Backend, tmp: Path | None) -> None:
    try:
        backend.close()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def resolve_package(path: str | Path) -> tuple[Path, Path | None]:
    """Return (package root, temp folder to remove later or None); archives are extracted safely."""
    path = Path(path)
    if not path.exists():
        raise PackageError(f"{path}: no such package, archive or folder")
    if path.is_file() and is_archive(path):
        # named after its owner (modelpod.serving.execution.stale removes it if that process was killed)
        tmp = Path(tempfile.mkdtemp(prefix=f"modelpod-{os.getpid()}-"))
        try:
            return extract_archive(path, tmp / "pkg"), tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    if path.is_file():
        raise PackageError(f"{path}: not a package folder or a .tar.gz/.tgz/.zip archive")
    return path, None


def load(path: str | Path, *, verify_hashes: bool = True, isolated: bool = False) -> Model:
    """Load a package folder or archive and return a :class:`Model` ready to ``infer``.

    ``isolated=True`` runs the model in a worker process with the package's own environment (built
    from its locked requirements on first use, see ``docs/environments.md``; a package without
    requirements gets one with what the worker needs and its framework, at this interpreter's
    versions): the same ``infer()``, out of process.
    """
    root, tmp = resolve_package(path)
    try:
        manifest = read_manifest(root, verify_hashes=verify_hashes)
        if isolated:
            backend: Backend = _isolated_backend(root, manifest, Path(path))
        else:
            backend = backend_class(manifest.platform)(root, manifest)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Model(root, manifest, backend, tmp)


def _isolated_backend(root: Path, manifest: Manifest, given: Path) -> Backend:
    from modelpod.runtime.isolated import package_environment
    from modelpod.runtime.workerproc import WorkerBackend, WorkerProcess, worker_command

    env = package_environment(root, manifest, str(given.resolve()), force=True)  # the archive, not its extraction
    assert env is not None
    worker = WorkerProcess(root, manifest.name, worker_command(env.python), label=f"model '{manifest.name}'")
    try:
        worker.start()
    except BaseException:
        env.release()
        raise
    return WorkerBackend(root, manifest, worker, on_close=env.release)
