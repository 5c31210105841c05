"""What a python model declares with plain attributes: stateful (gets ``sequence=``) or decoupled
(yields its answers). See :mod:`modelpod.runtime.sequence` for what a stateful model is handed."""

from __future__ import annotations

import inspect
from typing import Any

#: the keyword a stateful model's call receives its SequenceContext under
SEQUENCE_ARGUMENT = "sequence"


def is_stateful(model: Any) -> bool:
    """Whether a python model declares ``stateful = True``."""
    return getattr(model, "stateful", False) is True


def is_decoupled(model: Any) -> bool:
    """Whether a python model yields its answers: ``decoupled = True``, or a generator function
    (or a callable object whose ``__call__`` is one)."""
    flag = getattr(model, "decoupled", None)
    if flag is not None:
        return flag is True
    if inspect.isgeneratorfunction(model):
        return True
    call = getattr(type(model), "__call__", None)
    return not inspect.isroutine(model) and call is not None and inspect.isgeneratorfunction(call)
