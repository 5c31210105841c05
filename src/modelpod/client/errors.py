"""The one exception the client SDK raises for a request the server (or the network) refused."""

from __future__ import annotations

#: gRPC status name -> the HTTP status modelpod answers for the same failure (serving/errors.py)
GRPC_TO_HTTP = {
    "INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404,
    "UNIMPLEMENTED": 405, "RESOURCE_EXHAUSTED": 503, "INTERNAL": 500, "UNKNOWN": 500,
    "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504, "CANCELLED": 499,
}


class ServerError(Exception):
    """A request failed: ``status`` is the HTTP status, ``message`` the server's own text.

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

    def __reduce__(self):  # keep pickling (multiprocessing, pytest-xdist) working
        return (type(self), (self.status, self.message, self.grpc_code))
