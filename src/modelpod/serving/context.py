"""What every protocol handler needs from the running server: the models, the auth rules, the limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelpod.errors import ServeError
from modelpod.serving.auth import check_token
from modelpod.serving.http.messages import Request
from modelpod.serving.limits import DEFAULT_LIMITS, Limits
from modelpod.serving.models.repository import Repository


@dataclass
class ServerContext:
    """Shared, per-server state (no globals: several servers can live in one process)."""

    repository: Repository
    token: str | None = None
    #: the server's Metrics (None: nothing recorded)
    metrics: Any = None
    #: the ModelManager behind the v2 repository API (None: no repository to manage)
    manager: Any = None
    #: what one request may claim (body size after decompression, multipart fields, EAS Date window)
    limits: Limits = DEFAULT_LIMITS
    #: the v2 repository API may load and unload models (``--model-control``)
    model_control: bool = False
    #: the dashboard's samples, events and recent errors (None: no dashboard)
    monitor: Any = None
    #: the system shared memory regions clients registered, a SharedMemoryRegistry (None: the
    #: extension is off; ``--shared-memory`` turns it on)
    shared_memory: Any = None

    def token_for(self, model: str) -> str | None:
        """The token ``model`` needs: its own, else the server's. A model the source gives a token
        that is not loaded (it failed to load, or was unloaded) keeps needing it."""
        entry = self.repository.models.get(model)
        if entry is not None:
            return entry.token or self.token
        own = self.manager.configured_token(model) if self.manager is not None else None
        return own or self.token

    def authorize(self, http: Request, model: str, eas_resource: str | None = None) -> None:
        """Raise ServeError('unauthorized') unless the request carries the model's token."""
        token = self.token_for(model)
        if token:
            check_token(token, http.headers.get("authorization"), headers=http.headers,
                        method=http.method, eas_resource=eas_resource, body=http.body,
                        date_window_s=self.limits.eas_date_window_s)

    def may_use(self, http: Request, model: str) -> bool:
        """Whether the request carries what ``model`` needs (listings show only such models)."""
        try:
            self.authorize(http, model)
        except ServeError:
            return False
        return True
