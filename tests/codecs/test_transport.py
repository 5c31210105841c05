"""Compact transport: the documented error bounds (hypothesis), and int8/uint8/float16 tensors and
zstd/gzip bodies end to end through a real server."""

from __future__ import annotations

import gzip
from collections.abc import Iterator

import httpx
import numpy as np
import orjson
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import modelpod
from tests.helpers.client_models import build_repository
from tests.helpers.servers import RunningServer, start_server
from modelpod.codecs import transport as tp

pytestmark = pytest.mark.timeout(180)

finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
arrays = hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6), elements=finite32)


def _roundtrip(x: np.ndarray, scheme: str, axis: int | None = None) -> np.ndarray:
    wire, params = tp.quantize(x, scheme, axis)
    if params:
        assert wire.dtype == {"int8": np.int8, "uint8": np.uint8, "float16": np.float16}[scheme]
        # parameters survive the JSON wire unchanged
        params = orjson.loads(orjson.dumps(params))
    return tp.dequantize(wire, params)


@settings(max_examples=300, deadline=None)
@given(arrays, st.sampled_from(["int8", "uint8"]))
def test_affine_per_tensor_stays_within_half_a_step(x: np.ndarray, scheme: str) -> None:
    y = _roundtrip(x, scheme)
    assert y.dtype == np.float32 and y.shape == x.shape
    err = np.abs(y.astype(np.float64) - x)
    assert (err <= tp.error_bound(x, scheme)).all()
    if x.size and np.ptp(x.astype(np.float64)) < 1e38:  # the bound is (max-min)/510 plus float32 rounding
        top = np.abs(x.astype(np.float64)).max()
        assert err.max() <= np.ptp(x.astype(np.float64)) / 510 * (1 + 2**-12) + 2**-21 * top


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=3, max_side=5), elements=finite32),
       st.sampled_from(["int8", "uint8"]), st.integers(-2, 1))
def test_affine_per_channel_stays_within_each_channels_bound(x: np.ndarray, scheme: str, axis: int) -> None:
    y = _roundtrip(x, scheme, axis)
    err = np.abs(y.astype(np.float64) - x)
    assert (err <= tp.error_bound(x, scheme, axis)).all()


@settings(max_examples=300, deadline=None)
@given(arrays)
def test_float16_relative_bound(x: np.ndarray) -> None:
    y = _roundtrip(x, "float16")
    err = np.abs(y.astype(np.float64) - x)
    if np.abs(x).max(initial=0) > 65504:
        np.testing.assert_array_equal(y, x)  # out of float16 range: sent as float32, exact
    else:
        assert (err <= tp.error_bound(x, "float16")).all()


def test_non_finite_and_constant_tensors() -> None:
    x = np.array([1.0, np.nan, 3.0], np.float32)
    wire, params = tp.quantize(x, "int8")
    assert params == {} and wire is x  # travels as float32 rather than fail
    c = np.full((3, 2), -7.25, np.float32)
    np.testing.assert_array_equal(_roundtrip(c, "uint8"), c)  # a constant is exact
    ints = np.arange(4, dtype=np.int32)
    assert tp.quantize(ints, "int8")[1] == {}  # only float32 is ever quantized


def test_only_an_exact_accept_encoding_compresses() -> None:
    assert tp.response_encoding("zstd") == "zstd"
    assert tp.response_encoding("gzip") == "gzip"
    assert tp.response_encoding("gzip, deflate, br") is None  # aiohttp's default: never
    assert tp.response_encoding(None) is None


# ---------------------------------------------------------------------------------------------
# end to end


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.getbasetemp() / "client_models"
    root.mkdir(exist_ok=True)
    running = start_server(build_repository(root), tmp_path_factory.mktemp("server"))
    try:
        yield running
    finally:
        running.stop(9, timeout=10)


URLS = ["binary", "json", "grpc"]


def _client(server: RunningServer, flavour: str, **options) -> modelpod.Client:
    if flavour == "grpc":
        return modelpod.connect(f"grpc://{server.grpc_target}", **options)
    return modelpod.Client(server.url, transport=flavour, **options)


def _image() -> np.ndarray:
    return np.random.default_rng(3).random((24, 20, 3), dtype=np.float32) * 255 - 128


@pytest.mark.parametrize("flavour", URLS)
@pytest.mark.parametrize("scheme", ["int8", "uint8", "float16", "uint8:axis=1"])
def test_quantized_inputs_and_outputs_within_bound(server: RunningServer, flavour: str, scheme: str) -> None:
    x = _image()[:, :, 0].copy()
    k = np.arange(3, dtype=np.int32)
    with _client(server, flavour) as client:
        exact = client.infer("affine", {"x": x, "k": k}, quantize="none")["y"]
        got = client.infer("affine", {"x": x, "k": k}, quantize=scheme)
    parsed = tp.parse_scheme(scheme)
    assert got["y"].dtype == np.float32
    np.testing.assert_array_equal(got["k1"], k + 1)  # int32 travels untouched
    # y = 2x + 1: the input's error doubles, then the output adds its own
    x_hat = tp.dequantize(*tp.quantize(x, *parsed))
    assert (np.abs(x_hat.astype(np.float64) - x) <= tp.error_bound(x, *parsed)).all()
    y_in = (x_hat * 2 + 1).astype(np.float32)  # what the model computed on the server
    assert (np.abs(got["y"].astype(np.float64) - y_in) <= tp.error_bound(y_in, *parsed)).all()
    assert np.abs(got["y"] - exact).max() > 0 or scheme == "float16"


@pytest.mark.parametrize("flavour", URLS)
def test_manifest_default_transport_is_honoured(server: RunningServer, flavour: str) -> None:
    image = _image()
    with _client(server, flavour) as client:
        meta = client.metadata("segment")
        assert meta["parameters"]["transport"] == {"mask": "uint8"}
        before = client.stats.bytes_received
        compact = client.infer("segment", {"image": image})["mask"]
        compact_bytes = client.stats.bytes_received - before
        before = client.stats.bytes_received
        exact = client.infer("segment", {"image": image}, quantize="none")["mask"]
        exact_bytes = client.stats.bytes_received - before
    assert compact.dtype == np.float32 and compact.shape == exact.shape == (6, 8, 8, 5)
    assert (np.abs(compact.astype(np.float64) - exact) <= tp.error_bound(exact, "uint8")).all()
    if flavour != "json":  # binary: the mask is a quarter of the bytes
        assert compact_bytes < exact_bytes / 2


def test_the_wire_carries_int8_with_its_parameters(server: RunningServer) -> None:
    """A raw v2 request, no SDK: the label and the parameters are plain v2 tensor parameters."""
    x = _image()[:, :, 0].copy()
    wire, params = tp.quantize(x, "int8")
    doc = {
        "inputs": [
            {"name": "x", "datatype": "INT8", "shape": list(x.shape), "parameters": params, "data": wire.ravel().tolist()},
            {"name": "k", "datatype": "INT32", "shape": [1], "data": [0]},
        ],
        "outputs": [{"name": "y", "parameters": {"modelpod_transport": "int8"}}],
    }
    reply = httpx.post(server.url + "/v2/models/affine/infer", content=orjson.dumps(doc)).json()
    out = reply["outputs"][0]
    assert out["datatype"] == "INT8"
    assert out["parameters"]["modelpod_transport"] == "int8"
    y = tp.dequantize(np.array(out["data"], np.int8).reshape(out["shape"]), out["parameters"])
    y_in = tp.dequantize(wire, params) * 2 + 1
    assert (np.abs(y.astype(np.float64) - y_in) <= tp.error_bound(y_in, "int8")).all()


def test_bad_transport_parameters_are_400(server: RunningServer) -> None:
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.0],
                       "parameters": {"modelpod_transport": "int8", "scale": 1.0, "zero_point": 0.0}},
                      {"name": "k", "datatype": "INT32", "shape": [1], "data": [0]}]}
    reply = httpx.post(server.url + "/v2/models/affine/infer", content=orjson.dumps(doc))
    assert reply.status_code == 400 and "int8" in reply.json()["error"]


@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
def test_compressed_bodies(server: RunningServer, encoding: str) -> None:
    image = _image()
    with modelpod.Client(server.url) as plain, modelpod.Client(server.url, compression=encoding) as packed:
        want = plain.infer("segment", {"image": image}, quantize="none")["mask"]
        got = packed.infer("segment", {"image": image}, quantize="none")["mask"]
        np.testing.assert_array_equal(got, want)  # lossless
        assert packed.stats.bytes_sent < plain.stats.bytes_sent
    # raw: the server answers compressed only for the exact scheme it was asked for
    body = orjson.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": list(image.shape),
                                     "data": image.ravel().tolist()}]})
    packed_body = zstandard.ZstdCompressor().compress(body) if encoding == "zstd" else gzip.compress(body)
    url = server.url + "/v2/models/segment/infer"
    with httpx.Client() as http:
        reply = http.post(url, content=packed_body, headers={"content-encoding": encoding, "accept-encoding": encoding})
        assert reply.headers["content-encoding"] == encoding
        raw = reply.read()
    listed = httpx.post(url, content=body, headers={"accept-encoding": "gzip, deflate, br"})
    assert "content-encoding" not in listed.headers
    assert len(raw) > 0 and listed.json()["outputs"][0]["name"] == "mask"
    broken = httpx.post(url, content=b"not compressed", headers={"content-encoding": encoding})
    assert broken.status_code == 400


def test_grpc_gzip_compression(server: RunningServer) -> None:
    image = _image()
    with modelpod.connect(f"grpc://{server.grpc_target}", compression="gzip") as client:
        out = client.infer("segment", {"image": image}, quantize="none")["mask"]
    with modelpod.Client(server.url) as client:
        np.testing.assert_array_equal(out, client.infer("segment", {"image": image}, quantize="none")["mask"])
