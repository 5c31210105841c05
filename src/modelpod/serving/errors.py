"""The one error table of the server: what went wrong -> status code on each protocol.

================  =====  ========  =========================  ===================
kind              v2     EAS path  gRPC                       TF Serving REST
================  =====  ========  =========================  ===================
bad_input         400    400       INVALID_ARGUMENT           400
unauthorized      401    401       UNAUTHENTICATED            401
forbidden         403    403       PERMISSION_DENIED          403
not_found         404    404       NOT_FOUND                  404
too_large         413    413       RESOURCE_EXHAUSTED         413
model_failed      500    500       INTERNAL                   500
not_ready         503    503       UNAVAILABLE                503
queue_full        503    450       RESOURCE_EXHAUSTED         503
deadline          504    408       DEADLINE_EXCEEDED          504
================  =====  ========  =========================  ===================
"""

from __future__ import annotations

import grpc

_HTTP = {
    "bad_input": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method": 405,
    "too_large": 413,
    "model_failed": 500,
    "not_ready": 503,
    "queue_full": 503,
    "deadline": 504,
}
_EAS_OVERRIDES = {"queue_full": 450, "deadline": 408}
_GRPC = {
    "bad_input": grpc.StatusCode.INVALID_ARGUMENT,
    "unauthorized": grpc.StatusCode.UNAUTHENTICATED,
    "forbidden": grpc.StatusCode.PERMISSION_DENIED,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "method": grpc.StatusCode.UNIMPLEMENTED,
    "too_large": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "model_failed": grpc.StatusCode.INTERNAL,
    "not_ready": grpc.StatusCode.UNAVAILABLE,
    "queue_full": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "deadline": grpc.StatusCode.DEADLINE_EXCEEDED,
}


class ServeError(Exception):
    """A request failed; ``kind`` picks the status on each protocol (see the module table)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        if kind not in _HTTP:
            raise ValueError(f"unknown error kind {kind!r}")
        self.kind = kind
        self.message = message

    @property
    def http_status(self) -> int:
        return _HTTP[self.kind]

    @property
    def eas_status(self) -> int:
        return _EAS_OVERRIDES.get(self.kind, _HTTP[self.kind])

    @property
    def grpc_status(self) -> grpc.StatusCode:
        return _GRPC[self.kind]

    def __str__(self) -> str:
        return self.message
