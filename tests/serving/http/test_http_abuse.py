"""Raw-HTTP abuse: what one hostile or careless client sends must never freeze, exhaust or open the server.

Every test talks to a real ``modelpod serve`` over raw sockets (no client library smoothing the
bytes), then checks the server still answers everyone else. Limits are set small on the command
line so each attack is cheap to send.
"""

from __future__ import annotations

import gzip
import re
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import zstandard

from tests.helpers.packages import pack_addition_model, session_root
from tests.helpers.servers import RunningServer, module_server
import json
from pathlib import Path
from tests.helpers.sched_models import (
    pack_counter, wait_until,
)

pytestmark = pytest.mark.timeout(120)

ADD = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[2],"data":[1,2]},' \
      b'{"name":"y","datatype":"FP32","shape":[2],"data":[3,4]}]}'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    package = pack_addition_model(session_root(tmp_path_factory) / "abuse_addition")
    yield from module_server(tmp_path_factory, package, "--max-body-mb", "1", "--header-timeout", "1",
                             "--body-timeout", "1", "--idle-timeout", "2", "--max-header-kb", "16",
                             "--max-headers", "50")


def connect(server: RunningServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_all(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection (or ``timeout`` passes)."""
    sock.settimeout(timeout)
    chunks = []
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except (socket.timeout, ConnectionResetError):
        pass
    return b"".join(chunks)


def send_raw(server: RunningServer, data: bytes, timeout: float = 10.0) -> bytes:
    with connect(server) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused early: the answer is still there to read
        return read_all(sock, timeout)


def statuses(raw: bytes) -> list[int]:
    """Status codes of every response in ``raw`` (interim 1xx included)."""
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


def post(path: str, body: bytes, *headers: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def healthy(server: RunningServer) -> bool:
    response = httpx.post(f"{server.url}/v2/models/addition/infer", content=ADD, timeout=10)
    return response.status_code == 200 and response.json()["outputs"][0]["data"] == [4.0, 6.0]


class Prober(threading.Thread):
    """Calls the model over and over while an attack runs; keeps the slowest answer time."""

    def __init__(self, server: RunningServer) -> None:
        super().__init__(daemon=True)
        self.server, self.stop, self.ok, self.failed = server, threading.Event(), 0, []

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                try:
                    r = client.post(f"{self.server.url}/v2/models/addition/infer", content=ADD)
                    self.ok += r.status_code == 200
                except httpx.HTTPError as exc:
                    self.failed.append(repr(exc))

    def __enter__(self) -> "Prober":
        self.start()
        for _ in range(100):  # the attack starts once the prober is being answered
            if self.ok:
                break
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(15)


# -- 1. header size and count ------------------------------------------------------------------
def test_one_header_repeated_80k_times_is_431_and_others_keep_being_served(server: RunningServer) -> None:
    attack = b"GET /v2 HTTP/1.1\r\nHost: x\r\n" + (b"X-Same: " + b"a" * 20 + b"\r\n") * 80_000 + b"\r\n"
    with Prober(server) as prober:
        answer = send_raw(server, attack)
    assert statuses(answer) == [431]
    assert b"header" in answer
    assert prober.ok > 0 and not prober.failed
    assert healthy(server)


def test_too_many_distinct_headers_is_431(server: RunningServer) -> None:
    attack = b"GET /v2 HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(100_000)) + b"\r\n"
    answer = send_raw(server, attack)
    assert statuses(answer) == [431]  # the byte limit stops this flood first
    assert healthy(server)


def test_more_header_lines_than_the_limit_is_431(server: RunningServer) -> None:
    for headers in (b"".join(b"X-H%d: v\r\n" % i for i in range(51)), b"X-Same: v\r\n" * 51):
        answer = send_raw(server, b"GET /v2 HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        assert statuses(answer) == [431]
        assert b"--max-headers" in answer
    assert statuses(send_raw(server, b"GET /v2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                     + b"".join(b"X-H%d: v\r\n" % i for i in range(40)) + b"\r\n")) == [200]


def test_one_huge_header_is_431(server: RunningServer) -> None:
    answer = send_raw(server, b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * (8 << 20) + b"\r\n\r\n")
    assert statuses(answer) == [431]
    assert healthy(server)


def test_huge_url_is_414_and_not_echoed(server: RunningServer) -> None:
    answer = send_raw(server, b"GET /v2/models/" + b"u" * (8 << 20) + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert statuses(answer) == [414]
    assert len(answer) < 2000


def test_a_404_echoes_at_most_a_short_piece_of_the_path(server: RunningServer) -> None:
    response = httpx.get(f"{server.url}/nowhere/{'p' * 12000}")
    assert response.status_code == 404
    assert len(response.content) < 1000 and "12009 characters" in response.text


# -- 3. timeouts -------------------------------------------------------------------------------
@pytest.mark.parametrize("sent, flag", [
    (b"POST /v2/models/addition/infer HTTP/1.1\r\nHost: x\r\n", b"--header-timeout"),
    (b"POST /v2/models/addition/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"in", b"--body-timeout"),
])
def test_half_sent_requests_get_408_and_are_closed(server: RunningServer, sent: bytes, flag: bytes) -> None:
    with connect(server) as sock:
        sock.sendall(sent)
        answer = read_all(sock, timeout=15)
    assert statuses(answer) == [408]
    assert flag in answer


def test_headers_trickled_one_byte_at_a_time_still_time_out(server: RunningServer) -> None:
    request = b"GET /v2 HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"s" * 200 + b"\r\n\r\n"
    with connect(server) as sock:
        for byte in request:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.05)
        answer = read_all(sock, timeout=10)
    assert statuses(answer) == [408]


def test_idle_keep_alive_connections_are_closed(server: RunningServer) -> None:
    with connect(server) as sock:
        sock.sendall(post("/v2/models/addition/infer", ADD))
        answer = read_all(sock, timeout=15)  # returns once the server closes the idle connection
    assert statuses(answer) == [200]


def test_many_half_sent_requests_do_not_lock_anyone_out(server: RunningServer) -> None:
    socks = []
    try:
        for _ in range(300):
            sock = connect(server)
            sock.sendall(b"POST /v2/models/addition/infer HTTP/1.1\r\nHost: x\r\nContent-Le")
            socks.append(sock)
        assert healthy(server)
        with grpc_client(server) as client:
            assert client.is_server_live()
    finally:
        for sock in socks:
            sock.close()


def grpc_client(server: RunningServer):  # noqa: ANN201 - tritonclient's own type
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(server.grpc_target)


def test_past_the_connection_cap_idle_connections_make_room(tmp_path_factory: pytest.TempPathFactory) -> None:
    package = pack_addition_model(session_root(tmp_path_factory) / "abuse_addition")
    gen = module_server(tmp_path_factory, package, "--max-connections", "8", "--header-timeout", "30",
                        "--idle-timeout", "30")
    capped = next(gen)
    try:
        stalled = [connect(capped) for _ in range(20)]
        for sock in stalled:
            sock.sendall(b"GET /v2 HTTP/1.1\r\n")
        assert healthy(capped)  # the oldest stalled connection was closed to make room
        closed = 0
        for sock in stalled:
            sock.settimeout(0.2)
            try:
                closed += sock.recv(1) == b""
            except socket.timeout:
                pass
            except ConnectionResetError:
                closed += 1
            sock.close()
        assert closed >= 12
    finally:
        gen.close()


# -- body limits and HTTP details (16, 5) ------------------------------------------------------
def test_content_length_over_the_limit_is_413_before_the_body_is_sent(server: RunningServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"POST /v2/models/addition/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 200000000\r\n\r\n")
        answer = read_all(sock, timeout=10)
    assert statuses(answer) == [413]
    assert b"--max-body-mb" in answer


def test_a_client_streaming_a_large_body_reads_the_413(server: RunningServer) -> None:
    response = httpx.post(f"{server.url}/v2/models/addition/infer", content=b"x" * (3 << 20), timeout=30)
    assert response.status_code == 413


def test_chunked_body_over_the_limit_is_413(server: RunningServer) -> None:
    chunk = b"%x\r\n%s\r\n" % (1 << 16, b"c" * (1 << 16))
    head = b"POST /v2/models/addition/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert statuses(send_raw(server, head + chunk * 40 + b"0\r\n\r\n")) == [413]


def test_expect_100_continue_is_answered_at_once(server: RunningServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"POST /v2/models/addition/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(ADD))
        sock.settimeout(10)
        interim = sock.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(ADD)
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = interim + read_all(sock)
    assert statuses(answer) == [100, 200, 200]


def test_expect_100_continue_over_the_limit_gets_413_instead(server: RunningServer) -> None:
    answer = send_raw(server, b"POST /v2/models/addition/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                              b"Content-Length: 5000000\r\n\r\n")
    assert statuses(answer) == [413]


def test_upgrade_h2c_gets_exactly_one_http1_answer(server: RunningServer) -> None:
    answer = send_raw(server, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                              b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\nPRI * HTTP/2.0\r\n\r\n")
    assert statuses(answer) == [200]
    assert b"connection: close" in answer.lower()


@pytest.mark.parametrize("coding, status", [("gzip, chunked", 501), ("gzip", 400), ("chunked, identity", 400)])
def test_transfer_codings_other_than_chunked_are_refused(server: RunningServer, coding: str, status: int) -> None:
    body = gzip.compress(ADD)
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    answer = send_raw(server, b"POST /v2/models/addition/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                      + coding.encode() + b"\r\n\r\n" + chunked)
    assert statuses(answer) == [status]
    assert b"Transfer-Encoding" in answer or status == 400


def test_content_length_with_transfer_encoding_is_400(server: RunningServer) -> None:
    answer = send_raw(server, b"POST /v2/models/addition/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert statuses(answer) == [400]


def test_gzip_bomb_is_413_against_the_body_limit(server: RunningServer) -> None:
    bomb = gzip.compress(b" " * (47 << 20), 9)
    assert len(bomb) < (1 << 20)
    response = httpx.post(f"{server.url}/v2/models/addition/infer", content=bomb,
                          headers={"Content-Encoding": "gzip"}, timeout=30)
    assert response.status_code == 413, response.text
    assert "--max-body-mb" in response.text
    assert healthy(server)


def test_zstd_frame_without_content_size_is_413(server: RunningServer) -> None:
    compressor = zstandard.ZstdCompressor(write_content_size=False)
    with compressor.stream_writer(buffer := _Sink(), closefd=False) as writer:
        for _ in range(64):
            writer.write(b"\0" * (1 << 20))
    response = httpx.post(f"{server.url}/v2/models/addition/infer", content=bytes(buffer.data),
                          headers={"Content-Encoding": "zstd"}, timeout=30)
    assert response.status_code == 413, response.text


class _Sink:
    """A file-like that keeps what zstandard writes."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)


def test_compressed_bodies_within_the_limit_are_served(server: RunningServer) -> None:
    for encoding, body in (("gzip", gzip.compress(ADD)), ("zstd", zstandard.ZstdCompressor().compress(ADD))):
        response = httpx.post(f"{server.url}/v2/models/addition/infer", content=body,
                              headers={"Content-Encoding": encoding})
        assert response.status_code == 200 and response.json()["outputs"][0]["data"] == [4.0, 6.0]


def test_pipelined_requests_still_answer_in_order(server: RunningServer) -> None:
    many = post("/v2/models/addition/infer", ADD) * 20 + b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert statuses(send_raw(server, many)) == [200] * 21


def test_the_server_still_serves_after_every_attack(server: RunningServer) -> None:
    assert healthy(server)
    assert server.process.poll() is None
    assert "Traceback" not in server.log()


def test_log_names_no_path_unclipped(server: RunningServer) -> None:
    httpx.get(f"{server.url}/v2/models/{'q' * 5000}/infer")
    assert "q" * 1000 not in server.log()


def test_a_large_head_pipelined_behind_a_small_request_is_still_measured(server: RunningServer) -> None:
    small = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    big = b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * (20 << 10) + b"\r\n\r\n"
    assert statuses(send_raw(server, small + big)) == [200, 431]


def test_a_head_sent_apart_from_its_body_is_checked_before_the_body(server: RunningServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"POST /v2/models/addition/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % len(ADD))
        time.sleep(0.2)
        sock.sendall(b"X-Late: 1\r\n\r\n")  # the end of the head arrives alone; then the body
        time.sleep(0.2)
        sock.sendall(ADD)
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert statuses(read_all(sock)) == [200, 200]


def test_garbage_after_a_queued_request_is_answered_after_it_in_order(tmp_path: Path, serve_factory) -> None:
    """A malformed request pipelined behind one still running gets its 400 second, then the close."""
    calls = tmp_path / "calls"
    calls.mkdir()
    package = pack_counter(tmp_path / "counter", "pipe")
    config = tmp_path / "svc.json"
    config.write_text(json.dumps({"name": "counter", "model_path": str(package), "metadata": {"execution": "queued"}}))
    server = serve_factory(config, env={"MODELPOD_SCHED_DIR": str(calls)})
    (calls / "pipe.hold").touch()  # the first request waits inside the model
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]}).encode()
    good = (b"POST /v2/models/counter/infer HTTP/1.1\r\nhost: x\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=30) as sock:
        sock.sendall(good + b"THIS IS NOT HTTP\r\n\r\n")
        wait_until(lambda: (calls / "pipe.calls").exists(), "the first request to reach the model")
        (calls / "pipe.hold").unlink()
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    first, _, rest = data.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200"), data[:200]
    assert b"HTTP/1.1 400" in rest and b"malformed HTTP request" in rest
