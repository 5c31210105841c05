"""Every error modelpod raises, in one hierarchy: catch :class:`ModelpodError` to catch them all.

=====================  ==========================================================  ==============
class                  raised when                                                 also a
=====================  ==========================================================  ==============
SpecError              a tensor spec, or tensors checked against one, is wrong      ValueError
PackageError           a package is missing, malformed or tampered with             ValueError
BackendError           a backend cannot load or run its model (missing framework)   RuntimeError
FrameworkMissingError  ... because its framework is not installed (names the extra) BackendError, ImportError
ModelError             the model ran but broke its own contract (outputs off spec)  RuntimeError
CodecError             bytes on the wire do not decode to tensors (or back)         ValueError
TooLargeError          a compressed body expands past the size limit                CodecError
WireError              protobuf wire bytes are malformed                            CodecError
BridgeError            a worker process broke the worker protocol, or refused it    RuntimeError
WorkerDiedError        a worker process exited while it held a request              BridgeError
WorkerError            a worker process reported a failed request (``kind``)        ModelError
WorkerInputError       ... because the request's input was wrong                    SpecError
EnvBuildError          a package's requirements cannot be resolved or installed     RuntimeError
ServeError             the server refuses one request (``kind`` picks each status)  -
ServerError            the client SDK: a server (or the network) refused a call     -
RawHttpError           ``modelpod bench``'s HTTP driver: an exchange failed         -
=====================  ==========================================================  ==============

The built-in base each one also has keeps ``except ValueError`` code working.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def clip(text: str, size: int = 200) -> str:
    """``text`` cut to ``size`` characters for an error message, marked when cut (no echo of megabytes)."""
    return text if len(text) <= size else f"{text[:size]}... ({len(text)} characters)"


class ModelpodError(Exception):
    """The base of every error modelpod raises on purpose."""


class SpecError(ModelpodError, ValueError):
    """A tensor spec is malformed, or tensors do not match it (the message names the tensor).

    A tensor of the wrong dtype also carries what was wrong as fields: ``tensor`` (its name),
    ``role`` ("input" or "output"), ``expected`` and ``actual`` (spec dtype names), so a server can
    say it in its wire's words (:meth:`in_words`) where the message speaks numpy.
    """

    def __init__(self, message: str, *, tensor: str | None = None, role: str = "input",
                 expected: str | None = None, actual: str | None = None) -> None:
        super().__init__(message)
        self.tensor, self.role, self.expected, self.actual = tensor, role, expected, actual

    def in_words(self, names: Mapping[str, str], field: str = "datatype") -> str:
        """The message with dtypes named as a wire names them (``names``: spec dtype -> wire name,
        ``field``: what the wire calls a dtype), e.g. ``input 'x': expected datatype FP32, got FP64``;
        the message itself when it is not about a dtype."""
        if self.tensor is None or self.expected is None or self.actual is None:
            return str(self)
        return (f"{self.role} '{self.tensor}': expected {field} {names.get(self.expected, self.expected)}, "
                f"got {names.get(self.actual, self.actual)}")


class PackageError(ModelpodError, ValueError):
    """A package is missing, malformed, or its files do not match the manifest."""


class BackendError(ModelpodError, RuntimeError):
    """A backend cannot load or run its model (missing framework, broken payload...)."""


class FrameworkMissingError(BackendError, ImportError):
    """A model's framework cannot be imported: ``framework`` is the missing module, ``extra`` the
    modelpod extra that installs it, ``model`` the model's name when known (see :meth:`for_model`)."""

    def __init__(self, platform: str, framework: str, extra: str | None, model: str | None = None,
                 reason: str | None = None) -> None:
        self.platform, self.framework, self.extra, self.model, self.reason = platform, framework, extra, model, reason
        who = f"model '{model}'" if model else f"{platform} models"
        verb = "needs" if model else "need"
        install = f"pip install 'modelpod[{extra}]'" if extra else f"pip install {framework}"
        detail = f" (importing it failed: {reason})" if reason else ""
        super().__init__(f"{who} {verb} {framework}{detail}: {install}")
        self.name = framework

    def for_model(self, model: str) -> "FrameworkMissingError":
        """The same error, naming the model."""
        return FrameworkMissingError(self.platform, self.framework, self.extra, model, self.reason)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.platform, self.framework, self.extra, self.model, self.reason))


class ModelError(ModelpodError, RuntimeError):
    """The model ran but broke its own contract (an output missing or off its spec)."""


class CodecError(ModelpodError, ValueError):
    """Bytes do not decode to tensors (or tensors cannot be encoded); the message says which and why."""


class TooLargeError(CodecError):
    """A compressed body expands past the size limit (413 on the server)."""


class WireError(CodecError):
    """Protobuf wire bytes are malformed (truncated varint, bad field...)."""


#: kind -> (HTTP status, EAS status, gRPC status code name); each protocol maps them as the table in ServeError says
SERVE_KINDS: dict[str, tuple[int, int, str]] = {
    "bad_input": (400, 400, "INVALID_ARGUMENT"),
    "unauthorized": (401, 401, "UNAUTHENTICATED"),
    "forbidden": (403, 403, "PERMISSION_DENIED"),
    "not_found": (404, 404, "NOT_FOUND"),
    "method": (405, 405, "UNIMPLEMENTED"),
    "too_large": (413, 413, "RESOURCE_EXHAUSTED"),
    "model_failed": (500, 500, "INTERNAL"),
    "not_ready": (503, 503, "UNAVAILABLE"),
    "queue_full": (503, 450, "RESOURCE_EXHAUSTED"),
    "deadline": (504, 408, "DEADLINE_EXCEEDED"),
}


class BridgeError(ModelpodError, RuntimeError):
    """A worker process broke the worker protocol, speaks another bridge version, or failed to load."""


class WorkerDiedError(BridgeError):
    """A worker process exited (killed, crashed) while it held a request; ``exit_code`` says how."""

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class WorkerError(ModelError):
    """What a worker process reported for one request; ``kind`` is the bridge's error kind."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class WorkerInputError(WorkerError, SpecError):
    """The worker found the request's input wrong (a SpecError where the model runs)."""


class EnvBuildError(ModelpodError, RuntimeError):
    """A package's requirements cannot be resolved or installed; the message carries uv's own."""


class ServeError(ModelpodError):
    """A request failed on the server; ``kind`` picks the status on each protocol."""

    def __init__(self, kind: str, message: str, spec_error: SpecError | None = None) -> None:
        super().__init__(message)
        if kind not in SERVE_KINDS:
            raise ValueError(f"unknown error kind {kind!r}")
        self.kind = kind
        self.message = message
        #: the SpecError this reports (its text is part of ``message``), for :meth:`in_words`
        self.spec_error = spec_error

    def in_words(self, names: Mapping[str, str], field: str = "datatype") -> str:
        """``message`` with the SpecError it reports said in a wire's words (see
        :meth:`SpecError.in_words`): what a protocol front end answers."""
        spec = self.spec_error
        if spec is None or spec.expected is None:
            return self.message
        return self.message.replace(str(spec), spec.in_words(names, field))

    @property
    def http_status(self) -> int:
        return SERVE_KINDS[self.kind][0]

    @property
    def eas_status(self) -> int:
        return SERVE_KINDS[self.kind][1]

    @property
    def grpc_code(self) -> str:
        """The gRPC status code's name (``grpc.StatusCode[name]``)."""
        return SERVE_KINDS[self.kind][2]

    def __str__(self) -> str:
        return self.message


#: gRPC status name -> the HTTP status modelpod answers for the same failure
GRPC_TO_HTTP = {
    "INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404,
    "UNIMPLEMENTED": 405, "RESOURCE_EXHAUSTED": 503, "INTERNAL": 500, "UNKNOWN": 500,
    "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504, "CANCELLED": 499,
}


class ServerError(ModelpodError):
    """A client call failed: ``status`` is the HTTP status, ``message`` the server's own text.

    Over gRPC ``status`` is the HTTP status of the same failure (INVALID_ARGUMENT -> 400,
    NOT_FOUND -> 404, UNAVAILABLE -> 503...) so code can move between protocols unchanged;
    ``grpc_code`` keeps the gRPC name. ``status`` is 0 when no answer came back at all
    (connection refused after every retry, network timeout).
    """

    def __init__(self, status: int, message: str, grpc_code: str | None = None) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.grpc_code = grpc_code

    def __reduce__(self) -> tuple[Any, ...]:  # keep pickling (multiprocessing, pytest-xdist) working
        return (type(self), (self.status, self.message, self.grpc_code))


class RawHttpError(ModelpodError):
    """The load generator's connection failed or its response could not be read."""


class ResponseCountError(SpecError):
    """A decoupled model sent no answer or several to a call that takes exactly one
    (``Model.infer``, HTTP infer, gRPC ModelInfer): the caller picked the wrong call, so it is the
    caller's error (400 on every protocol), as a SpecError is."""
