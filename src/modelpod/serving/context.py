"""What every protocol handler needs from the running server: the models and the auth rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelpod.serving.auth import check_token
from modelpod.serving.http import Request
from modelpod.serving.repository import Repository


@dataclass
class ServerContext:
    """Shared, per-server state (no globals: several servers can live in one process)."""

    repository: Repository
    token: str | None = None
    #: the server's Metrics (None: nothing recorded)
    metrics: Any = None
    #: the ModelManager behind the v2 repository API (None: no repository to manage)
    manager: Any = None

    def token_for(self, model: str) -> str | None:
        entry = self.repository.models.get(model)
        return (entry.token if entry is not None else None) or self.token

    def authorize(self, http: Request, model: str, eas_resource: str | None = None) -> None:
        """Raise ServeError('unauthorized') unless the request carries the model's token."""
        token = self.token_for(model)
        if token:
            check_token(token, http.headers.get("authorization"), headers=http.headers,
                        method=http.method, eas_resource=eas_resource)
