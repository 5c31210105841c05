"""Token auth: a raw token, ``Bearer <token>``, or the EAS SDK's ``EAS <hmac-sha1>`` signature.

Comparisons are constant-time. The EAS signature is checked over the headers as received
(``POST\\n<Content-MD5>\\n<Content-Type>\\n<Date>\\n/api/predict/<service>``); the Date is not
checked for clock skew because the SDK writes local time labelled GMT.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

from modelpod.serving.errors import ServeError


def _equal(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def eas_signature(token: str, method: str, content_md5: str, content_type: str, date: str,
                  resource: str) -> str:
    """The signature the EAS SDK puts after ``EAS `` in the Authorization header."""
    message = f"{method}\n{content_md5}\n{content_type}\n{date}\n{resource}".strip()
    digest = hmac.new(token.encode(), message.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def check_token(token: str | None, given: str | None, *, headers: Mapping[str, str] | None = None,
                method: str = "POST", eas_resource: str | None = None) -> None:
    """Raise ServeError('unauthorized') unless ``given`` proves ``token`` (no-op when token is None)."""
    if not token:
        return
    if not given:
        raise ServeError("unauthorized", "this service needs a token: send 'Authorization: <token>'")
    value = given.strip()
    if value.startswith("Bearer "):
        value = value[7:].strip()
    elif value.startswith("EAS ") and eas_resource is not None and headers is not None:
        expected = eas_signature(
            token, method, headers.get("content-md5", ""), headers.get("content-type", ""),
            headers.get("date", ""), eas_resource,
        )
        if hmac.compare_digest(value[4:].strip().encode(), expected.encode()):
            return
        raise ServeError("unauthorized", "the EAS signature does not match this service's token")
    if not _equal(value, token):
        raise ServeError("unauthorized", "the token is not valid for this service")
