"""Token auth: a raw token, ``Bearer <token>``, or the EAS SDK's ``EAS <hmac-sha1>`` signature.

Comparisons are constant-time. The EAS signature is checked over the headers as received
(``POST\\n<Content-MD5>\\n<Content-Type>\\n<Date>\\n/api/predict/<service>``) and is bound to the
request it came with, so a captured one cannot be replayed with another body or much later:

* ``Content-MD5`` must be present for a non-empty body and match it (the SDK writes lower-case
  hex; RFC 1864's base64 is accepted too);
* ``Date`` must lie within ``date_window_s`` of the server's clock. The SDK formats local time
  and labels it GMT, so a Date within the window of the server's UTC time *or* of its local time
  passes: clients in UTC or in the server's time zone work unchanged; others need a wider window
  (``--eas-date-window``) or a raw / Bearer token. A window of 0 turns the Date check off.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import hmac
import time
from collections.abc import Mapping
from email.utils import parsedate_tz

from modelpod.errors import ServeError


def _equal(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def eas_signature(token: str, method: str, content_md5: str, content_type: str, date: str,
                  resource: str) -> str:
    """The signature the EAS SDK puts after ``EAS `` in the Authorization header."""
    message = f"{method}\n{content_md5}\n{content_type}\n{date}\n{resource}".strip()
    digest = hmac.new(token.encode(), message.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _md5_matches(header: str, body: bytes | memoryview) -> bool:
    digest = hashlib.md5(body).digest()  # noqa: S324 - the EAS protocol's choice, not ours
    given = header.strip()
    if hmac.compare_digest(given.lower().encode(), digest.hex().encode()):
        return True
    try:
        return hmac.compare_digest(base64.b64decode(given, validate=True), digest)
    except (binascii.Error, ValueError):
        return False


def _date_fresh(date: str, window_s: float, now: float | None = None) -> bool:
    """Whether an HTTP Date is within ``window_s`` of now, read as UTC or as this machine's local time."""
    parsed = parsedate_tz(date)
    if parsed is None:
        return False
    now = time.time() if now is None else now
    try:
        as_utc = calendar.timegm(parsed[:6])  # the fields as a UTC time
        as_local = time.mktime(parsed[:8] + (-1,))  # the same fields as this machine's local time
    except (OverflowError, ValueError):
        return False
    return abs(now - as_utc) <= window_s or abs(now - as_local) <= window_s


def check_eas_signature(token: str, signature: str, headers: Mapping[str, str], method: str,
                        resource: str, body: bytes | memoryview, date_window_s: float) -> None:
    """Raise ServeError('unauthorized') unless ``signature`` signs this very request with ``token``."""
    md5 = headers.get("content-md5", "")
    date = headers.get("date", "")
    expected = eas_signature(token, method, md5, headers.get("content-type", ""), date, resource)
    if not hmac.compare_digest(signature.strip().encode(), expected.encode()):
        raise ServeError("unauthorized", "the EAS signature does not match this service's token")
    if len(body) and not md5:
        raise ServeError("unauthorized", "an EAS-signed request with a body needs a Content-MD5 header "
                         "(the signature must cover the body)")
    if md5 and not _md5_matches(md5, body):
        raise ServeError("unauthorized", "Content-MD5 does not match the request body")
    if date_window_s > 0 and not _date_fresh(date, date_window_s):
        raise ServeError("unauthorized", f"the EAS signature's Date {date[:64]!r} is missing or more than "
                         f"{date_window_s:g} s from the server's clock; check the client's clock, or send "
                         "the raw token")


def check_token(token: str | None, given: str | None, *, headers: Mapping[str, str] | None = None,
                method: str = "POST", eas_resource: str | None = None, body: bytes | memoryview = b"",
                date_window_s: float = 900.0) -> None:
    """Raise ServeError('unauthorized') unless ``given`` proves ``token`` (no-op when token is None)."""
    if not token:
        return
    if not given:
        raise ServeError("unauthorized", "this service needs a token: send 'Authorization: <token>'")
    value = given.strip()
    if value.startswith("Bearer "):
        value = value[7:].strip()
    elif value.startswith("EAS ") and eas_resource is not None and headers is not None:
        check_eas_signature(token, value[4:], headers, method, eas_resource, body, date_window_s)
        return
    if not _equal(value, token):
        raise ServeError("unauthorized", "the token is not valid for this service")
