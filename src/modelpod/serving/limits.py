"""Every resource one client can claim from the server, bounded: the limits and their defaults.

One frozen object travels from the CLI (or :func:`modelpod.serving.asgi.create_app`) to the HTTP
server, the gRPC server and the protocol handlers, so each limit is set in one place. The table in
``docs/security.md`` lists each with its ``modelpod serve`` flag; keep the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What one request or connection may claim (sizes in bytes, times in seconds)."""

    #: largest request body, after decompression too (``--max-body-mb``); gRPC messages as well
    max_body_bytes: int = 256 << 20
    #: request line plus all header lines (``--max-header-kb``): 431 past it (414 for the URL alone)
    max_header_bytes: int = 64 << 10
    #: header lines per request (``--max-headers``): 431 past it
    max_headers: int = 100
    #: from a request's first byte to the end of its headers (``--header-timeout``): 408, closed
    header_timeout_s: float = 10.0
    #: longest silence while a body arrives (``--body-timeout``): 408, closed
    body_timeout_s: float = 30.0
    #: an open connection with no request in progress is closed after this (``--idle-timeout``)
    idle_timeout_s: float = 60.0
    #: open HTTP connections (``--max-connections``): past it an idle one is closed, else 503
    max_connections: int = 4096
    #: fields and files in one multipart body (``--max-form-fields``): 413 past it
    max_form_fields: int = 1000
    #: how far an EAS signature's Date may be from the server's clock (``--eas-date-window``; 0: unchecked)
    eas_date_window_s: float = 900.0
    #: gRPC calls in progress at once (``--max-grpc-calls``): RESOURCE_EXHAUSTED past it
    max_grpc_calls: int = 256
    #: after a final answer on a closing connection, how long unread request bytes are drained
    linger_s: float = 2.0
    #: requests one gRPC ModelStreamInfer stream may have in progress; the server reads no more of
    #: that stream until one is answered (the client's sends wait: gRPC flow control)
    max_stream_in_flight: int = 64
    #: a decoupled model's answers waiting to be written to one stream; past it the model waits
    max_stream_answers: int = 64
    #: system shared memory regions registered at once (``--max-shm-regions``; with ``--shared-memory``)
    max_shm_regions: int = 64
    #: bytes of all registered shared memory regions together (``--max-shm-mb``)
    max_shm_bytes: int = 1 << 30

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if value < 0 or (value == 0 and name not in ("eas_date_window_s", "linger_s")):
                flag = FLAGS.get(name, name)
                raise ValueError(f"{flag} must be {'>= 0' if name in ('eas_date_window_s', 'linger_s') else '> 0'}"
                                 f", got {value}")


#: the ``modelpod serve`` flag of each limit (for error messages)
FLAGS = {
    "max_body_bytes": "--max-body-mb", "max_header_bytes": "--max-header-kb", "max_headers": "--max-headers",
    "header_timeout_s": "--header-timeout", "body_timeout_s": "--body-timeout",
    "idle_timeout_s": "--idle-timeout", "max_connections": "--max-connections",
    "max_form_fields": "--max-form-fields", "eas_date_window_s": "--eas-date-window",
    "max_grpc_calls": "--max-grpc-calls", "max_shm_regions": "--max-shm-regions", "max_shm_bytes": "--max-shm-mb",
}


#: what ``modelpod serve`` uses when no flag changes it
DEFAULT_LIMITS = Limits()
