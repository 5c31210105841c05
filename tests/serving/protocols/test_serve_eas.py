"""PAI-EAS: the unmodified ``eas-prediction`` SDK against ``modelpod serve``.

The SDK runs from its own venv (``.venv-eas``, see ``tests/eas_client.py``); each test sends a
batch of SDK calls to a client subprocess and asserts on the JSON it prints. One repository server
(no token) serves: the seed addition model, a python model over every dtype the SDK can send, a
model that raises, a TF SavedModel with two signatures and a hooks package; a second server (a
token) serves the addition model and the hooks package.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import modelpod
from tests.helpers.addition import pack_addition
from tests.helpers.servers import start_server
from tests.helpers.eas_client import ensure_eas_python, run_sdk
from modelpod.protos import eas_predict_pb2 as pb

pytestmark = pytest.mark.timeout(180)

TOKEN = "c2VjcmV0LXRva2Vu-eas"

DTYPES_MAIN = '''\
import numpy as np


def get_model(data_dir):
    def run(f32, f64, i32, i8, i16, u8, u16, i64, b, s):
        return {
            "f32_out": f32 * 2,
            "f64_out": f64 / 2,
            "i32_out": i32 + 1,
            "i8_out": -i8,
            "i16_out": i16 * 2,
            "u8_out": (255 - u8).astype(np.uint8),
            "u16_out": (u16 + 1).astype(np.uint16),
            "i64_out": i64 * 3,
            "b_out": ~b,
            "s_out": np.array([v.upper() + b"!" for v in s], dtype=object),
            "f16_out": f32.astype(np.float16),
            "grid": np.stack([f64, f64 * 10]),
            "total": np.array(i64.sum(), dtype=np.int64),
        }

    return run
'''

DTYPES_IN = [
    {"name": "f32", "dtype": "float32", "shape": ("n",)},
    {"name": "f64", "dtype": "float64", "shape": ("m",)},
    {"name": "i32", "dtype": "int32", "shape": (None,)},
    {"name": "i8", "dtype": "int8", "shape": (None,)},
    {"name": "i16", "dtype": "int16", "shape": (None,)},
    {"name": "u8", "dtype": "uint8", "shape": (None,)},
    {"name": "u16", "dtype": "uint16", "shape": (None,)},
    {"name": "i64", "dtype": "int64", "shape": (None,)},
    {"name": "b", "dtype": "bool", "shape": (None,)},
    {"name": "s", "dtype": "string", "shape": (None,)},
]
DTYPES_OUT = [
    {"name": "f32_out", "dtype": "float32", "shape": ("n",)},
    {"name": "f64_out", "dtype": "float64", "shape": ("m",)},
    {"name": "i32_out", "dtype": "int32", "shape": (None,)},
    {"name": "i8_out", "dtype": "int8", "shape": (None,)},
    {"name": "i16_out", "dtype": "int16", "shape": (None,)},
    {"name": "u8_out", "dtype": "uint8", "shape": (None,)},
    {"name": "u16_out", "dtype": "uint16", "shape": (None,)},
    {"name": "i64_out", "dtype": "int64", "shape": (None,)},
    {"name": "b_out", "dtype": "bool", "shape": (None,)},
    {"name": "s_out", "dtype": "string", "shape": (None,)},
    {"name": "f16_out", "dtype": "float16", "shape": ("n",)},
    {"name": "grid", "dtype": "float64", "shape": (2, "m")},
    {"name": "total", "dtype": "int64", "shape": ()},
]

BROKEN_MAIN = '''\
def get_model(data_dir):
    def run(x, y):
        if (x < 0).any():
            raise RuntimeError("negative inputs break this model")
        return {"out": x + y}

    return run
'''

HOOKS_SERVICE = '''\
import json

from modelpod import ModelService, SpecError


class JsonAdder(ModelService):
    def preprocess(self, request):
        if isinstance(request, bytes):  # a StringRequest with a token arrives as octet-stream
            try:
                request = json.loads(request)
            except ValueError:
                raise SpecError("send a JSON object with 'x' and 'y'") from None
        return {"x": request["x"], "y": request["y"]}

    def postprocess(self, outputs):
        return {"sum": outputs["out"].tolist(), "service": self.name}
'''


def pack_code(root: Path, name: str, main_py: str, **kwargs: Any) -> Path:
    code = root / f"{name}-src"
    code.mkdir()
    (code / "main.py").write_text(main_py)
    return modelpod.pack_python(root / "repo" / name, name=name,
                                code_path_spec=[{"python_root": str(code), "dirs_to_package": [""]}], **kwargs)


@pytest.fixture(scope="session")
def eas_python() -> Path:
    return ensure_eas_python()


@pytest.fixture(scope="module")
def repo_dir(tmp_path_factory) -> Path:
    from tests.helpers.tf_models import two_signature_saved_model

    root = tmp_path_factory.mktemp("eas")
    pack_addition(root / "repo" / "addition")
    pack_code(root, "dtypes", DTYPES_MAIN, input_spec=DTYPES_IN, output_spec=DTYPES_OUT)
    pack_code(root, "broken", BROKEN_MAIN, input_spec=[{"name": "x", "dtype": "float32", "shape": ("k",)},
                                                      {"name": "y", "dtype": "float32", "shape": ("k",)}],
              output_spec=[{"name": "out", "dtype": "float32", "shape": ("k",)}],
              test_input_data={"x": np.ones(2, np.float32), "y": np.ones(2, np.float32)})
    (root / "hooks_service.py").write_text(HOOKS_SERVICE)
    pack_addition(root / "repo" / "jsonadder", name="jsonadder", service_path=root / "hooks_service.py")
    modelpod.pack_tensorflow(root / "repo" / "twosig", name="twosig",
                             saved_model_dir=two_signature_saved_model(root / "twosig_savedmodel"))
    return root / "repo"


@pytest.fixture(scope="module")
def server(repo_dir, tmp_path_factory):
    running = start_server(repo_dir, tmp_path_factory.mktemp("eas-log"), "--grpc-port", "-1")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def token_server(repo_dir, tmp_path_factory):
    # only the python packages: a repository folder of links to them
    folder = tmp_path_factory.mktemp("eas-token")
    for name in ("addition", "jsonadder"):
        (folder / name).symlink_to(repo_dir / name, target_is_directory=True)
    running = start_server(folder, tmp_path_factory.mktemp("eas-token-log"), "--grpc-port", "-1",
                           "--token", TOKEN)
    yield running
    running.stop()


def tf_call(server, service: str, feeds: list, fetches: list[str] | None = None,
            signature: str = "serving_default", **extra: Any) -> dict[str, Any]:
    return {"endpoint": server.host, "service": service, **extra,
            "request": {"type": "tf", "signature": signature, "feeds": feeds, "fetches": fetches or []}}


def string_call(server, service: str, data: str = "", **extra: Any) -> dict[str, Any]:
    request = {"type": "string", **({"hex": extra.pop("hex")} if "hex" in extra else {"data": data})}
    return {"endpoint": server.host, "service": service, **extra, "request": request}


ADD_FEEDS = [["x", [3], "DT_FLOAT", [1.0, 2.0, 3.0]], ["y", [3], "DT_FLOAT", [0.5, 0.25, 0.125]]]


# -- TFRequest ------------------------------------------------------------------------------------
def test_tf_request_values_shapes_and_output_filter(server, eas_python):
    results = run_sdk(eas_python, [
        tf_call(server, "addition", ADD_FEEDS, ["out"]),
        tf_call(server, "addition", ADD_FEEDS),  # no fetch: every output
        tf_call(server, "addition/v1/sub/path", ADD_FEEDS),  # the SDK pastes the name into the path
        tf_call(server, "dtypes", DTYPE_FEEDS, ["f32_out", "s_out"]),
        tf_call(server, "addition", ADD_FEEDS, ["out"], repeat=20),  # one client, keep-alive pool
    ])
    for result in results[:3] + results[4:]:
        assert result["ok"], result
        assert result["outputs"] == {"out": {"dtype": "DT_FLOAT", "shape": [3], "values": [1.5, 2.25, 3.125]}}
    assert results[4]["calls"] == 20
    filtered = results[3]
    assert filtered["ok"], filtered
    assert set(filtered["outputs"]) == {"f32_out", "s_out"}


DTYPE_FEEDS = [
    ["f32", [2], "DT_FLOAT", [1.5, -2.0]],
    ["f64", [3], "DT_DOUBLE", [1.0, 0.1, -4.0]],
    ["i32", [2], "DT_INT32", [2147483646, -7]],
    ["i8", [3], "DT_INT8", [-128 + 1, 0, 127]],
    ["i16", [2], "DT_INT16", [300, -300]],
    ["u8", [3], "DT_UINT8", [0, 1, 255]],
    ["u16", [2], "DT_UINT16", [0, 65534]],
    ["i64", [2], "DT_INT64", [2**40, -3]],
    ["b", [3], "DT_BOOL", [True, False, True]],
    ["s", [2], "DT_STRING", ["cat", "dög"]],
]


def test_every_sdk_dtype_round_trips(server, eas_python):
    [result] = run_sdk(eas_python, [tf_call(server, "dtypes", DTYPE_FEEDS)])
    assert result["ok"], result
    out = result["outputs"]

    def check(name: str, dtype: str, shape: list[int], values: list[Any]) -> None:
        assert out[name]["dtype"] == dtype, (name, out[name])
        assert out[name]["shape"] == shape, (name, out[name])
        assert out[name]["values"] is not None, f"get_values({name!r}) returned None: the SDK cannot read it"
        np.testing.assert_allclose(np.array(out[name]["values"], dtype=float), np.array(values, dtype=float),
                                   rtol=1e-6, err_msg=name)

    check("f32_out", "DT_FLOAT", [2], [3.0, -4.0])
    check("f64_out", "DT_DOUBLE", [3], [0.5, 0.05, -2.0])
    check("i32_out", "DT_INT32", [2], [2147483647, -6])
    check("i8_out", "DT_INT8", [3], [127, 0, -127])
    check("i16_out", "DT_INT16", [2], [600, -600])
    check("u8_out", "DT_INT32", [3], [255, 254, 0])  # uint8 goes out as DT_INT32 (readable by the SDK)
    check("u16_out", "DT_INT32", [2], [1, 65535])
    check("i64_out", "DT_INT64", [2], [3 * 2**40, -9])
    assert out["i64_out"]["values"] == [3 * 2**40, -9]  # exact, not through a float
    check("b_out", "DT_BOOL", [3], [False, True, False])
    assert out["b_out"]["values"] == [False, True, False]
    assert out["s_out"] == {"dtype": "DT_STRING", "shape": [2], "values": ["CAT!", "DöG!"]}
    check("f16_out", "DT_FLOAT", [2], [1.5, -2.0])  # float16 goes out as DT_FLOAT
    check("grid", "DT_DOUBLE", [2, 3], [1.0, 0.1, -4.0, 10.0, 1.0, -40.0])
    check("total", "DT_INT64", [], [2**40 - 3])  # a scalar: shape []


def test_signature_name_selects_a_signature(server, eas_python):
    results = run_sdk(eas_python, [
        tf_call(server, "twosig", [["features", [2, 2], "DT_FLOAT", [1, 2, 3, 4]]], ["score"]),
        tf_call(server, "twosig", [["text", [3], "DT_STRING", ["cat", "bird", "fish"]]], signature="classify"),
        tf_call(server, "twosig", [["features", [1, 2], "DT_FLOAT", [1, 2]]], signature="nosuch"),
        # the default signature's inputs sent to 'classify' -> the spec check names the input
        tf_call(server, "twosig", [["features", [1, 2], "DT_FLOAT", [1, 2]]], signature="classify"),
    ])
    default, classify, unknown, wrong = results
    assert default["ok"], default
    assert default["outputs"]["score"] == {"dtype": "DT_FLOAT", "shape": [2], "values": [9.0, 21.0]}
    assert classify["ok"], classify
    assert classify["outputs"]["class_id"] == {"dtype": "DT_INT64", "shape": [3], "values": [0, 2, -1]}
    assert classify["outputs"]["label"] == {"dtype": "DT_STRING", "shape": [3], "values": ["CAT!", "BIRD!", "FISH!"]}
    assert unknown["ok"] is False and unknown["code"] == 400
    assert "nosuch" in unknown["message"] and "classify" in unknown["message"]
    assert wrong["ok"] is False and wrong["code"] == 400 and "text" in wrong["message"]


def test_empty_request_returns_the_signature_json(server, eas_python):
    results = run_sdk(eas_python, [string_call(server, "addition"), string_call(server, "twosig")])
    assert all(r["ok"] for r in results), results
    assert json.loads(results[0]["body"]) == {
        "signature_name": "serving_default",
        "inputs": [{"name": "x", "shape": [-1], "type": "DT_FLOAT"},
                   {"name": "y", "shape": [-1], "type": "DT_FLOAT"}],
        "outputs": [{"name": "out", "shape": [-1], "type": "DT_FLOAT"}],
    }
    twosig = json.loads(results[1]["body"])
    assert twosig["signature_name"] == "serving_default"
    assert twosig["inputs"] == [{"name": "features", "shape": [-1, 2], "type": "DT_FLOAT"}]
    # the same with curl-style httpx
    r = httpx.post(f"{server.url}/api/predict/addition", content=b"")
    assert r.status_code == 200 and r.json() == json.loads(results[0]["body"])


def test_errors_map_to_eas_status_codes(server, eas_python):
    results = run_sdk(eas_python, [
        string_call(server, "addition", hex="ffffffff0a"),  # not a PredictRequest
        tf_call(server, "nosuch", ADD_FEEDS),
        # one symbol, two sizes: x has 3 values, y has 2
        tf_call(server, "addition", [["x", [3], "DT_FLOAT", [1, 2, 3]], ["y", [2], "DT_FLOAT", [1, 2]]]),
        tf_call(server, "addition", [["x", [2], "DT_FLOAT", [1, 2]]]),  # y missing
        tf_call(server, "addition", [["x", [3], "DT_FLOAT", [1, 2]], ["y", [3], "DT_FLOAT", [1, 2, 3]]]),
        tf_call(server, "addition", ADD_FEEDS, ["nope"]),  # unknown fetch
        tf_call(server, "addition", [["x", [1], "DT_QINT8", [1]], ["y", [1], "DT_FLOAT", [1]]]),
        tf_call(server, "broken", [["x", [2], "DT_FLOAT", [-1, 2]], ["y", [2], "DT_FLOAT", [1, 1]]], retry=2),
        tf_call(server, "broken", [["x", [2], "DT_FLOAT", [1, 2]], ["y", [2], "DT_FLOAT", [1, 1]]]),
    ])
    bad_proto, unknown, conflict, missing, count, fetch, qint, raised, fine = results
    assert (bad_proto["ok"], bad_proto["code"]) == (False, 400) and "PredictRequest" in bad_proto["message"]
    assert (unknown["ok"], unknown["code"]) == (False, 404) and "nosuch" in unknown["message"]
    assert (conflict["ok"], conflict["code"]) == (False, 400)
    assert "num_inputs" in conflict["message"], conflict
    assert (missing["ok"], missing["code"]) == (False, 400) and "'y'" in missing["message"]
    assert (count["ok"], count["code"]) == (False, 400) and "needs 3 values" in count["message"]
    assert (fetch["ok"], fetch["code"]) == (False, 400) and "nope" in fetch["message"]
    assert (qint["ok"], qint["code"]) == (False, 400) and "DT_QINT8" in qint["message"]
    # the model's own failure is a 500 (the SDK retries 500 only), never a 400
    assert (raised["ok"], raised["code"]) == (False, 500)
    assert "RuntimeError" in raised["message"] and "negative inputs" in raised["message"]
    assert fine["ok"] and fine["outputs"]["out"]["values"] == [2.0, 3.0]
    # GET is not a predict call
    assert httpx.get(f"{server.url}/api/predict/addition").status_code == 405


def test_shapes_that_cannot_exist_are_400(server):
    """array_shape dims whose product wraps int64 (or is too big to allocate) are bad input."""
    for dims in ([2**32, 2**32], [0, 2**62, 2**62], [2**62]):
        request = pb.PredictRequest(signature_name="serving_default")
        for name in ("x", "y"):
            request.inputs[name].dtype = pb.DT_FLOAT
            request.inputs[name].array_shape.dim.extend(dims)
        r = httpx.post(f"{server.url}/api/predict/addition", content=request.SerializeToString())
        assert r.status_code == 400, (dims, r.text)
        assert "array_shape" in r.text


def test_string_request_to_a_hooks_service(server, eas_python):
    results = run_sdk(eas_python, [
        string_call(server, "jsonadder", json.dumps({"x": [1, 2], "y": [10, 20]})),
        string_call(server, "jsonadder", "not json"),
    ])
    good, bad = results
    assert good["ok"], good
    assert json.loads(good["body"]) == {"sum": [11.0, 22.0], "service": "jsonadder"}
    assert (bad["ok"], bad["code"]) == (False, 400) and "JSON object" in bad["message"]


# -- tokens -------------------------------------------------------------------------------------------
def test_token_signature_raw_token_and_refusals(token_server, eas_python):
    results = run_sdk(eas_python, [
        tf_call(token_server, "addition", ADD_FEEDS, token=TOKEN),  # EAS <hmac-sha1> signature
        tf_call(token_server, "addition/v2", ADD_FEEDS, token=TOKEN),  # signed over the sub-path
        tf_call(token_server, "addition", ADD_FEEDS, token="wrong-token"),
        tf_call(token_server, "addition", ADD_FEEDS),  # no token at all
        # custom_url: the SDK sends the raw token in Authorization
        {"custom_url": f"{token_server.url}/api/predict/addition", "token": TOKEN,
         "request": {"type": "tf", "signature": "serving_default", "feeds": ADD_FEEDS, "fetches": []}},
        {"custom_url": f"{token_server.url}/api/predict/addition", "token": "wrong-token",
         "request": {"type": "tf", "signature": "serving_default", "feeds": ADD_FEEDS, "fetches": []}},
        # a hooks service behind the token; with a token the SDK labels the body octet-stream
        string_call(token_server, "jsonadder", json.dumps({"x": [1], "y": [2]}), token=TOKEN),
        string_call(token_server, "jsonadder", json.dumps({"x": [1], "y": [2]})),
    ])
    signed, signed_sub, wrong, missing, raw, raw_wrong, hooks, hooks_missing = results
    for ok in (signed, signed_sub, raw):
        assert ok["ok"], ok
        assert ok["outputs"]["out"]["values"] == [1.5, 2.25, 3.125]
    for refused in (wrong, missing, raw_wrong, hooks_missing):
        assert (refused["ok"], refused["code"]) == (False, 401), refused
    assert "signature" in wrong["message"]
    assert hooks["ok"] and json.loads(hooks["body"]) == {"sum": [3.0], "service": "jsonadder"}

    # curl-style raw token, also over a protobuf body built with modelpod's own proto copy
    request = pb.PredictRequest(signature_name="serving_default")
    for name, values in (("x", [1.0, 2.0]), ("y", [3.0, 4.0])):
        request.inputs[name].dtype = pb.DT_FLOAT
        request.inputs[name].array_shape.dim.append(2)
        request.inputs[name].float_val.extend(values)
    url = f"{token_server.url}/api/predict/addition"
    r = httpx.post(url, content=request.SerializeToString(), headers={"Authorization": TOKEN})
    assert r.status_code == 200, r.text
    response = pb.PredictResponse.FromString(r.content)
    assert list(response.outputs["out"].float_val) == [4.0, 6.0]
    assert httpx.post(url, content=b"", headers={"Authorization": TOKEN}).json()["signature_name"] == "serving_default"
    assert httpx.post(url, content=b"", headers={"Authorization": "nope"}).status_code == 401
    assert httpx.post(url, content=b"").status_code == 401
