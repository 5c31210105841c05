"""modelpod.serving.http._fastparse: the C request parser never disagrees with httptools.

``parse_request(data, offset, max_head, max_headers, max_body)`` either declines (None: the
server's httptools path decides) or answers ``(end, method, path, query, headers, body,
keep_alive)`` for the one simple HTTP/1.x request at ``data[offset:]``. Whatever it answers,
a fresh ``httptools.HttpRequestParser`` fed ``data[offset:end]`` must parse, without error, to
exactly that request, completing on the slice's last byte (not before), with every limit held.
It must decline what lies outside its subset (bare LF/CR, obs-fold, Transfer-Encoding, Upgrade,
Expect, repeated names, odd Content-Length or Connection, '#' or invisible bytes in the target,
other versions and methods, anything over a limit, anything incomplete), must accept the plain
requests real clients send (so a parser that always declines fails), and must never raise for
any bytes and offsets (TypeError only for wrong argument types or counts).
"""

from __future__ import annotations

import string
from typing import Any

import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelpod.serving.http._fastparse import parse_request

ROOMY = (8192, 100, 10000)  # max_head, max_headers, max_body
METHODS = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]
ODD_METHODS = ["get", "Post", "CONNECT", "TRACE", "PROPFIND", "FOO", "GETT", "GE", ""]
TCHAR = "!#$%&'*+-.^_`|~" + string.digits + string.ascii_letters
ADD = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[2],"data":[1,2]},' \
      b'{"name":"y","datatype":"FP32","shape":[2],"data":[3,4]}]}'


def req(line: bytes = b"POST /v2/models/add/infer HTTP/1.1", *headers: bytes, body: bytes = b"",
        length: bool = True) -> bytes:
    """A request: the line, the headers, Content-Length (when there is a body) and the body."""
    lines = [line, *headers] + ([b"Content-Length: %d" % len(body)] if body and length else [])
    return b"".join(x + b"\r\n" for x in lines) + b"\r\n" + body


class Recorder:
    """httptools' view of a request, gathered the way server.py's HttpProtocol gathers it."""

    def __init__(self) -> None:
        self.url, self.body, self.headers, self.lines, self.completed = b"", b"", {}, 0, 0
        self.method: bytes | None = None
        self.keep_alive: bool | None = None
        self.parser = httptools.HttpRequestParser(self)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key, self.lines = name.decode("latin-1").lower(), self.lines + 1
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.completed += 1
        self.method, self.keep_alive = self.parser.get_method(), self.parser.should_keep_alive()

    def feed(self, data: bytes) -> str | None:
        try:
            self.parser.feed_data(data)
        except Exception as exc:  # noqa: BLE001 - any error is a disagreement, reported whole
            return f"{type(exc).__name__}: {exc}"
        return None

    def view(self) -> dict[str, Any]:
        return {"url": self.url, "headers": self.headers, "body": self.body, "method": self.method,
                "keep_alive": self.keep_alive, "completed": self.completed}


def check(data: bytes, offset: int, max_head: int, max_headers: int, max_body: int) -> tuple | None:
    """Call the C parser; when it answers, hold the answer to httptools' and to the limits."""
    result = parse_request(data, offset, max_head, max_headers, max_body)
    if result is None:
        return None
    where = f"\ninput={data!r}\noffset={offset} limits={(max_head, max_headers, max_body)}\nC returned {result!r}"
    assert type(result) is tuple and len(result) == 7, where
    end, method, path, query, headers, body, keep_alive = result
    assert (type(end), type(method), type(path), type(query), type(headers), type(body), type(keep_alive)) == \
        (int, str, str, str, dict, bytes, bool), where
    assert offset < end <= len(data), where
    chunk = data[offset:end]
    seen = Recorder()
    error = seen.feed(chunk[:-1])
    assert error is None and seen.completed == 0, f"{where}\nhttptools on all but the last byte: {error} {seen.view()}"
    error = seen.feed(chunk[-1:])
    where += f"\nhttptools said {error or seen.view()!r}"
    assert error is None and seen.completed == 1, where
    url_path, mark, url_query = seen.url.partition(b"?")
    assert method == seen.method.decode(), where  # type: ignore[union-attr]
    assert (path, query) == (url_path.decode("latin-1"), url_query.decode("latin-1") if mark else ""), where
    assert headers == seen.headers, where
    assert body == seen.body, where
    assert keep_alive is seen.keep_alive, where
    assert end - offset - len(body) <= max_head, where
    assert seen.lines <= max_headers and len(body) <= max_body, where
    return result


# -- the differential test ----------------------------------------------------------------------
def cased(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from([name, name.lower(), name.upper(), name.swapcase()])


#: each part of a request as a client would send it (first) and as a careless or hostile one might
PARTS: dict[str, tuple[st.SearchStrategy, st.SearchStrategy]] = {}
PARTS["method"] = (st.sampled_from(METHODS), st.sampled_from(ODD_METHODS))
PARTS["sep"] = (st.just(" "), st.sampled_from(["  ", "\t", ""]))
PARTS["version"] = (st.sampled_from(["HTTP/1.1"] * 3 + ["HTTP/1.0"]),
                    st.sampled_from(["HTTP/2", "HTTP/1.10", "HTTP/2.0", "HTTP/1.2", "http/1.1", "HTTP/1.1 ",
                                     "HTTP/0.9", "HTTP/1"]))
CLEAN_PIECES = ["/"] * 6 + ["v2", "models", "add", "infer", "?", "a=1", "&", "%2F", "%", "~", "..", *"\"<>\\^`{|}@:;'[]!$()+,"]
PARTS["target"] = tuple(
    st.lists(st.sampled_from(pieces), min_size=1, max_size=8).map(lambda parts: "/" + "".join(parts))
    for pieces in (CLEAN_PIECES, CLEAN_PIECES + ["#", " ", "\x80", "\xff", "\x00", "\x7f", "\t", "*"] * 3))
PARTS["target"] = (PARTS["target"][0], st.one_of(PARTS["target"][1], PARTS["target"][0].map(lambda t: t[1:]),
                                                 st.sampled_from(["*", "http://h/p?q", "?x", ""])))
PARTS["name"] = (
    st.one_of(st.sampled_from(["Host", "Accept", "User-Agent", "Content-Type", "Accept-Encoding", "X-Request-Id"])
              .flatmap(cased), st.text(TCHAR, min_size=1, max_size=12)),
    st.sampled_from(["", "Bad Name", "X\x80", "Host ", " Host", "X\x00Y", "X\"Y", "X:Y"]))
VISIBLE = string.ascii_letters + string.digits + string.punctuation
PARTS["value"] = (
    st.tuples(st.sampled_from(["", "", " ", "  ", "\t", " \t"]), st.text(VISIBLE, max_size=12),
              st.text(VISIBLE + " \t", max_size=12).map(lambda v: v.rstrip(" \t"))).map("".join),
    st.one_of(st.tuples(st.text(VISIBLE + " \t", max_size=6), st.sampled_from([" ", "\t"])).map("".join),  # trailing OWS
              st.binary(min_size=1, max_size=6).map(lambda b: "v" + bytes(c | 0x80 for c in b).decode("latin-1")),
              st.sampled_from(["a\x00b", "a\x01", "\x7f", "a\x1fb", "a\x0bb", " ", "\t \t"])))
PARTS["length"] = (st.just("{n}"), st.sampled_from(
    ["{n1}", "{n2}", "{n7}", "abc", "+{n}", "{n} ", "0{n}", "000{n}", "99999999999999999999999", "18446744073709551616",
     "9223372036854775807", "-1", "", "{n},{n}", "{n}\t", "0x5", "{n}\x00"]))
PARTS["connection"] = (st.sampled_from([None, None, "close", "keep-alive"]),
                       st.sampled_from(["Keep-Alive", "CLOSE", "Close", "close, keep-alive", "upgrade", "te", ""]))
PARTS["special"] = (st.just(None), st.sampled_from(
    ["Transfer-Encoding: chunked", "Transfer-Encoding: identity", "Upgrade: h2c", "Upgrade: websocket",
     "Expect: 100-continue", "Connection: close\r\nConnection: close", " folded", "\tfolded"]))
PARTS["eol"] = (st.just("\r\n"), st.sampled_from(["\n", "\r", "\r\r\n", "\n\r"]))


@st.composite
def one_request(draw: Any) -> bytes:
    """A request whose parts are mostly clean: a few (none half the time) are drawn from their odd forms."""
    odd = draw(st.sets(st.sampled_from(sorted(PARTS)), min_size=1, max_size=2)) if not draw(st.integers(0, 2)) else set()

    def part(name: str) -> Any:
        clean, noisy = PARTS[name]
        return draw(noisy if name in odd and draw(st.integers(0, 2)) else clean)

    sep = part("sep")
    lines = [part("method") + sep + part("target") + part("sep") + part("version")]
    headers, seen = [], {"content-length", "connection"}
    for _ in range(draw(st.integers(0, 6))):
        name = part("name")
        if name.lower() not in seen or "name" in odd:  # repeats only when names are odd
            seen.add(name.lower())
            headers.append(f"{name}:{part('value')}")
    body = draw(st.binary(max_size=64)) if draw(st.booleans()) else b""
    n = len(body)
    if body or draw(st.booleans()):
        length = part("length").format(n=n, n1=max(n - 1, 0), n2=n + 1, n7=n + 7)
        headers.insert(draw(st.integers(0, len(headers))), draw(cased("Content-Length")) + ":"
                       + draw(st.sampled_from(["", " ", " ", "\t"])) + length)
    connection = part("connection")
    if connection is not None:
        headers.insert(draw(st.integers(0, len(headers))), draw(cased("Connection")) + ": " + connection)
    special = part("special")
    if special is not None:
        headers.insert(draw(st.integers(1 if special[0] in " \t" else 0, max(len(headers), 1))), special)
    if headers and "name" in odd and not draw(st.integers(0, 2)):  # a repeated name, in another case maybe
        name, _, value = draw(st.sampled_from(headers)).partition(":")
        headers.append(draw(cased(name)) + ":" + value)
    lines += headers
    eols = [part("eol") for _ in range(len(lines) + 1)]
    return "".join(line + eol for line, eol in zip(lines + [""], eols)).encode("latin-1") + body


CANONICAL = [req(b"POST /v2/models/add/infer HTTP/1.1", b"Host: 127.0.0.1:8000", body=ADD),
             req(b"GET /v2/health/ready?x=1 HTTP/1.0", b"Host: localhost", b"Connection: keep-alive")]


@st.composite
def mutated(draw: Any) -> bytes:
    data = bytearray(draw(st.sampled_from(CANONICAL)))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.integers(0, 2))
        if kind == 0:
            data[at] = draw(st.integers(0, 255))
        elif kind == 1:
            del data[at]
        else:
            data.insert(at, draw(st.sampled_from(b" \t\r\n:?#/0aA\x00\x80")))
    return bytes(data)


@st.composite
def streams(draw: Any) -> tuple[bytes, int]:
    data = draw(one_request()) if draw(st.integers(0, 6)) else draw(mutated())
    if not draw(st.integers(0, 3)):  # pipelined
        data += draw(st.one_of(one_request(), st.sampled_from(CANONICAL)))
    if not draw(st.integers(0, 9)):
        data = data[:draw(st.integers(0, len(data)))]
    prefix = draw(st.one_of(st.binary(max_size=16), st.sampled_from(CANONICAL))) if not draw(st.integers(0, 3)) else b""
    return prefix + data, len(prefix)


@settings(max_examples=1500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.integers(64, 8192), st.integers(1, 100), st.integers(0, 10000))
def test_whatever_c_answers_httptools_parses_the_same(stream: tuple[bytes, int], max_head: int,
                                                       max_headers: int, max_body: int) -> None:
    data, offset = stream
    check(data, offset, max_head, max_headers, max_body)


CLIENTS = {
    "wrk": req(b"POST /v2/models/add/infer HTTP/1.1", b"Host: 127.0.0.1:8000", body=ADD),
    "httpx": req(b"POST /v2/models/add/infer HTTP/1.1", b"Host: 127.0.0.1:8000", b"Accept: */*",
                 b"Accept-Encoding: gzip, deflate", b"Connection: keep-alive", b"User-Agent: python-httpx/0.27.0",
                 b"Content-Type: application/json", body=ADD),
    "requests": req(b"GET /v2/models/add HTTP/1.1", b"Host: localhost:8000", b"User-Agent: python-requests/2.31.0",
                    b"Accept-Encoding: gzip, deflate", b"Accept: */*", b"Connection: keep-alive"),
    "get": req(b"GET /v2/health/ready HTTP/1.1", b"Host: localhost"),
    "query": req(b"GET /v2/models/a%2Fb/ready?x=1&y=%2F HTTP/1.1", b"Host: h"),
    "close": req(b"DELETE /v2/repository/models/add HTTP/1.1", b"Host: h", b"Connection: close"),
    "http10": req(b"HEAD / HTTP/1.0", b"Host: h"),
    "http10-keep-alive": req(b"OPTIONS /v2 HTTP/1.0", b"Host: h", b"Connection: keep-alive"),
    "ows": req(b"PUT /x HTTP/1.1", b"Host:\t  h", b"X-Empty:", body=b"12345"),
    "patch": req(b"PATCH /x? HTTP/1.1", b"Host: h", body=b"{}"),
}
EXPECTED = {  # method, path, query, keep_alive, headers besides content-length
    "wrk": ("POST", "/v2/models/add/infer", "", True, {"host": "127.0.0.1:8000"}),
    "httpx": ("POST", "/v2/models/add/infer", "", True, {
        "host": "127.0.0.1:8000", "accept": "*/*", "accept-encoding": "gzip, deflate", "connection": "keep-alive",
        "user-agent": "python-httpx/0.27.0", "content-type": "application/json"}),
    "requests": ("GET", "/v2/models/add", "", True, {
        "host": "localhost:8000", "user-agent": "python-requests/2.31.0", "accept-encoding": "gzip, deflate",
        "accept": "*/*", "connection": "keep-alive"}),
    "get": ("GET", "/v2/health/ready", "", True, {"host": "localhost"}),
    "query": ("GET", "/v2/models/a%2Fb/ready", "x=1&y=%2F", True, {"host": "h"}),
    "close": ("DELETE", "/v2/repository/models/add", "", False, {"host": "h", "connection": "close"}),
    "http10": ("HEAD", "/", "", False, {"host": "h"}),
    "http10-keep-alive": ("OPTIONS", "/v2", "", True, {"host": "h", "connection": "keep-alive"}),
    "ows": ("PUT", "/x", "", True, {"host": "h", "x-empty": ""}),
    "patch": ("PATCH", "/x", "", True, {"host": "h"}),
}


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_the_requests_real_clients_send_are_accepted(client: str) -> None:
    data = CLIENTS[client]
    body = data[data.index(b"\r\n\r\n") + 4:]
    for offset, stream in ((0, data), (0, data + CLIENTS["get"]), (len(CLIENTS["wrk"]), CLIENTS["wrk"] + data)):
        result = check(stream, offset, *ROOMY)
        assert result is not None, f"declined {stream!r} at {offset}"
        method, path, query, keep_alive, headers = EXPECTED[client]
        if body:
            headers = {**headers, "content-length": str(len(body))}
        assert result == (offset + len(data), method, path, query, headers, body, keep_alive)


@pytest.mark.parametrize("client", ["wrk", "requests", "ows"])
def test_every_truncation_is_declined(client: str) -> None:
    data = CLIENTS[client]
    for cut in range(len(data)):
        assert parse_request(data[:cut], 0, *ROOMY) is None, data[:cut]
        assert parse_request(b"junk" + data[:cut], 4, *ROOMY) is None, data[:cut]
    assert check(data, 0, *ROOMY) is not None


# -- what it must decline -----------------------------------------------------------------------
H = b"Host: h"
DECLINED = {
    "empty": b"",
    "incomplete head": b"GET / HTTP/1.1\r\nHost: h\r\n",
    "incomplete body": req(b"POST / HTTP/1.1", H, b"Content-Length: 5", body=b"abc", length=False),
    "bare LF everywhere": b"GET / HTTP/1.1\nHost: h\n\n",
    "bare LF after the request line": b"GET / HTTP/1.1\nHost: h\r\n\r\n",
    "bare LF in a header line": b"GET / HTTP/1.1\r\nHost: h\n\r\n",
    "bare LF at the end": b"GET / HTTP/1.1\r\nHost: h\r\n\n",
    "bare CR": b"GET / HTTP/1.1\rHost: h\r\n\r\n",
    "bare CR in a value": b"GET / HTTP/1.1\r\nHost: h\rx\r\n\r\n",
    "obs-fold": req(b"GET / HTTP/1.1", H, b"X-A: a", b" b"),
    "obs-fold with a tab": req(b"GET / HTTP/1.1", H, b"X-A: a", b"\tb"),
    "transfer-encoding": req(b"POST / HTTP/1.1", H, b"Transfer-Encoding: chunked") + b"5\r\nhello\r\n0\r\n\r\n",
    "transfer-encoding and length": req(b"POST / HTTP/1.1", H, b"Transfer-Encoding: chunked", b"Content-Length: 0"),
    "upgrade": req(b"GET / HTTP/1.1", H, b"Connection: upgrade", b"Upgrade: websocket"),
    "upgrade alone": req(b"GET / HTTP/1.1", H, b"Upgrade: h2c"),
    "expect": req(b"POST / HTTP/1.1", H, b"Expect: 100-continue", body=b"hello"),
    "repeated name": req(b"GET / HTTP/1.1", H, H),
    "repeated name, other case": req(b"GET / HTTP/1.1", H, b"hOST: h"),
    "repeated content-length": req(b"POST / HTTP/1.1", H, b"Content-Length: 5", b"Content-Length: 5", body=b"hello",
                                   length=False),
    **{f"content-length {v!r}": req(b"POST / HTTP/1.1", H, b"Content-Length: " + v, body=b"hello", length=False)
       for v in (b"+5", b"-5", b"5a", b"0x5", b"", b"5,5", b"5 5", b"\xb5")},
    **{f"connection {v!r}": req(b"GET / HTTP/1.1", H, b"Connection: " + v)
       for v in (b"upgrade", b"close, keep-alive", b"keep-alive, close", b"te", b"", b"closed")},
    **{f"target {t!r}": req(b"GET " + t + b" HTTP/1.1", H)
       for t in (b"/a#b", b"/#", b"/\x80", b"/\xff", b"/\x00", b"/\x7f", b"/a\tb", b"/\x1b")},
    "space in target": req(b"GET /a b HTTP/1.1", H),
    "no target": req(b"GET HTTP/1.1", H),
    **{f"version {v!r}": req(b"GET / " + v, H)
       for v in (b"HTTP/2", b"HTTP/2.0", b"HTTP/1.10", b"HTTP/1.2", b"HTTP/0.9", b"HTTP/1", b"http/1.1",
                 b"HTTP/1.1 ", b"HTTP/1.1\t", b"")},
    **{f"method {m!r}": req(m + b" / HTTP/1.1", H)
       for m in (b"get", b"Post", b"CONNECT", b"TRACE", b"PROPFIND", b"FOO", b"GETT", b"GE", b"")},
    "no colon": req(b"GET / HTTP/1.1", H, b"X-A a"),
    "space before the colon": req(b"GET / HTTP/1.1", b"Host : h"),
    "empty name": req(b"GET / HTTP/1.1", H, b": a"),
    "name with obs-text": req(b"GET / HTTP/1.1", H, b"X-\xe9: a"),
    **{f"value with {c!r}": req(b"GET / HTTP/1.1", H, b"X-A: a" + c + b"b") for c in (b"\x00", b"\x01", b"\x7f")},
}


@pytest.mark.parametrize("name", sorted(DECLINED))
def test_what_lies_outside_the_subset_is_declined(name: str) -> None:
    assert parse_request(DECLINED[name], 0, *ROOMY) is None


def test_the_limits_are_declined_past_them_and_held_at_them() -> None:
    data = req(b"POST /v2/models/add/infer HTTP/1.1", b"Host: 127.0.0.1:8000", body=b"hello")
    head = len(data) - 5
    assert parse_request(data, 0, head - 1, 100, 10000) is None
    assert parse_request(data, 0, 8192, 1, 10000) is None
    assert parse_request(data, 0, 8192, 100, 4) is None
    assert check(data, 0, head, 2, 5) is not None
    for length in (b"18446744073709551615", b"18446744073709551616", b"9223372036854775807",
                   b"9223372036854775808", b"9" * 40):
        huge = req(b"POST / HTTP/1.1", H, b"Content-Length: " + length, body=b"x", length=False)
        assert parse_request(huge, 0, 2**63 - 1, 2**63 - 1, 2**63 - 1) is None, length


# -- robustness ---------------------------------------------------------------------------------
@settings(max_examples=1000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=4096), st.sampled_from(list(CLIENTS.values()))), st.data())
def test_any_bytes_and_offsets_return_none_or_a_request(data: bytes, draw: st.DataObject) -> None:
    offset = draw.draw(st.one_of(st.integers(0, len(data)), st.integers(-2**63, -1), st.integers(len(data) + 1, 2**63 - 1),
                                 st.sampled_from([-1, len(data) + 1, -2**63, 2**63 - 1])))
    limits = draw.draw(st.tuples(*[st.one_of(st.integers(0, 10000), st.just(2**63 - 1))] * 3))
    if 0 <= offset <= len(data):
        check(data, offset, *limits)
    else:
        assert parse_request(data, offset, *limits) is None


@pytest.mark.parametrize("args", [
    ("GET / HTTP/1.1\r\n\r\n", 0, *ROOMY), (None, 0, *ROOMY), (CLIENTS["get"], "0", *ROOMY),
    (CLIENTS["get"], 0.0, *ROOMY), (CLIENTS["get"], 0, None, 100, 10000), (CLIENTS["get"], 0, 8192, 100),
    (CLIENTS["get"], 0, *ROOMY, 0), (CLIENTS["get"],), (),
])
def test_wrong_argument_types_or_counts_raise_type_error(args: tuple) -> None:
    with pytest.raises(TypeError):
        parse_request(*args)
