"""Triton's system shared memory extension, driven by unmodified tritonclient.http / .grpc with real
POSIX regions from ``tritonclient.utils.shared_memory``: register, status, infer with inputs and
outputs in regions (numbers and strings), unregister; hostile regions (out of bounds, unknown,
double, wrong sizes, unlinked or shrunk after registering, too many, reserved keys, no token); the
server keeps serving afterwards and closes what it held."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient import utils
from tritonclient.utils import InferenceServerException

from tests.helpers.packages import pack_code, session_root
from tests.helpers.servers import RunningServer, module_server

pytestmark = pytest.mark.timeout(120)

TOKEN = "shm-token"
SIMPLE = """
    def get_model(data_dir):
        def simple(INPUT0, INPUT1):
            return {"OUTPUT0": INPUT0 + INPUT1, "OUTPUT1": INPUT0 - INPUT1}
        return simple
"""
SIMPLE_STRING = """
    import numpy as np

    def get_model(data_dir):
        def simple_string(INPUT0, INPUT1):
            a = np.array([int(v) for v in INPUT0.ravel()])
            b = np.array([int(v) for v in INPUT1.ravel()])
            def enc(values):
                return np.array([str(v).encode() for v in values], dtype=object).reshape(INPUT0.shape)
            return {"OUTPUT0": enc(a + b), "OUTPUT1": enc(a - b)}
        return simple_string
"""
IDENTITY = """
    def get_model(data_dir):
        def identity(x):
            return {"y": x}
        return identity
"""


def _pair(dtype: str) -> tuple[list[dict], list[dict]]:
    return ([{"name": f"INPUT{i}", "dtype": dtype, "shape": ("batch", 16)} for i in (0, 1)],
            [{"name": f"OUTPUT{i}", "dtype": dtype, "shape": ("batch", 16)} for i in (0, 1)])


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = session_root(tmp_path_factory) / "shm"
    repository = root / "repo"
    if not (root / "done").exists():
        pack_code(repository / "simple" / "1", "simple", SIMPLE, *_pair("int32"))
        pack_code(repository / "simple_string" / "1", "simple_string", SIMPLE_STRING, *_pair("string"))
        pack_code(repository / "identity" / "1", "identity", IDENTITY, [{"name": "x", "dtype": "float32", "shape": (None,)}],
                  [{"name": "y", "dtype": "float32", "shape": (None,)}])
        (root / "done").write_text("ok")
    return repository


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, repo: Path) -> Iterator[RunningServer]:
    # no --shared-memory: a server listening on loopback (the default host) offers it by default
    yield from module_server(tmp_path_factory, repo, "--max-shm-regions", "6", "--max-shm-mb", "2")


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpclient.InferenceServerClient]:
    with httpclient.InferenceServerClient(server.host) as c:
        yield c


@pytest.fixture(scope="module")
def grpc_client(server: RunningServer) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.grpc_target) as c:
        yield c


class Regions:
    """POSIX regions made with tritonclient's own helper; every one destroyed at the end of a test."""

    def __init__(self) -> None:
        self.handles: list = []

    def create(self, byte_size: int) -> tuple[object, str]:
        key = f"/mp_test_{os.getpid()}_{uuid.uuid4().hex[:10]}"
        handle = shm.create_shared_memory_region(key[1:], key, byte_size)
        self.handles.append(handle)
        return handle, key

    def destroy_all(self) -> None:
        for handle in self.handles:
            try:
                shm.destroy_shared_memory_region(handle)
            except Exception:  # noqa: BLE001 - already unlinked by the test
                pass


@pytest.fixture
def regions(http: httpclient.InferenceServerClient) -> Iterator[Regions]:
    made = Regions()
    http.unregister_system_shared_memory()  # each test starts with no regions, as the examples do
    yield made
    http.unregister_system_shared_memory()
    made.destroy_all()


def _status_code(exc: pytest.ExceptionInfo) -> str:
    return exc.value.status()


INPUT0 = np.arange(16, dtype=np.int32).reshape(1, 16)
INPUT1 = np.ones((1, 16), dtype=np.int32)
NBYTES = INPUT0.nbytes


def _simple_regions(http, regions: Regions) -> tuple[object, object]:
    """An input region holding INPUT0|INPUT1 and an output region for OUTPUT0|OUTPUT1, registered."""
    in_handle, in_key = regions.create(NBYTES * 2)
    shm.set_shared_memory_region(in_handle, [INPUT0])
    shm.set_shared_memory_region(in_handle, [INPUT1], offset=NBYTES)
    out_handle, out_key = regions.create(NBYTES * 2)
    http.register_system_shared_memory("input_data", in_key, NBYTES * 2)
    http.register_system_shared_memory("output_data", out_key, NBYTES * 2)
    return in_handle, out_handle


# -- the flow of Triton's simple_*_shm_client examples ----------------------------------------------
def test_metadata_lists_system_shared_memory_only(http, grpc_client) -> None:
    assert "system_shared_memory" in http.get_server_metadata()["extensions"]
    assert "cuda_shared_memory" not in http.get_server_metadata()["extensions"]
    assert "system_shared_memory" in grpc_client.get_server_metadata().extensions
    assert "cuda_shared_memory" not in grpc_client.get_server_metadata().extensions


def test_http_inputs_and_outputs_in_shared_memory(http, regions: Regions) -> None:
    http.unregister_cuda_shared_memory()  # what the examples do first: nothing to do, no error
    _, out_handle = _simple_regions(http, regions)
    inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_shared_memory("input_data", NBYTES)
    inputs[1].set_shared_memory("input_data", NBYTES, offset=NBYTES)
    outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
               httpclient.InferRequestedOutput("OUTPUT1", binary_data=True)]
    outputs[0].set_shared_memory("output_data", NBYTES)
    outputs[1].set_shared_memory("output_data", NBYTES, offset=NBYTES)
    result = http.infer("simple", inputs, outputs=outputs)
    out0, out1 = result.get_output("OUTPUT0"), result.get_output("OUTPUT1")
    assert "data" not in out0 and out0["parameters"]["shared_memory_region"] == "output_data"
    assert out1["parameters"] == {"shared_memory_region": "output_data", "shared_memory_byte_size": NBYTES,
                                  "shared_memory_offset": NBYTES}
    got0 = shm.get_contents_as_numpy(out_handle, utils.triton_to_np_dtype(out0["datatype"]), out0["shape"])
    got1 = shm.get_contents_as_numpy(out_handle, np.int32, out1["shape"], offset=NBYTES)
    np.testing.assert_array_equal(got0, INPUT0 + INPUT1)
    np.testing.assert_array_equal(got1, INPUT0 - INPUT1)
    status = http.get_system_shared_memory_status()
    assert sorted(r["name"] for r in status) == ["input_data", "output_data"]
    assert http.get_system_shared_memory_status("input_data")[0]["byte_size"] == NBYTES * 2
    http.unregister_system_shared_memory("input_data")
    assert [r["name"] for r in http.get_system_shared_memory_status()] == ["output_data"]
    http.unregister_system_shared_memory()
    assert http.get_system_shared_memory_status() == []


def test_grpc_inputs_and_outputs_in_shared_memory(grpc_client, http, regions: Regions) -> None:
    grpc_client.unregister_system_shared_memory()
    grpc_client.unregister_cuda_shared_memory()
    in_handle, in_key = regions.create(NBYTES * 2)
    shm.set_shared_memory_region(in_handle, [INPUT0])
    shm.set_shared_memory_region(in_handle, [INPUT1], offset=NBYTES)
    out_handle, out_key = regions.create(NBYTES * 2)
    grpc_client.register_system_shared_memory("input_data", in_key, NBYTES * 2)
    grpc_client.register_system_shared_memory("output_data", out_key, NBYTES * 2)
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"), grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_shared_memory("input_data", NBYTES)
    inputs[1].set_shared_memory("input_data", NBYTES, offset=NBYTES)
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0"), grpcclient.InferRequestedOutput("OUTPUT1")]
    outputs[0].set_shared_memory("output_data", NBYTES)
    outputs[1].set_shared_memory("output_data", NBYTES, offset=NBYTES)
    result = grpc_client.infer("simple", inputs, outputs=outputs)
    out1 = result.get_output("OUTPUT1")
    assert out1.parameters["shared_memory_region"].string_param == "output_data"
    assert out1.parameters["shared_memory_offset"].int64_param == NBYTES
    assert [len(raw) for raw in result.get_response().raw_output_contents] == [0, 0]
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_handle, np.int32, [1, 16]), INPUT0 + INPUT1)
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_handle, np.int32, [1, 16], offset=NBYTES),
                                  INPUT0 - INPUT1)
    status = grpc_client.get_system_shared_memory_status()
    assert set(status.regions) == {"input_data", "output_data"}
    assert status.regions["input_data"].key == in_key and status.regions["input_data"].byte_size == NBYTES * 2
    assert set(grpc_client.get_system_shared_memory_status("output_data").regions) == {"output_data"}
    grpc_client.unregister_system_shared_memory("input_data")
    assert set(grpc_client.get_system_shared_memory_status().regions) == {"output_data"}
    grpc_client.unregister_system_shared_memory()
    assert len(grpc_client.get_system_shared_memory_status().regions) == 0


def _strings(values) -> np.ndarray:
    return np.array([str(v).encode() for v in values], dtype=object).reshape(1, 16)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_string_tensors_in_shared_memory(protocol: str, http, grpc_client, regions: Regions) -> None:
    client, module = (http, httpclient) if protocol == "http" else (grpc_client, grpcclient)
    in0, in1 = _strings(range(16)), _strings([1] * 16)
    expected_sum, expected_diff = _strings(np.arange(16) + 1), _strings(np.arange(16) - 1)
    handles = {}
    for name, data in [("in0", in0), ("in1", in1), ("out0", expected_sum), ("out1", expected_diff)]:
        serialized = utils.serialize_byte_tensor(data)
        size = utils.serialized_byte_size(serialized)
        handle, key = regions.create(size)
        if name.startswith("in"):
            shm.set_shared_memory_region(handle, [serialized])
        client.register_system_shared_memory(name, key, size)
        handles[name] = (handle, size)
    inputs = [module.InferInput("INPUT0", [1, 16], "BYTES"), module.InferInput("INPUT1", [1, 16], "BYTES")]
    inputs[0].set_shared_memory("in0", handles["in0"][1])
    inputs[1].set_shared_memory("in1", handles["in1"][1])
    outputs = [module.InferRequestedOutput("OUTPUT0"), module.InferRequestedOutput("OUTPUT1")]
    outputs[0].set_shared_memory("out0", handles["out0"][1])
    outputs[1].set_shared_memory("out1", handles["out1"][1])
    client.infer("simple_string", inputs, outputs=outputs)
    got_sum = shm.get_contents_as_numpy(handles["out0"][0], np.object_, [1, 16])
    got_diff = shm.get_contents_as_numpy(handles["out1"][0], np.object_, [1, 16])
    assert got_sum.tolist() == expected_sum.tolist()
    assert got_diff.tolist() == expected_diff.tolist()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_shared_memory_inputs_mix_with_body_inputs_and_outputs(protocol: str, http, grpc_client,
                                                               regions: Regions) -> None:
    """INPUT0 from a region, INPUT1 in the body (binary / raw_input_contents); OUTPUT0 to a region,
    OUTPUT1 back in the response: the positions of the body's tensors stay right."""
    client, module = (http, httpclient) if protocol == "http" else (grpc_client, grpcclient)
    handle, key = regions.create(NBYTES * 2)
    shm.set_shared_memory_region(handle, [INPUT0])
    client.register_system_shared_memory("mixed", key, NBYTES * 2)
    inputs = [module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_shared_memory("mixed", NBYTES)
    inputs[1].set_data_from_numpy(INPUT1 * 5)
    outputs = [module.InferRequestedOutput("OUTPUT0"), module.InferRequestedOutput("OUTPUT1")]
    outputs[0].set_shared_memory("mixed", NBYTES, offset=NBYTES)
    result = client.infer("simple", inputs, outputs=outputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), INPUT0 - INPUT1 * 5)
    np.testing.assert_array_equal(shm.get_contents_as_numpy(handle, np.int32, [1, 16], offset=NBYTES),
                                  INPUT0 + INPUT1 * 5)


def test_a_large_tensor_round_trips_through_shared_memory(http, regions: Regions) -> None:
    x = np.random.default_rng(0).standard_normal(1 << 17).astype(np.float32)  # 512 KiB
    in_handle, in_key = regions.create(x.nbytes)
    out_handle, out_key = regions.create(x.nbytes)
    shm.set_shared_memory_region(in_handle, [x])
    http.register_system_shared_memory("big_in", in_key, x.nbytes)
    http.register_system_shared_memory("big_out", out_key, x.nbytes)
    tensor = httpclient.InferInput("x", [x.size], "FP32")
    tensor.set_shared_memory("big_in", x.nbytes)
    output = httpclient.InferRequestedOutput("y")
    output.set_shared_memory("big_out", x.nbytes)
    http.infer("identity", [tensor], outputs=[output])
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_handle, np.float32, [x.size]), x)


# -- hostile regions ------------------------------------------------------------------------------
def _refused(call, code: str = "400", *words: str) -> str:
    with pytest.raises(InferenceServerException) as exc:
        call()
    assert _status_code(exc) == code, exc.value.message()
    for word in words:
        assert word in exc.value.message(), exc.value.message()
    return exc.value.message()


def test_register_refuses_bad_regions(http, grpc_client, regions: Regions) -> None:
    _, key = regions.create(64)
    for name in ("a/b", "..", "nul\0here", "tab\there"):  # names the per-region paths could not address
        with pytest.raises(InferenceServerException) as info:
            grpc_client.register_system_shared_memory(name, key, 64)
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT" and "must not contain '/'" in info.value.message()
    _refused(lambda: http.register_system_shared_memory("..", key, 64), "400", "must not contain '/'")
    _refused(lambda: http.register_system_shared_memory("r", key, 65), "400", "past the end", "64 bytes")
    _refused(lambda: http.register_system_shared_memory("r", key, 32, offset=40), "400", "past the end")
    _refused(lambda: http.register_system_shared_memory("r", "/mp_no_such_object_here", 8), "400",
             "no POSIX shared memory object")
    _refused(lambda: http.register_system_shared_memory("r", "/../../etc/passwd", 8), "400", "not a POSIX")
    _refused(lambda: http.register_system_shared_memory("r", f"/modelpod-{os.getpid()}-x", 8), "400", "reserved")
    _refused(lambda: http.register_system_shared_memory("r", key, 0), "400", "at least 1")
    http.register_system_shared_memory("r", key, 64)
    _refused(lambda: http.register_system_shared_memory("r", key, 64), "400", "already registered")
    _refused(lambda: http.get_system_shared_memory_status("nope"), "400", "no system shared memory region 'nope'")
    http.unregister_system_shared_memory("nope")  # unknown names are no error (as Triton)
    assert [r["name"] for r in http.get_system_shared_memory_status()] == ["r"]


def test_register_bodies_that_are_not_register_requests(server: RunningServer, regions: Regions) -> None:
    url = f"{server.url}/v2/systemsharedmemory/region/odd/register"
    for body, words in [(b"", "JSON object"), (b"[1]", "JSON object"), (b"{not json", "not JSON"),
                        (b'{"byte_size": 8}', "'key'"), (b'{"key": "/x"}', "'byte_size'"),
                        (b'{"key": "/x", "byte_size": -1}', "non-negative"),
                        (b'{"key": 5, "byte_size": 8}', "'key' must be")]:
        answer = httpx.post(url, content=body)
        assert answer.status_code == 400 and words in answer.json()["error"], (body, answer.text)
    assert httpx.get(url.replace("register", "status")).status_code == 400  # nothing was registered
    assert httpx.get(url).status_code == 405  # register takes POST
    assert httpx.post(f"{server.url}/v2/systemsharedmemory/status").status_code == 405


def test_limits_on_regions_and_bytes(http, regions: Regions) -> None:
    _, key = regions.create(1 << 20)
    for i in range(6):
        http.register_system_shared_memory(f"r{i}", key, 1024)
    _refused(lambda: http.register_system_shared_memory("r6", key, 1024), "400", "--max-shm-regions", "at most 6")
    http.unregister_system_shared_memory()
    _, big = regions.create(2 << 20)
    http.register_system_shared_memory("a", big, 1 << 20)
    http.register_system_shared_memory("b", big, (1 << 20) - 100, offset=100)
    _refused(lambda: http.register_system_shared_memory("c", big, 101), "400", "--max-shm-mb")


def _simple_inputs(region: str, size0: int = NBYTES, offset1: int = NBYTES) -> list[httpclient.InferInput]:
    inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_shared_memory(region, size0)
    inputs[1].set_shared_memory(region, NBYTES, offset=offset1)
    return inputs


def _out(region: str, size: int, offset: int = 0) -> httpclient.InferRequestedOutput:
    output = httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)
    output.set_shared_memory(region, size, offset=offset)
    return output


def test_infer_refuses_bad_region_references(server: RunningServer, http, regions: Regions) -> None:
    _simple_regions(http, regions)
    ok = [_out("output_data", NBYTES)]
    # a byte size far past the region is refused before anything is allocated for it
    for shape, size in (([1 << 40], 1 << 42), ([1 << 48], 1 << 50)):
        huge = {"inputs": [{"name": n, "datatype": "INT32", "shape": shape, "parameters": {
            "shared_memory_region": "input_data", "shared_memory_byte_size": size}} for n in ("INPUT0", "INPUT1")]}
        answer = httpx.post(f"{server.url}/v2/models/simple/infer", json=huge)
        assert answer.status_code == 400 and "runs past the end" in answer.json()["error"], answer.text
    _refused(lambda: http.infer("simple", _simple_inputs("nowhere"), outputs=ok), "400",
             "input 'INPUT0'", "no system shared memory region 'nowhere'")
    _refused(lambda: http.infer("simple", _simple_inputs("input_data", size0=NBYTES - 4), outputs=ok), "400",
             "shared_memory_byte_size is 60 bytes but INT32 of shape [1, 16] needs 64")
    _refused(lambda: http.infer("simple", _simple_inputs("input_data", offset1=NBYTES + 4), outputs=ok), "400",
             "runs past the end of shared memory region 'input_data'")
    _refused(lambda: http.infer("simple", _simple_inputs("input_data"), outputs=[_out("output_data", 16, 120)]),
             "400", "output 'OUTPUT0'", "runs past the end")
    _refused(lambda: http.infer("simple", _simple_inputs("input_data"), outputs=[_out("elsewhere", 64)]),
             "400", "no system shared memory region 'elsewhere'")
    # the output region is too small for the answer: known only after the model ran
    _refused(lambda: http.infer("simple", _simple_inputs("input_data"), outputs=[_out("output_data", 32)]),
             "400", "needs 64 bytes but its shared_memory_byte_size is 32")
    http.unregister_system_shared_memory("input_data")
    _refused(lambda: http.infer("simple", _simple_inputs("input_data"), outputs=ok), "400",
             "no system shared memory region 'input_data'")


def test_infer_refuses_mixed_data_and_half_parameters(server: RunningServer, http, regions: Regions) -> None:
    _simple_regions(http, regions)
    url = f"{server.url}/v2/models/simple/infer"
    both = {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": list(range(16)),
            "parameters": {"shared_memory_region": "input_data", "shared_memory_byte_size": 64}}
    half = {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "parameters": {"shared_memory_byte_size": 64}}
    second = {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [1] * 16}
    for tensor, words in [(both, "set only one of"), (half, "needs both")]:
        answer = httpx.post(url, json={"inputs": [tensor, second]})
        assert answer.status_code == 400 and words in answer.json()["error"], answer.text
    out = {"name": "OUTPUT0", "parameters": {"shared_memory_region": "output_data", "shared_memory_byte_size": 64,
                                             "binary_data": True}}
    good = {**half, "parameters": {"shared_memory_region": "input_data", "shared_memory_byte_size": 64}}
    answer = httpx.post(url, json={"inputs": [good, second], "outputs": [out]})
    assert answer.status_code == 400 and "binary_data" in answer.json()["error"]


def test_strings_that_do_not_parse_are_refused(http, regions: Regions) -> None:
    handle, key = regions.create(64)
    shm.set_shared_memory_region(handle, [np.frombuffer(b"\xff\xff\xff\x7f" * 16, dtype=np.uint8)])
    http.register_system_shared_memory("junk", key, 64)
    inputs = [httpclient.InferInput("INPUT0", [1, 16], "BYTES"), httpclient.InferInput("INPUT1", [1, 16], "BYTES")]
    inputs[0].set_shared_memory("junk", 64)
    inputs[1].set_data_from_numpy(_strings([1] * 16))
    _refused(lambda: http.infer("simple_string", inputs), "400", "BYTES")


def test_a_region_unlinked_after_registering_is_refused_and_the_server_lives(http, grpc_client,
                                                                            regions: Regions) -> None:
    in_handle, _ = _simple_regions(http, regions)
    shm.destroy_shared_memory_region(in_handle)  # unmapped and unlinked by the client
    _refused(lambda: http.infer("simple", _simple_inputs("input_data"), outputs=[_out("output_data", NBYTES)]),
             "400", "unlinked")
    http.unregister_system_shared_memory("input_data")
    assert http.is_server_live()
    _served_afterwards(http, grpc_client)


def test_a_region_shrunk_after_registering_is_refused_and_the_server_lives(server: RunningServer, http, grpc_client,
                                                                          regions: Regions) -> None:
    _, out_key = regions.create(NBYTES)
    in_handle, in_key = regions.create(NBYTES * 2)
    shm.set_shared_memory_region(in_handle, [INPUT0, INPUT1])
    http.register_system_shared_memory("in", in_key, NBYTES * 2)
    http.register_system_shared_memory("out", out_key, NBYTES)
    for key in (in_key, out_key):  # truncated under the server: reading or writing past the end would SIGBUS
        fd = os.open(f"/dev/shm{key}", os.O_RDWR)
        os.ftruncate(fd, 8)
        os.close(fd)
    _refused(lambda: http.infer("simple", _simple_inputs("in")), "400", "shrank to 8 bytes")
    plain = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
    plain[0].set_data_from_numpy(INPUT0)
    plain[1].set_data_from_numpy(INPUT1)
    _refused(lambda: http.infer("simple", plain, outputs=[_out("out", NBYTES)]), "400", "shrank to 8 bytes")
    assert os.stat(f"/dev/shm{out_key}").st_size == 8  # nothing was written past the object's end
    assert server.process.poll() is None
    _served_afterwards(http, grpc_client)


def test_grpc_refusals(grpc_client, http, regions: Regions) -> None:
    _, key = regions.create(64)
    with pytest.raises(InferenceServerException) as exc:
        grpc_client.register_system_shared_memory("g", key, 128)
    assert exc.value.status() == "StatusCode.INVALID_ARGUMENT" and "past the end" in exc.value.message()
    grpc_client.register_system_shared_memory("g", key, 64)
    with pytest.raises(InferenceServerException) as exc:
        grpc_client.register_system_shared_memory("g", key, 64)
    assert "already registered" in exc.value.message()
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"), grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_shared_memory("g", 60)
    inputs[1].set_shared_memory("missing", 64)
    with pytest.raises(InferenceServerException) as exc:
        grpc_client.infer("simple", inputs)
    assert exc.value.status() == "StatusCode.INVALID_ARGUMENT" and "needs 64" in exc.value.message()
    inputs[0].set_shared_memory("g", 64)
    with pytest.raises(InferenceServerException) as exc:
        grpc_client.infer("simple", inputs)
    assert "no system shared memory region 'missing'" in exc.value.message()
    with pytest.raises(InferenceServerException) as exc:
        grpc_client.register_cuda_shared_memory("c", b"\0" * 64, 0, 64)
    assert exc.value.status() == "StatusCode.INVALID_ARGUMENT" and "no GPU support" in exc.value.message()
    assert len(grpc_client.get_cuda_shared_memory_status().regions) == 0


def test_cuda_shared_memory_is_not_spoken(server: RunningServer, http) -> None:
    answer = httpx.post(f"{server.url}/v2/cudasharedmemory/region/c/register",
                        json={"raw_handle": {"b64": "AAAA"}, "device_id": 0, "byte_size": 8})
    assert answer.status_code == 400 and "not supported on this server (no GPU support)" in answer.json()["error"]
    assert http.get_cuda_shared_memory_status() == []
    http.unregister_cuda_shared_memory()
    http.unregister_cuda_shared_memory("c")
    assert httpx.get(f"{server.url}/v2/cudasharedmemory/region/c/status").status_code == 400


def test_unregister_closes_what_the_server_held(server: RunningServer, http, regions: Regions) -> None:
    def held() -> int:
        fds = f"/proc/{server.process.pid}/fd"
        return sum(1 for fd in os.listdir(fds) if "mp_test_" in _readlink(f"{fds}/{fd}"))

    before = held()
    _, key = regions.create(64)
    for i in range(3):
        http.register_system_shared_memory(f"h{i}", key, 64)
    assert held() == before + 3
    http.unregister_system_shared_memory("h0")
    assert held() == before + 2
    http.unregister_system_shared_memory()
    assert held() == before


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _served_afterwards(http, grpc_client) -> None:
    """Plain requests still work on both protocols."""
    inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(INPUT0)
    inputs[1].set_data_from_numpy(INPUT1)
    np.testing.assert_array_equal(http.infer("simple", inputs).as_numpy("OUTPUT0"), INPUT0 + INPUT1)
    ginputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"), grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
    ginputs[0].set_data_from_numpy(INPUT0)
    ginputs[1].set_data_from_numpy(INPUT1)
    np.testing.assert_array_equal(grpc_client.infer("simple", ginputs).as_numpy("OUTPUT1"), INPUT0 - INPUT1)


# -- switched off, and behind a token ----------------------------------------------------------------
def test_switched_off(tmp_path_factory: pytest.TempPathFactory, repo: Path) -> None:
    gen = module_server(tmp_path_factory, repo, "--no-shared-memory")
    server = next(gen)
    try:
        with httpclient.InferenceServerClient(server.host) as http:
            assert "system_shared_memory" not in http.get_server_metadata()["extensions"]
            message = _refused(lambda: http.register_system_shared_memory("r", "/anything", 8), "403")
            assert "--shared-memory" in message
            _refused(lambda: http.get_system_shared_memory_status(), "403")
            _refused(lambda: http.infer("simple", _simple_inputs("r")), "400", "turned off")
            http.unregister_cuda_shared_memory()  # no CUDA regions either way
        with grpcclient.InferenceServerClient(server.grpc_target) as grpc_client:
            with pytest.raises(InferenceServerException) as exc:
                grpc_client.unregister_system_shared_memory()
            assert exc.value.status() == "StatusCode.PERMISSION_DENIED"
    finally:
        gen.close()


def test_every_endpoint_needs_the_server_token(tmp_path_factory: pytest.TempPathFactory, repo: Path) -> None:
    gen = module_server(tmp_path_factory, repo, "--shared-memory", "--token", TOKEN)
    server = next(gen)
    made = Regions()
    try:
        _, key = made.create(NBYTES * 2)
        base = f"{server.url}/v2"
        for method, path in [("POST", "/systemsharedmemory/region/r/register"), ("GET", "/systemsharedmemory/status"),
                             ("GET", "/systemsharedmemory/region/r/status"), ("POST", "/systemsharedmemory/unregister"),
                             ("POST", "/systemsharedmemory/region/r/unregister"), ("GET", "/cudasharedmemory/status"),
                             ("POST", "/cudasharedmemory/unregister"),
                             ("POST", "/cudasharedmemory/region/r/register")]:
            answer = httpx.request(method, base + path, json={"key": key, "byte_size": 8})
            assert answer.status_code == 401, (path, answer.text)
        assert httpx.get(f"{base}/systemsharedmemory/status",
                         headers={"Authorization": "wrong"}).status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with httpclient.InferenceServerClient(server.host) as http:
            http.register_system_shared_memory("r", key, NBYTES * 2, headers=auth)
            assert http.get_system_shared_memory_status(headers=auth)[0]["key"] == key
        with grpcclient.InferenceServerClient(server.grpc_target) as grpc_client:
            for call in (lambda: grpc_client.get_system_shared_memory_status(),
                         lambda: grpc_client.register_system_shared_memory("g", key, 8),
                         lambda: grpc_client.unregister_system_shared_memory(),
                         lambda: grpc_client.unregister_cuda_shared_memory()):
                with pytest.raises(InferenceServerException) as exc:
                    call()
                assert exc.value.status() == "StatusCode.UNAUTHENTICATED"
            assert set(grpc_client.get_system_shared_memory_status(headers={"authorization": TOKEN}).regions) == {"r"}
            grpc_client.unregister_system_shared_memory(headers={"authorization": TOKEN})
            assert len(grpc_client.get_system_shared_memory_status(headers={"authorization": TOKEN}).regions) == 0
    finally:
        gen.close()
        made.destroy_all()
