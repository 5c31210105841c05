"""Stateful and decoupled python models in process: how they declare themselves, what infer() and
infer_stream() do with them, and how packing verifies them (modelpod.runtime.sequence)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import modelpod
from modelpod.errors import BackendError, ModelError, SpecError
from modelpod.runtime.sequence import ResponseCountError, SequenceContext
from tests.helpers.packages import pack_code
from tests.helpers.sequence_models import build_examples, pack_accumulator, pack_ticker

INT = [{"name": "INPUT", "dtype": "int32", "shape": ("n",)}]
OUT = [{"name": "OUTPUT", "dtype": "int32", "shape": ("n",)}]


def test_a_stateful_model_keeps_state_in_the_sequence_it_is_given(tmp_path: Path) -> None:
    with modelpod.load(pack_accumulator(tmp_path / "acc")) as model:
        assert model.stateful and not model.decoupled
        x = np.array([1, 2], np.int32)
        # without sequence=: a sequence of its own
        assert model.infer({"INPUT": x})["OUTPUT"].tolist() == [3, 3]
        assert model.infer({"INPUT": x})["OUTPUT"].tolist() == [3, 3]
        first, second = SequenceContext(1, True, False), SequenceContext(2, True, False)
        assert model.infer({"INPUT": x}, sequence=first)["OUTPUT"].tolist() == [3, 3]
        assert model.infer({"INPUT": x}, sequence=second)["OUTPUT"].tolist() == [3, 3]
        first.start = False
        assert model.infer({"INPUT": x}, sequence=first)["OUTPUT"].tolist() == [6, 6]
        assert first.state["sum"] == 6 and second.state["sum"] == 3


def test_a_decoupled_model_streams_its_answers_and_infer_takes_exactly_one(tmp_path: Path) -> None:
    with modelpod.load(pack_ticker(tmp_path / "ticker")) as model:
        assert model.decoupled and not model.stateful
        answers = list(model.infer_stream({"COUNT": np.array([3], np.int32)}))
        assert [a["OUT"].tolist() for a in answers] == [[0], [1], [2]]
        assert model.infer({"COUNT": np.array([1], np.int32)})["OUT"].tolist() == [0]
        with pytest.raises(ResponseCountError, match="decoupled and sent more than one answer"):
            model.infer({"COUNT": np.array([2], np.int32)})
        with pytest.raises(ResponseCountError, match="sent no answer") as info:
            model.infer({"COUNT": np.array([0], np.int32)})
        assert isinstance(info.value, SpecError)  # the caller's error: a 400 on every protocol
        with pytest.raises(SpecError, match="input 'COUNT'"):  # inputs are checked at the call
            model.infer_stream({"COUNT": np.array([1.0], np.float32)})


def test_every_answer_is_checked_against_the_output_spec(tmp_path: Path) -> None:
    main = """
        import numpy as np

        def get_model(data_dir):
            def answers(INPUT):
                yield {"OUTPUT": INPUT}
                yield {"OUTPUT": INPUT.astype(np.float64)}
            return answers
    """
    package = pack_code(tmp_path / "bad", "bad", main, INT, OUT)
    with modelpod.load(package) as model:
        stream = model.infer_stream({"INPUT": np.array([1], np.int32)})
        assert next(stream)["OUTPUT"].tolist() == [1]
        with pytest.raises(ModelError, match="broke its output spec"):
            next(stream)


def test_decoupled_by_flag_and_a_callable_object_with_a_generator_call(tmp_path: Path) -> None:
    main = """
        class Twice:
            def __call__(self, INPUT):
                yield {"OUTPUT": INPUT}
                yield {"OUTPUT": INPUT + 1}

        def get_model(data_dir):
            return Twice()
    """
    with modelpod.load(pack_code(tmp_path / "obj", "obj", main, INT, OUT)) as model:
        assert model.decoupled
        assert [a["OUTPUT"].tolist() for a in model.infer_stream({"INPUT": np.array([1], np.int32)})] == [[1], [2]]
    main = """
        def get_model(data_dir):
            def listed(INPUT):
                return iter([{"OUTPUT": INPUT}])
            listed.decoupled = True
            return listed
    """
    with modelpod.load(pack_code(tmp_path / "flag", "flag", main, INT, OUT)) as model:
        assert model.decoupled and model.infer({"INPUT": np.array([4], np.int32)})["OUTPUT"].tolist() == [4]


def test_a_stateful_model_may_not_name_an_input_sequence(tmp_path: Path) -> None:
    main = """
        def get_model(data_dir):
            def model(sequence):
                return {"OUTPUT": sequence}
            model.stateful = True
            return model
    """
    package = pack_code(tmp_path / "clash", "clash", main, [{"name": "sequence", "dtype": "int32", "shape": ("n",)}],
                        OUT)
    with pytest.raises(BackendError, match="rename its input 'sequence'"):
        modelpod.load(package)


def test_packing_a_decoupled_model_compares_its_last_answer(tmp_path: Path) -> None:
    main = """
        def get_model(data_dir):
            def counting(INPUT):
                for i in range(3):
                    yield {"OUTPUT": INPUT + i}
            return counting
    """
    x = np.array([10], np.int32)
    pack_code(tmp_path / "ok", "ok", main, INT, OUT, {"INPUT": x}, {"OUTPUT": x + 2})
    with pytest.raises(ValueError, match="output 'OUTPUT' differs"):
        pack_code(tmp_path / "off", "off", main, INT, OUT, {"INPUT": x}, {"OUTPUT": x})
    silent = """
        def get_model(data_dir):
            def silent(INPUT):
                return
                yield
            return silent
    """
    with pytest.raises(ValueError, match="decoupled and sent no answer to its test inputs"):
        pack_code(tmp_path / "silent", "silent", silent, INT, OUT, {"INPUT": x}, {"OUTPUT": x})


def test_the_bundled_triton_examples(tmp_path: Path) -> None:
    packages = build_examples(tmp_path)
    with modelpod.load(packages["simple_sequence"]) as model:
        x = np.array([[7]], np.int32)
        assert model.infer({"INPUT": x}, sequence=SequenceContext(5, True, False))["OUTPUT"].tolist() == [[8]]
        assert model.infer({"INPUT": x}, sequence=SequenceContext(5, False, True))["OUTPUT"].tolist() == [[7]]
    with modelpod.load(packages["repeat_int32"]) as model:
        inputs = {"IN": np.array([3, 4], np.int32), "DELAY": np.zeros(2, np.uint32), "WAIT": np.zeros(1, np.uint32)}
        answers = list(model.infer_stream(inputs))
        assert [(a["OUT"].tolist(), a["IDX"].tolist()) for a in answers] == [([3], [0]), ([4], [1])]
