"""Dynamic batching is exact: a property test of merge/split, and the real server under concurrency.

The batch-echo model (tests/sched_models.py) answers ``y = 2x``, ``z = x + 1`` and ``rows`` = the
number of rows it was called with, so every caller can check its own rows and see the size of the
batch it was part of.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelpod.serving.execution import batching
from tests.helpers.servers import RunningServer, start_server
from modelpod.spec import TensorSpec
from tests.helpers.sched_models import SCHED_DIR_ENV, calls, metric, pack_batch_echo, v2_body, wait_until, write_config

pytestmark = pytest.mark.timeout(180)

# -- merge / split, in process ------------------------------------------------------------------

OUTPUT_NAMES = ["a", "b", "c"]


def model(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A row-wise function of several inputs (what a batchable model computes)."""
    x, k = inputs["x"], inputs["k"]
    flat = x.reshape(x.shape[0], int(np.prod(x.shape[1:], dtype=np.int64)))
    return {
        "a": x * 3 - 1,
        "b": flat.sum(axis=1) + k,
        "c": np.stack([k, k * 2], axis=1).astype(np.float64),
    }


@st.composite
def batch_case(draw: st.DrawFn) -> tuple[list[dict[str, np.ndarray]], list[list[str] | None]]:
    trailing_x = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int32]))
    count = draw(st.integers(1, 8))
    requests, wanted = [], []
    for _ in range(count):
        rows = draw(st.integers(0, 5))
        seed = draw(st.integers(0, 2**31 - 1))
        rng = np.random.default_rng(seed)
        requests.append({
            "x": (rng.standard_normal((rows, *trailing_x)) * 100).astype(dtype),
            "k": rng.integers(-1000, 1000, size=(rows,), dtype=np.int64),
        })
        if draw(st.booleans()):
            wanted.append(None)
        else:
            wanted.append(draw(st.lists(st.sampled_from(OUTPUT_NAMES), min_size=1, max_size=3, unique=True)))
    return requests, wanted


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch_case())
def test_merge_then_split_gives_each_caller_exactly_its_rows(case) -> None:
    requests, wanted = case
    keys = {batching.group_key(r) for r in requests}
    assert len(keys) == 1  # same dtypes and trailing shapes: one group
    merged = batching.merge(requests)
    assert [b - a for a, b in merged.offsets] == [batching.rows(r) for r in requests]
    outputs = model(merged.inputs)
    union = None if any(w is None for w in wanted) else sorted({n for w in wanted for n in w})
    ran = outputs if union is None else {n: outputs[n] for n in union}
    results = batching.split(ran, merged.offsets, wanted)
    assert len(results) == len(requests)
    for request, names, got in zip(requests, wanted, results):
        alone = model(request)
        assert sorted(got) == sorted(names if names is not None else OUTPUT_NAMES)
        for name, array in got.items():
            assert array.dtype == alone[name].dtype
            assert array.shape == alone[name].shape
            np.testing.assert_array_equal(array, alone[name])


@given(st.lists(st.integers(1, 4), min_size=1, max_size=3), st.lists(st.integers(1, 4), min_size=1, max_size=3))
def test_different_trailing_shapes_or_dtypes_never_share_a_group(a, b) -> None:
    x = {"x": np.zeros((2, *a), np.float32)}
    y = {"x": np.zeros((3, *b), np.float32)}
    assert (batching.group_key(x) == batching.group_key(y)) == (a == b)
    assert batching.group_key(x) != batching.group_key({"x": np.zeros((2, *a), np.float64)})
    assert batching.group_key(x) != batching.group_key({**x, "extra": np.zeros((2,), np.float32)})


def test_split_refuses_an_output_that_does_not_follow_the_batch() -> None:
    with pytest.raises(ValueError, match="does not follow its batch dimension"):
        batching.split({"y": np.zeros((3,))}, [(0, 2), (2, 4)], [None, None])
    with pytest.raises(ValueError, match="does not follow its batch dimension"):
        batching.split({"y": np.float32(1)}, [(0, 2), (2, 4)], [None, None])


def spec(name: str, shape: tuple) -> TensorSpec:
    return TensorSpec(name=name, dtype="float32", shape=shape)


def test_only_a_shared_leading_symbol_makes_a_model_batchable() -> None:
    assert batching.batch_symbol([spec("x", ("b", 3))], [spec("y", ("b",)), spec("z", ("b", 2, 2))]) == "b"
    assert batching.batch_symbol([spec("x", (None, 3))], [spec("y", (None,))]) is None
    assert batching.batch_symbol([spec("x", (4, 3))], [spec("y", (4,))]) is None
    assert batching.batch_symbol([spec("x", ("b", 3))], [spec("y", ("n",))]) is None
    assert batching.batch_symbol([spec("x", ("b", 3))], [spec("y", ())]) is None
    assert batching.batch_symbol([spec("x", ("b",)), spec("w", (3, "b"))], [spec("y", ("b",))]) is None


# -- the real server ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def batched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Path]]:
    root = tmp_path_factory.mktemp("batching")
    folder = root / "calls"
    folder.mkdir()
    pack_batch_echo(root / "models" / "becho", "becho", sleep_ms=5)
    pack_batch_echo(root / "models" / "flat", "flat", batched=False, sleep_ms=5)
    common = {"execution": "queued", "instance": 1, "rpc.keepalive": 60000, "rpc.max_queue_size": 256}
    config = write_config(root / "services.json", [
        {"name": "becho", "model_path": "models/becho",
         "metadata": {**common, "max_batch_size": 16, "max_batch_delay_ms": 20}},
        # asks for batching (through the nested "batching" dict) but its spec has no batch symbol
        {"name": "flat", "model_path": "models/flat",
         "metadata": {**common, "batching": {"max_batch_size": 16, "max_batch_delay_ms": 20}}},
    ])
    server = start_server(config, root, env={SCHED_DIR_ENV: str(folder)})
    try:
        yield server, folder
    finally:
        server.stop(9, timeout=10)


def infer(server: RunningServer, model: str, x: np.ndarray, outputs: list[str] | None = None) -> dict:
    extra = {"outputs": [{"name": n} for n in outputs]} if outputs else {}
    response = httpx.post(f"{server.url}/v2/models/{model}/infer", json=v2_body(x, **extra), timeout=60)
    assert response.status_code == 200, response.text
    return {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in response.json()["outputs"]}


def check_exact(x: np.ndarray, got: dict, wanted: list[str] | None = None) -> int:
    """Assert the answer is exactly this request's rows; return the batch size the model saw."""
    assert sorted(got) == sorted(wanted or ["y", "z", "rows"])
    if "y" in got:
        np.testing.assert_array_equal(got["y"].astype(np.float32), x * 2)
    if "z" in got:
        np.testing.assert_array_equal(got["z"].astype(np.float32), x + 1)
    if "rows" in got:
        assert got["rows"].shape == (x.shape[0],)
        assert len(set(got["rows"].tolist())) == 1  # every row of one request ran in the same call
        seen = int(got["rows"][0])
        assert x.shape[0] <= seen <= 16
        return seen
    return 0


def test_held_queue_is_run_as_one_exact_batch(batched) -> None:
    server, folder = batched
    gate = folder / "becho.hold"
    rng = np.random.default_rng(1)
    gate.touch()
    try:
        with ThreadPoolExecutor(16) as pool:
            first_x = rng.standard_normal((1, 3)).astype(np.float32)
            first = pool.submit(infer, server, "becho", first_x)
            wait_until(lambda: calls(folder, "becho"), "the first request to reach the model")
            xs = [rng.standard_normal((1 + i % 4, 3)).astype(np.float32) for i in range(6)]
            futures = [pool.submit(infer, server, "becho", x) for x in xs]
            wait_until(lambda: metric(server.url, "modelpod_queue_depth", model="becho") == len(xs),
                       "all requests to be queued")
            gate.unlink()
            assert check_exact(first_x, first.result(timeout=60)) == 1
            sizes = [check_exact(x, f.result(timeout=60)) for x, f in zip(xs, futures)]
    finally:
        gate.unlink(missing_ok=True)
    # all six queued requests ran as one call of the model
    total = sum(x.shape[0] for x in xs)
    assert sizes == [total] * len(xs)
    assert [int(v) for _, v in calls(folder, "becho")][-1] == total


def test_concurrent_requests_are_batched_and_exact(batched) -> None:
    server, folder = batched
    rng = np.random.default_rng(7)
    cases = []
    for i in range(160):
        k = 3 if i % 5 else 5  # some requests of another trailing shape: never merged with the rest
        x = (rng.standard_normal((int(rng.integers(1, 5)), k)) * 1000).astype(np.float32)
        wanted = random.Random(i).choice([None, None, ["y"], ["z"], ["rows"], ["y", "rows"]])
        cases.append((x, wanted))
    before_calls = len(calls(folder, "becho"))
    before_count = metric(server.url, "modelpod_batch_size_count", model="becho")
    before_small = metric(server.url, "modelpod_batch_size_bucket", model="becho", le="4.0")
    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda c: infer(server, "becho", c[0], c[1]), cases))
    sizes = [check_exact(x, got, wanted) for (x, wanted), got in zip(cases, answers)]
    assert max(sizes) > 4, "no request was batched with another"
    model_calls = len(calls(folder, "becho")) - before_calls
    assert model_calls < len(cases)  # fewer model calls than requests: batches really happened
    # the batch-size histogram saw the same calls, some with more than 4 rows
    count = metric(server.url, "modelpod_batch_size_count", model="becho") - before_count
    small = metric(server.url, "modelpod_batch_size_bucket", model="becho", le="4.0") - before_small
    assert count == model_calls
    assert small < count


def test_a_model_without_a_batch_symbol_is_never_batched(batched) -> None:
    server, folder = batched
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((int(rng.integers(1, 5)), 3)).astype(np.float32) for _ in range(60)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda x: infer(server, "flat", x), xs))
    for x, got in zip(xs, answers):
        assert check_exact(x, got) == x.shape[0]  # the model saw exactly this request
    assert len(calls(folder, "flat")) == len(xs)
