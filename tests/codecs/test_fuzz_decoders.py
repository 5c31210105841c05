"""Fuzz every request decoder: what a client sends may be anything, the answer must stay sane.

The properties:

* each decoder (v2 JSON/binary bodies, v2 gRPC messages, compressed bodies, EAS protobuf,
  multipart forms) returns its result or raises its one documented error (CodecError; for
  multipart bodies past a limit its subclass TooLargeError) -- never another exception;
* a decoder never allocates far more than its input: under 64 MiB (tracemalloc peak) for bodies
  under 64 KiB, about 2x the limit for decompression. Each call also runs under an address-space
  cap (1 GiB more than the process has), so a decoder that tries to allocate gigabytes fails fast
  with MemoryError instead of taking the machine (that MemoryError is reported as the failure);
* every HTTP protocol, in process on real packages (app.dispatch, as the native server and ASGI
  call it): the status is < 500 for every fuzzed request (an exception out of dispatch is what the
  server turns into a 500), and well-formed requests afterwards still answer 200, right.

Strategies live in ``fuzz_strategies.py``: valid tensors first, then mutations, so the fuzzer reaches
the deep checks. Bounded for CI: max_examples=200 per test, no deadline.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import struct
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.helpers import fuzz_strategies as fs  # noqa: E402
from tests.helpers.addition import pack_addition  # noqa: E402
from tests.helpers.fuzz_strategies import KiB, MiB, describe, measure  # noqa: E402

from modelpod.codecs import eas as eas_codec  # noqa: E402
from modelpod.codecs import transport  # noqa: E402
from modelpod.errors import CodecError  # noqa: E402
from modelpod.codecs.v2 import V2Request, decode_request  # noqa: E402
from modelpod.protos import eas_predict_pb2 as eas_pb  # noqa: E402
from modelpod.protos import grpc_service_pb2 as grpc_pb  # noqa: E402
from modelpod.serving.app import resolve  # noqa: E402
from modelpod.serving.factory import open_server  # noqa: E402
from modelpod.errors import ServeError  # noqa: E402
from modelpod.serving.protocols.v2_grpc import InferenceServicer
from modelpod.codecs.v2_grpc import decode_infer_request  # noqa: E402
from modelpod.codecs.multipart import decode_multipart  # noqa: E402
from modelpod.serving.http.messages import Request, Response  # noqa: E402
from modelpod.serving.protocols import v2_rest  # noqa: E402

pytestmark = pytest.mark.timeout(300)

FUZZ = settings(
    max_examples=200, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                           HealthCheck.filter_too_much],
)
#: what one decode of a body under 64 KiB may allocate at its peak
DECODE_PEAK = 64 * MiB
#: decoder state on top of the output (zlib window and buffers) when bounding decompression
DECOMPRESS_SLACK = 256 * KiB


# ---------------------------------------------------------------------------------------------
# judging one decoder call


def assert_codec_outcome(what: str, outcome: fs.Outcome, body_len: int, ok_types: tuple[type, ...],
                         allowed: tuple[type[BaseException], ...] = (CodecError,)) -> None:
    err = outcome.error
    if err is not None and not isinstance(err, allowed):
        hint = (" (the call tried to allocate past the test's 1 GiB address-space cap)"
                if isinstance(err, MemoryError) else "")
        raise AssertionError(f"{what} raised {describe(err)}{hint}; only "
                             f"{'/'.join(a.__name__ for a in allowed)} is allowed") from err
    if err is None:
        assert isinstance(outcome.value, ok_types), f"{what} returned {type(outcome.value).__name__}"
    assert body_len < 64 * KiB
    assert outcome.peak < DECODE_PEAK, (
        f"{what} allocated {outcome.peak / MiB:.1f} MiB at its peak for a {body_len}-byte input "
        f"(bound: {DECODE_PEAK // MiB} MiB); outcome: {describe(err)}")


def check_v2(body: bytes, header_length: int | None) -> fs.Outcome:
    outcome = measure(decode_request, body, header_length)
    assert_codec_outcome("decode_request", outcome, len(body), (V2Request,))
    if outcome.error is None:
        assert all(isinstance(a, np.ndarray) for a in outcome.value.inputs.values())
    return outcome


# ---------------------------------------------------------------------------------------------
# KServe v2 REST bodies: modelpod.codecs.v2.decode_request

header_lengths = st.one_of(st.none(), st.integers(-3, 64), st.sampled_from([2**31, 2**63, -(2**63)]))


@FUZZ
@given(body=st.one_of(st.binary(max_size=2048),
                      fs.mutated_bytes(fs.json_request_doc().map(fs.dumps)),
                      fs.mutated_bytes(fs.binary_request().map(lambda b: b[0]))),
       header_length=header_lengths)
def test_v2_decode_random_bytes(body: bytes, header_length: int | None) -> None:
    check_v2(body, header_length)


@FUZZ
@given(doc=fs.json_request_doc(), with_length=st.booleans())
def test_v2_decode_structured_json(doc: Any, with_length: bool) -> None:
    body = fs.dumps(doc)
    check_v2(body, len(body) if with_length else None)


@FUZZ
@given(request=fs.binary_request())
def test_v2_decode_binary_bodies(request: tuple[bytes, int | None]) -> None:
    check_v2(*request)


@FUZZ
@given(valid=fs.valid_v2_body(), mode=st.sampled_from(["keep", "clip", "none"]))
def test_v2_decode_truncated_at_every_offset(valid: tuple[bytes, int | None], mode: str) -> None:
    body, header_length = valid
    assert check_v2(body, header_length).error is None  # the whole body decodes

    def every_cut() -> tuple[int, int | None, BaseException] | None:
        for cut in range(len(body)):
            if mode == "keep" or header_length is None:
                length = header_length
            elif mode == "clip":
                length = min(header_length, cut)
            else:
                length = None
            try:
                result = decode_request(body[:cut], length)
            except CodecError:
                continue
            except Exception as exc:  # noqa: BLE001 - reported below
                return cut, length, exc
            assert isinstance(result, V2Request)
        return None

    outcome = measure(every_cut)
    assert outcome.error is None, describe(outcome.error)
    if outcome.value is not None:
        cut, length, exc = outcome.value
        raise AssertionError(f"decode_request(body[:{cut}], {length}) raised {describe(exc)}") from exc
    assert outcome.peak < DECODE_PEAK, f"truncated decodes allocated {outcome.peak / MiB:.1f} MiB"


# ---------------------------------------------------------------------------------------------
# KServe v2 gRPC: decode_infer_request and ModelInferRequest.FromString


def check_grpc(request: Any) -> fs.Outcome:
    outcome = measure(decode_infer_request, request)
    assert_codec_outcome("decode_infer_request", outcome, request.ByteSize(), (dict,))
    return outcome


@FUZZ
@given(request=fs.grpc_infer_request())
def test_grpc_decode_fuzzed_requests(request: Any) -> None:
    check_grpc(request)


@FUZZ
@given(data=st.one_of(st.binary(max_size=1024),
                      fs.mutated_bytes(fs.grpc_infer_request().map(lambda r: r.SerializeToString()))))
def test_grpc_from_string_random_bytes(data: bytes) -> None:
    parsed = measure(grpc_pb.ModelInferRequest.FromString, data)
    assert_codec_outcome("ModelInferRequest.FromString", parsed, len(data), (grpc_pb.ModelInferRequest,),
                         allowed=(DecodeError,))
    if parsed.error is None:
        check_grpc(parsed.value)


# ---------------------------------------------------------------------------------------------
# compressed bodies: modelpod.codecs.transport.decompress

encodings = st.sampled_from(fs.ENCODINGS)
encoding_names = st.one_of(encodings, encodings, st.sampled_from(
    ["GZIP", " zstd ", "Deflate", "identity", "", "br", "gzip, deflate", "x-gzip", "compress"]))


def assert_decompress_bounded(outcome: fs.Outcome, body_len: int, limit: int) -> None:
    bound = 2 * limit + 2 * body_len + DECOMPRESS_SLACK
    assert outcome.peak <= bound, (
        f"decompress allocated {outcome.peak / MiB:.2f} MiB at its peak with limit={limit} for a "
        f"{body_len}-byte body (bound ~2x limit: {bound / MiB:.2f} MiB); outcome: {describe(outcome.error)}")


@FUZZ
@given(encoding=encoding_names, limit=st.integers(0, 1 * MiB), data=st.one_of(
    st.binary(max_size=2048),
    st.tuples(st.binary(max_size=512), encodings).map(lambda t: fs.compress(t[0], t[1])),
    fs.mutated_bytes(st.tuples(st.binary(max_size=512), encodings).map(lambda t: fs.compress(t[0] * 64, t[1])))))
def test_decompress_random_data(encoding: str, limit: int, data: bytes) -> None:
    outcome = measure(transport.decompress, data, encoding, limit)
    assert_codec_outcome("decompress", outcome, len(data), (bytes, bytearray, memoryview))
    assert_decompress_bounded(outcome, len(data), limit)
    if outcome.error is None and encoding.strip().lower() not in ("", "identity"):
        assert len(outcome.value) <= limit, f"decompress returned {len(outcome.value)} bytes past limit={limit}"


@FUZZ
@given(payload=st.one_of(st.binary(max_size=2048), st.text(max_size=200).map(lambda t: (t * 20).encode())),
       encoding=encodings, pick=st.data())
def test_decompress_truncated_streams_are_errors(payload: bytes, encoding: str, pick: Any) -> None:
    """A strict prefix of a compressed body is corrupt: CodecError, never a silently shorter body."""
    whole = fs.compress(payload, encoding)
    assert transport.decompress(whole, encoding, 1 * MiB) == payload
    cut = pick.draw(st.integers(1, len(whole) - 1), label="cut")
    outcome = measure(transport.decompress, whole[:cut], encoding, 1 * MiB)
    assert_codec_outcome("decompress", outcome, cut, (bytes, bytearray, memoryview))
    assert outcome.error is not None, (
        f"decompress accepted the first {cut} of {len(whole)} bytes of a {encoding} body and returned "
        f"{len(outcome.value)} of {len(payload)} bytes instead of raising CodecError")
    assert_decompress_bounded(outcome, cut, 1 * MiB)


@FUZZ
@given(encoding=encodings, expanded=st.sampled_from([2 * MiB, 8 * MiB, 64 * MiB]),
       limit=st.sampled_from([64 * KiB, 256 * KiB, 1 * MiB]), content_size=st.booleans())
def test_decompress_bombs_are_refused_within_2x_limit(encoding: str, expanded: int, limit: int,
                                                      content_size: bool) -> None:
    body = fs.bomb(encoding, expanded, content_size or encoding != "zstd")
    outcome = measure(transport.decompress, body, encoding, limit)
    assert isinstance(outcome.error, CodecError), (
        f"a {len(body)}-byte {encoding} bomb of {expanded} bytes with limit={limit}: {describe(outcome.error)}"
        + ("" if outcome.error else f" (returned {len(outcome.value)} bytes)"))
    assert_decompress_bounded(outcome, len(body), limit)


@pytest.mark.parametrize("encoding,content_size", [("gzip", True), ("deflate", True), ("zstd", True),
                                                   ("zstd", False)])
def test_decompress_64mib_of_zeros_with_1mib_limit(encoding: str, content_size: bool) -> None:
    body = fs.bomb(encoding, 64 * MiB, content_size)
    assert len(body) <= 80 * KiB
    outcome = measure(transport.decompress, body, encoding, 1 * MiB)
    assert isinstance(outcome.error, CodecError), describe(outcome.error)
    assert_decompress_bounded(outcome, len(body), 1 * MiB)


# ---------------------------------------------------------------------------------------------
# PAI-EAS protobuf: modelpod.codecs.eas.decode_predict_request


def check_eas(body: bytes) -> fs.Outcome:
    outcome = measure(eas_codec.decode_predict_request, body)
    assert_codec_outcome("decode_predict_request", outcome, len(body), (eas_codec.EasRequest,))
    return outcome


@FUZZ
@given(body=st.one_of(st.binary(max_size=1024), fs.mutated_bytes(fs.eas_request(big=False))))
def test_eas_decode_random_bytes(body: bytes) -> None:
    check_eas(body)


@FUZZ
@given(body=fs.eas_request())
def test_eas_decode_structured(body: bytes) -> None:
    check_eas(body)


@FUZZ
@given(body=fs.eas_wire_request())
def test_eas_in_place_path_agrees_with_protobuf(body: bytes) -> None:
    """Bodies >= 16 KiB have packed floats read in place: the arrays must be the library's values."""
    outcome = check_eas(body)
    if outcome.error is not None:
        return
    msg = eas_pb.PredictRequest.FromString(body)
    assert set(outcome.value.inputs) == set(msg.inputs)
    for name, proto in msg.inputs.items():
        dtype, field = eas_codec._DECODE[proto.dtype]
        want = np.array(list(getattr(proto, field)), dtype=dtype).reshape(list(proto.array_shape.dim))
        got = outcome.value.inputs[name]
        assert got.dtype == want.dtype and got.shape == want.shape, (name, got.dtype, got.shape, want.shape)
        assert np.array_equal(got, want, equal_nan=got.dtype.kind == "f"), f"input '{name}' values differ"


# ---------------------------------------------------------------------------------------------
# multipart/form-data: modelpod.codecs.multipart.decode_multipart


@FUZZ
@given(form=fs.multipart_body())
def test_multipart_decode(form: tuple[str, bytes]) -> None:
    ctype, body = form
    outcome = measure(decode_multipart, ctype, body)
    err = outcome.error
    if err is not None:
        assert isinstance(err, CodecError), f"decode_multipart raised {describe(err)}"
        return
    form_dict = outcome.value
    assert isinstance(form_dict, dict)
    for field, value in form_dict.items():  # hooks.decode_body: {field: {filename: file}} or {field: str}
        assert isinstance(field, str), f"field name {field!r} is a {type(field).__name__}, not str"
        if isinstance(value, dict):
            for filename, file in value.items():
                assert isinstance(filename, str), f"filename {filename!r} is a {type(filename).__name__}"
                assert isinstance(file, io.BytesIO)
        else:
            assert isinstance(value, str), f"field {field!r} holds a {type(value).__name__}"
    assert outcome.peak < DECODE_PEAK


# ---------------------------------------------------------------------------------------------
# every HTTP protocol end to end, in process

SERVICE_PY = '''\
"""Addition behind hooks; anything it does not understand is a SpecError (400), never a crash."""

import numpy as np

from modelpod import ModelService, SpecError


def _numbers(value):
    if not isinstance(value, list) or len(value) > 10000:
        raise SpecError("x and y must be lists of numbers")
    if not all(type(v) in (int, float) and abs(v) < 1e30 for v in value):
        raise SpecError("x and y must be lists of numbers")
    return [float(v) for v in value]


class FuzzService(ModelService):
    def preprocess(self, request):
        if isinstance(request, (bytes, bytearray)):
            return {"x": [float(len(request))], "y": [1.0]}
        if isinstance(request, dict) and "x" in request and "y" in request:
            x, y = _numbers(request["x"]), _numbers(request["y"])
            if len(x) != len(y):
                raise SpecError("x and y differ in length")
            return {"x": x, "y": y}
        if isinstance(request, dict):  # a form, or JSON without x/y: count its fields
            return {"x": [float(len(request))], "y": [0.0]}
        raise SpecError(f"unsupported body {type(request).__name__}")

    def inference(self, tensors):
        return self.model.infer({"x": np.asarray(tensors["x"], np.float32),
                                 "y": np.asarray(tensors["y"], np.float32)})

    def postprocess(self, outputs):
        return {"out": outputs["out"].tolist()}
'''

MODELS = ("addition", "echo_string", "adder")


class Server:
    """The app as every server builds it (:func:`open_server`), plus an event loop."""

    def __init__(self, root: Path) -> None:
        from tests.helpers.packages import pack_echo

        repo = root / "repo"
        pack_addition(repo / "addition" / "1", code_dir=_code(root / "addition-code"))
        (root / "service_src.py").write_text(SERVICE_PY)
        pack_addition(repo / "adder" / "1", name="adder", code_dir=_code(root / "adder-code"),
                      service_path=root / "service_src.py")
        pack_echo(repo / "echo_string" / "1", "string")
        self.loop = asyncio.new_event_loop()
        self.parts = self.loop.run_until_complete(open_server(repo))
        self.repository, self.manager, self.ctx, self.app = (
            self.parts.repository, self.parts.manager, self.parts.ctx, self.parts.app)
        self.servicer = InferenceServicer(self.ctx)
        assert_still_serving(self)  # also starts the loop's executor thread, outside any cap

    def settle(self, result: Any) -> Any:
        if inspect.isawaitable(result):
            return self.loop.run_until_complete(_awaited(result))
        return result

    def dispatch(self, request: Request) -> fs.Outcome:
        return measure(lambda: self.settle(self.app.dispatch(request)), trace=False)

    def close(self) -> None:
        self.loop.run_until_complete(self.parts.close())
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _code(directory: Path) -> Path:
    from tests.helpers.addition import write_addition_code

    return write_addition_code(directory)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    srv = Server(tmp_path_factory.mktemp("fuzz-serve"))
    yield srv
    srv.close()


def _v2_body() -> bytes:
    return fs.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0]},
                                {"name": "y", "datatype": "FP32", "shape": [2], "data": [3.0, 4.0]}]})


def _v2_binary() -> tuple[bytes, str]:
    header = fs.dumps({"inputs": [
        {"name": "x", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}},
        {"name": "y", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}],
        "outputs": [{"name": "out", "parameters": {"binary_data": True}}]})
    return header + struct.pack("<4f", 1, 2, 3, 4), str(len(header))


ALL_PROTOCOLS = ("v2", "tf", "eas", "hooks", "grpc")


def assert_still_serving(srv: Server, protocols: tuple[str, ...] = ALL_PROTOCOLS) -> None:
    """Well-formed requests on ``protocols`` answer 200 with the right result."""
    def answer(request: Request) -> Response:
        outcome = srv.dispatch(request)
        assert outcome.error is None, f"well-formed {request.path} raised {describe(outcome.error)}"
        response = outcome.value
        assert response.status == 200, (request.path, response.status, bytes(response.body)[:300])
        return response

    if "v2" in protocols:
        r = answer(Request("POST", "/v2/models/addition/infer", body=_v2_body()))
        assert orjson.loads(r.body)["outputs"][0]["data"] == [4.0, 6.0]
        body, length = _v2_binary()
        r = answer(Request("POST", "/v2/models/addition/versions/1/infer",
                           headers={"inference-header-content-length": length}, body=body))
        json_len = int(dict(r.headers)["inference-header-content-length"])
        assert np.frombuffer(bytes(r.body)[json_len:], "<f4").tolist() == [4.0, 6.0]
        r = answer(Request("POST", "/v2/models/echo_string/infer", body=fs.dumps({"inputs": [
            {"name": "x", "datatype": "BYTES", "shape": [1, 2], "data": ["ab", "c"]}]})))
        assert orjson.loads(r.body)["outputs"][0]["data"] == ["ab", "c"]
    if "tf" in protocols:
        r = answer(Request("POST", "/v1/models/addition:predict", body=b'{"inputs": {"x": [1.0], "y": [2.0]}}'))
        assert orjson.loads(r.body) == {"outputs": [3.0]}
        r = answer(Request("POST", "/v1/models/addition:predict", body=b'{"instances": [{"x": 1.0, "y": 2.0}]}'))
        assert orjson.loads(r.body) == {"predictions": [3.0]}
    if "eas" in protocols:
        eas_body = eas_codec.encode_predict_request({"x": np.array([1, 2], np.float32),
                                                     "y": np.array([3, 4], np.float32)})
        r = answer(Request("POST", "/api/predict/addition", body=eas_body))
        assert list(eas_pb.PredictResponse.FromString(bytes(r.body)).outputs["out"].float_val) == [4.0, 6.0]
    if "hooks" in protocols:
        r = answer(Request("POST", "/api/predict/adder", headers={"content-type": "application/json"},
                           body=b'{"x": [1, 2], "y": [3, 4]}'))
        assert orjson.loads(r.body) == {"out": [4.0, 6.0]}
    if "grpc" in protocols:
        request = grpc_pb.ModelInferRequest(model_name="addition")
        for name in ("x", "y"):
            request.inputs.add(name=name, datatype="FP32", shape=[2])
        request.raw_input_contents.extend([struct.pack("<2f", 1, 2), struct.pack("<2f", 3, 4)])
        reply = srv.settle(srv.servicer.ModelInfer(request, FakeGrpcContext()))
        assert np.frombuffer(reply.raw_output_contents[0], "<f4").tolist() == [4.0, 6.0]


def assert_answered(srv: Server, request: Request, protocols: tuple[str, ...] = ALL_PROTOCOLS) -> None:
    path, method = request.path, request.method
    outcome = srv.dispatch(request)
    assert outcome.error is None, (
        f"{method} {path} raised {describe(outcome.error)} out of app.dispatch (the server answers 500)"
        + (" (the request tried to allocate past the test's 1 GiB address-space cap)"
           if isinstance(outcome.error, MemoryError) else ""))
    response = outcome.value
    assert isinstance(response, Response)
    assert response.status < 500, f"{method} {path} answered {response.status}: {bytes(response.body)[:400]!r}"
    assert_still_serving(srv, protocols)


latin1 = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=12)
header_values = {
    "timeout-ms": st.one_of(latin1, st.sampled_from(["0", "-1", "nan", "inf", "1e309", "100", "0.0001", "1e-300"])),
    "inference-header-content-length": st.one_of(latin1, st.sampled_from(
        ["-1", "0", "99999999999999999999999", " 12 ", "1_0", "+5", "0x10", "1e3"])),
    "content-encoding": st.one_of(latin1, st.sampled_from(["gzip", "deflate", "zstd", "br", "identity", "", "gzip, br"])),
    "accept-encoding": st.one_of(latin1, st.sampled_from(["gzip", "deflate", "zstd", "gzip, deflate, br", "*"])),
    "content-type": st.one_of(latin1, st.sampled_from(
        ["application/json", "application/octet-stream", "multipart/form-data; boundary=x", "text/plain",
         "multipart/form-data"])),
    "authorization": st.one_of(latin1, st.sampled_from(["Bearer ", "EAS ", "EAS abc", "Bearer t"])),
    "date": latin1, "content-md5": latin1,
}
fuzz_headers = st.one_of(
    st.just({}), st.just({}),
    st.dictionaries(st.sampled_from(sorted(header_values)), st.just(None), max_size=4).flatmap(
        lambda keys: st.fixed_dictionaries({k: header_values[k] for k in keys})),
)
encode_body = st.sampled_from(["plain", "plain", "plain", "gzip", "deflate", "zstd", "gzip-broken", "label-only"])


def encoded(body: bytes, how: str, headers: dict[str, str]) -> bytes:
    """Compress ``body`` as the client would (and say so in Content-Encoding), or lie about it."""
    if how in fs.ENCODINGS:
        headers["content-encoding"] = how
        return fs.compress(body, how)
    if how == "gzip-broken":
        headers["content-encoding"] = "gzip"
        whole = fs.compress(body, "gzip")
        return whole[: len(whole) // 2]
    if how == "label-only":
        headers["content-encoding"] = "zstd"
    return body


v2_model = st.sampled_from(["addition", "addition", "echo_string", "adder"])
e2e_names = st.sampled_from(["x", "y", "x", "y", "s"])


def v2_path(model: str, versioned: bool) -> str:
    return f"/v2/models/{model}/versions/1/infer" if versioned else f"/v2/models/{model}/infer"


def model_and(strategy: Any) -> Any:
    """(model, a request for it): mostly built for that model, sometimes for another or any."""
    return v2_model.flatmap(lambda m: st.tuples(st.just(m), st.one_of(strategy(m), strategy(m), strategy(None))))


@FUZZ
@given(target=model_and(lambda m: fs.json_request_doc(e2e_names, m)), versioned=st.booleans(),
       headers=fuzz_headers, how=encode_body)
def test_http_v2_json_infer(server: Server, target: tuple[str, Any], versioned: bool, headers: dict[str, str],
                            how: str) -> None:
    model, doc = target
    headers = dict(headers)
    headers.pop("inference-header-content-length", None)
    body = encoded(fs.dumps(doc), how, headers)
    assert_answered(server, Request("POST", v2_path(model, versioned), headers=headers, body=body), ("v2",))


@FUZZ
@given(target=model_and(lambda m: fs.binary_request(e2e_names, m)), versioned=st.booleans(), headers=fuzz_headers,
       header=st.one_of(st.just("true"), st.just("true"), st.just("true"),
                        header_values["inference-header-content-length"]),
       how=encode_body)
def test_http_v2_binary_infer(server: Server, target: tuple[str, tuple[bytes, int | None]], versioned: bool,
                              headers: dict[str, str], header: str, how: str) -> None:
    model, (body, header_length) = target
    headers = dict(headers)
    if header == "true":
        if header_length is None:
            headers.pop("inference-header-content-length", None)
        else:
            headers["inference-header-content-length"] = str(header_length)
    else:
        headers["inference-header-content-length"] = header
    body = encoded(body, how, headers)
    assert_answered(server, Request("POST", v2_path(model, versioned), headers=headers, body=body), ("v2",))


tf_paths = st.sampled_from(["/v1/models/{m}:predict", "/v1/models/{m}/versions/1:predict",
                            "/v1/models/{m}/labels/latest:predict", "/v1/models/{m}:PREDICT",
                            "/v1/models/{m}/versions/99999999999999999999:predict", "/v1/models/{m}:predict/"])


@FUZZ
@given(model=st.sampled_from(["addition", "echo_string", "adder"]), data=st.data(),
       path=st.one_of(st.just("/v1/models/{m}:predict"), tf_paths), headers=fuzz_headers)
def test_http_tfserving_predict(server: Server, model: str, data: Any, path: str, headers: dict[str, str]) -> None:
    body = data.draw(st.one_of(fs.tf_request_doc(model).map(fs.dumps), fs.tf_request_doc(model).map(fs.dumps),
                               fs.tf_docs.map(fs.dumps), fs.mutated_bytes(fs.tf_request_doc(model).map(fs.dumps))),
                     label="body")
    assert_answered(server, Request("POST", path.format(m=model), headers=dict(headers), body=body), ("tf",))


@FUZZ
@given(model=st.sampled_from(["addition", "addition", "echo_string"]), data=st.data(),
       headers=fuzz_headers, suffix=st.sampled_from(["", "", "", "/extra", "/a/b"]))
def test_http_eas_predict(server: Server, model: str, data: Any, headers: dict[str, str], suffix: str) -> None:
    body = data.draw(st.one_of(
        fs.eas_model_request(model), fs.eas_model_request(model), fs.eas_request(st.sampled_from(["x", "y", "s"])),
        fs.mutated_bytes(fs.eas_model_request(model)), st.binary(max_size=256), st.just(b""), fs.eas_wire_request()),
        label="body")
    assert_answered(server, Request("POST", f"/api/predict/{model}{suffix}", headers=dict(headers), body=body),
                    ("eas",))


hooks_json = st.one_of(
    st.integers(0, 4).flatmap(lambda n: st.fixed_dictionaries({
        "x": st.lists(st.integers(-1000, 1000), min_size=n, max_size=n),
        "y": st.lists(st.floats(-1e6, 1e6), min_size=n, max_size=n)})),
    st.fixed_dictionaries({"x": st.one_of(st.lists(st.integers(-1000, 1000), max_size=4), fs.json_values),
                           "y": st.one_of(st.lists(fs.finite_floats, max_size=4), fs.json_values)}),
    fs.json_values)


@FUZZ
@given(kind=st.sampled_from(["json", "json-untyped", "multipart", "raw"]), doc=hooks_json,
       form=fs.multipart_body(), raw=st.binary(max_size=512), headers=fuzz_headers)
def test_http_hooks_bodies(server: Server, kind: str, doc: Any, form: tuple[str, bytes], raw: bytes,
                           headers: dict[str, str]) -> None:
    headers = dict(headers)
    if kind == "json":
        headers["content-type"] = "application/json"
        body = fs.dumps(doc)
    elif kind == "json-untyped":
        headers.pop("content-type", None)
        body = fs.dumps(doc)
    elif kind == "multipart":
        headers["content-type"], body = form
        if not headers["content-type"].startswith("multipart/form-data"):
            headers["content-type"] = "multipart/form-data; boundary=x"
    else:
        headers.setdefault("content-type", "application/octet-stream")
        body = raw
    assert_answered(server, Request("POST", "/api/predict/adder", headers=headers, body=body), ("hooks",))


segments = st.one_of(
    st.sampled_from(["v2", "v1", "models", "addition", "adder", "echo_string", "nope", "versions", "1", "2",
                     "0", "-1", "99999999999999999999", "infer", "ready", "metadata", "labels", "latest",
                     "stable", "repository", "index", "load", "api", "predict", "health", "live",
                     ":predict", ":classify", "addition:predict", "addition:regress", "", "..", "%2F", "metrics"]),
    st.text(st.characters(min_codepoint=33, max_codepoint=255, blacklist_characters="/?#"), max_size=6),
)
prefixes = st.sampled_from(["/v2", "/v2/models", "/v2/models/addition", "/v1/models", "/v1/models/addition",
                            "/api/predict", "/api/predict/adder", "/api/predict/addition", "", "/V1/models"])
methods = st.sampled_from(["GET", "POST", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "get", "BREW"])
path_bodies = st.one_of(st.just(b""), st.binary(max_size=128), fs.json_request_doc(e2e_names, "addition").map(fs.dumps),
                        fs.tf_request_doc("addition").map(fs.dumps))


@FUZZ
@given(prefix=prefixes, parts=st.lists(segments, max_size=5), trailing=st.booleans(), method=methods,
       query=st.one_of(st.just(""), latin1), headers=fuzz_headers, body=path_bodies)
def test_http_fuzzed_paths_methods_headers(server: Server, prefix: str, parts: list[str], trailing: bool,
                                           method: str, query: str, headers: dict[str, str], body: bytes) -> None:
    path = prefix + "".join("/" + p for p in parts) + ("/" if trailing else "")
    path = path or "/"
    route = resolve(path)
    # unloading a model through the repository API is an admin action, not a decoder input
    assume(not (route.handler is v2_rest.repository_api and route.args[0][-1:] == ["unload"]))
    assert_answered(server, Request(method, path, query, dict(headers), body))


# ---------------------------------------------------------------------------------------------
# v2 gRPC end to end, in process (InferenceServicer.ModelInfer, as the gRPC handler calls it)


class FakeGrpcContext:
    def invocation_metadata(self) -> tuple:
        return ()

    def time_remaining(self) -> float | None:
        return None

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass


@FUZZ
@given(request=fs.grpc_infer_request(e2e_names, st.sampled_from(["addition", "addition", "echo_string", "adder", "nope", ""])))
def test_grpc_model_infer_in_process(server: Server, request: Any) -> None:
    outcome = measure(lambda: server.settle(server.servicer.ModelInfer(request, FakeGrpcContext())), trace=False)
    err = outcome.error
    assert err is None or isinstance(err, ServeError), (
        f"ModelInfer raised {describe(err)} (gRPC answers UNKNOWN, the 500 of gRPC)")
    if isinstance(err, ServeError):
        assert err.http_status < 500, f"ModelInfer failed with {err.kind}: {err.message[:300]}"
    else:
        assert isinstance(outcome.value, grpc_pb.ModelInferResponse)
    assert_still_serving(server, ("grpc",))


# ---------------------------------------------------------------------------------------------
# the hostile inputs named in the hardening work, each checked on its own (deterministic)


def _binary_v2(datatype: str, shape: list[Any], blob: bytes) -> tuple[bytes, int]:
    header = fs.dumps({"inputs": [{"name": "x", "datatype": datatype, "shape": shape,
                                   "parameters": {"binary_data_size": len(blob)}}]})
    return header + blob, len(header)


V2_HOSTILE = {
    "bytes-300M-elements-in-4-bytes": _binary_v2("BYTES", [300_000_000], b"\x00\x00\x00\x00"),
    "bytes-2^32x2^32-empty": _binary_v2("BYTES", [2**32, 2**32], b""),
    "fp32-0x2^63-empty": _binary_v2("FP32", [0, 2**63], b""),
    "fp32-2^32x2^32-empty": _binary_v2("FP32", [2**32, 2**32], b""),
    "fp32-2^62x4-16-bytes": _binary_v2("FP32", [2**62, 4], bytes(16)),
    "json-fp32-2^32x2^32-no-data": (fs.dumps({"inputs": [{"name": "x", "datatype": "FP32",
                                                          "shape": [2**32, 2**32], "data": []}]}), None),
    "json-fp32-0x2^63-no-data": (fs.dumps({"inputs": [{"name": "x", "datatype": "FP32",
                                                       "shape": [0, 2**63], "data": []}]}), None),
    "json-bytes-0x2^63-no-data": (fs.dumps({"inputs": [{"name": "x", "datatype": "BYTES",
                                                        "shape": [0, 2**63], "data": []}]}), None),
    "size-lie-past-end": (_binary_v2("FP32", [1], bytes(4))[0][:-4], _binary_v2("FP32", [1], bytes(4))[1]),
}


@pytest.mark.parametrize("case", sorted(V2_HOSTILE))
def test_v2_known_hostile_bodies(case: str) -> None:
    check_v2(*V2_HOSTILE[case])


def _grpc(datatype: str, shape: list[int], raw: bytes | None = None, **contents: Any) -> Any:
    request = grpc_pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=shape)
    for field, values in contents.items():
        getattr(tensor.contents, field).extend(values)
    if raw is not None:
        request.raw_input_contents.append(raw)
    return request


GRPC_HOSTILE = {
    "typed-fp32-2^32x2^32-empty": _grpc("FP32", [2**32, 2**32]),
    "typed-fp32-2^62x4-empty": _grpc("FP32", [2**62, 4]),
    "typed-fp32--1x-1-one-value": _grpc("FP32", [-1, -1], fp32_contents=[1.0]),
    "typed-fp32--1-zero-values": _grpc("FP32", [0, -1]),
    "typed-bytes-2^32x2^32-empty": _grpc("BYTES", [2**32, 2**32]),
    "raw-bytes-300M-in-4-bytes": _grpc("BYTES", [300_000_000], raw=b"\x00\x00\x00\x00"),
    "raw-fp32-0x2^62": _grpc("FP32", [0, 2**62], raw=b""),
    "raw-bf16-via-typed": _grpc("BF16", [1], fp32_contents=[1.0]),
}


@pytest.mark.parametrize("case", sorted(GRPC_HOSTILE))
def test_grpc_known_hostile_requests(case: str) -> None:
    check_grpc(GRPC_HOSTILE[case])
