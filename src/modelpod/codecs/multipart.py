"""multipart/form-data bodies (RFC 7578) -> ``{field: value}``, files as ``{field: {filename: file}}``
(the form ModelArts hands a service). Malformed bodies raise CodecError; bodies past a limit raise
TooLargeError.
"""

from __future__ import annotations

import base64
import binascii
import io
import quopri
import re
from typing import Any
from urllib.parse import unquote

from modelpod.errors import CodecError, TooLargeError, clip


def _boundary(content_type: str) -> bytes:
    """The multipart boundary named in a Content-Type (RFC 2046: 1 to 70 characters)."""
    value = content_type.split("boundary=", 1)[1].split(";", 1)[0].strip()
    if value.startswith('"'):
        value = value[1:].split('"', 1)[0]
    if not 0 < len(value) <= 70:
        raise CodecError("the multipart boundary must be 1 to 70 characters")
    return value.encode("latin-1", "replace")


#: header lines one multipart part may have (TooLargeError past it: 413)
MAX_PART_HEADERS = 64
_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def decode_multipart(content_type: str, body: bytes,
                     max_fields: int = 1000) -> dict[str, Any]:
    """Parse a multipart/form-data body (RFC 7578) of at most ``max_fields`` parts (TooLargeError past it: 413).

    One linear pass over the body: parts are not parsed recursively (a part that is itself
    multipart is just its bytes), each part may have at most ``MAX_PART_HEADERS`` header lines,
    and a ``Content-Transfer-Encoding`` of base64 or quoted-printable is undone. The server calls
    it off the event loop.
    """
    if "boundary=" not in content_type:
        raise CodecError("multipart/form-data without a boundary")
    delimiter = b"--" + _boundary(content_type)
    parts = body.count(delimiter) - 1  # delimiters, less the closing one
    if parts > max_fields:
        raise TooLargeError(f"the multipart body has {parts} parts, more than the server limit "
                         f"of {max_fields} (--max-form-fields)")
    pos = body.find(delimiter)
    if pos < 0:
        raise CodecError("the multipart body cannot be parsed: its boundary is not in it")
    pos += len(delimiter)
    form: dict[str, Any] = {}
    while not body.startswith(b"--", pos):  # "--" after a delimiter closes the body
        line_end = body.find(b"\r\n", pos)
        if line_end < 0:
            raise CodecError("the multipart body ends without its closing boundary")
        pos = line_end + 2
        head_end = pos if body.startswith(b"\r\n", pos) else body.find(b"\r\n\r\n", pos)
        if head_end < 0:
            raise CodecError("a multipart part has no blank line after its headers")
        headers = _part_headers(body[pos:head_end])
        content = head_end + (2 if head_end == pos else 4)
        next_part = body.find(b"\r\n" + delimiter, content)
        if next_part < 0:
            raise CodecError("the multipart body ends inside a part (no closing boundary)")
        _add_part(form, headers, body[content:next_part])
        pos = next_part + 2 + len(delimiter)
    return form


def _part_headers(blob: bytes) -> dict[str, str]:
    """One part's header lines, lower-case names (UTF-8, as browsers send file names)."""
    lines = blob.split(b"\r\n") if blob else []
    if len(lines) > MAX_PART_HEADERS:
        raise TooLargeError(f"a multipart part has {len(lines)} header lines, more than {MAX_PART_HEADERS}")
    headers = {}
    for line in lines:
        name, sep, value = line.decode("utf-8", "replace").partition(":")
        if not sep:
            raise CodecError(f"a multipart part header is malformed: {clip(name, 80)!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


def _params(value: str) -> dict[str, str]:
    """The parameters of a header value such as ``form-data; name="f"; filename*=UTF-8''a%20b``."""
    params = {}
    for key, raw in _PARAM.findall(value):
        raw = raw.strip()
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[key.lower()] = raw
    extended = params.get("filename*")
    if extended and "''" in extended:  # RFC 5987: charset'language'percent-encoded
        charset, _, encoded = extended.partition("''")
        try:
            params["filename"] = unquote(encoded, encoding=charset.split("'")[0] or "utf-8", errors="strict")
        except (LookupError, UnicodeDecodeError):
            raise CodecError(f"a multipart filename* cannot be decoded: {clip(extended, 80)!r}") from None
    return params


def _add_part(form: dict[str, Any], headers: dict[str, str], payload: bytes) -> None:
    """Put one part in ``form``: a plain field as str, a file as ``{filename: file}``."""
    disposition = _params(headers.get("content-disposition", ""))
    field = disposition.get("name")
    if not field:
        raise CodecError("a multipart part has no name")
    coding = headers.get("content-transfer-encoding", "").lower()
    try:
        if coding == "base64":
            payload = base64.b64decode(payload)
        elif coding == "quoted-printable":
            payload = quopri.decodestring(payload)
    except (binascii.Error, ValueError):
        raise CodecError(f"multipart field '{field}' is not valid {coding}") from None
    filename = disposition.get("filename")
    seen = form.get(field)
    if seen is not None and (filename is None or not isinstance(seen, dict) or filename in seen):
        raise CodecError(f"multipart field '{field}' is sent more than once; only "
                         "files with different filenames may share a field name")
    if filename is None:
        form[field] = payload.decode("utf-8", "replace")
        return
    file = io.BytesIO(payload)
    file.name = filename
    form.setdefault(field, {})[filename] = file
