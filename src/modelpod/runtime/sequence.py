"""Stateful and decoupled models: what a python model declares, and what it is handed.

A python model (the callable its ``get_model(data_dir)`` returns) declares two things with plain
attributes, so packaged code needs nothing from modelpod:

* ``stateful = True``: the model keeps state per *sequence* (Triton's sequence extension). Each
  call then gets a keyword argument ``sequence``, a :class:`SequenceContext`: the sequence's id,
  whether this request starts or ends it, and ``state``, a dict the model keeps whatever it likes
  in. The dict belongs to that sequence alone; it is fresh at ``sequence_start`` and dropped when
  the sequence ends, expires or its stream closes. Requests of one sequence reach the model one at
  a time, in the order they arrived.
* a generator (``def model(...): ... yield {...}``), or ``decoupled = True`` on a callable that
  returns an iterator: the model is *decoupled*, it sends zero, one or many answers per request
  (Triton's decoupled transaction policy). gRPC ``ModelStreamInfer`` sends each answer as it is
  yielded; calls that carry exactly one answer (``Model.infer``, HTTP, ``ModelInfer``) take a
  decoupled model only when it yields exactly one.

In process, ``model.infer(inputs)`` of a stateful model is a sequence of one request (start and
end, fresh state) unless ``sequence=`` is given; ``model.infer_stream(inputs)`` yields every
answer of a decoupled model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelpod.backends.declarations import SEQUENCE_ARGUMENT, is_decoupled, is_stateful  # noqa: F401 - re-exported
from modelpod.errors import ResponseCountError, SpecError  # noqa: F401 - re-exported


@dataclass(eq=False)
class SequenceContext:
    """One request's place in its sequence, handed to a stateful model as ``sequence=``."""

    #: the client's ``sequence_id`` (a non-zero int, or a non-empty string)
    id: int | str
    #: this request carries ``sequence_start``: ``state`` is fresh
    start: bool
    #: this request carries ``sequence_end``: ``state`` is dropped after it
    end: bool
    #: the model's own per-sequence state, kept between the sequence's requests
    state: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def single(cls) -> "SequenceContext":
        """A sequence of one request (what an in-process call without ``sequence=`` runs in)."""
        return cls(0, True, True, {})


