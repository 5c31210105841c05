"""Per-version inference statistics in the shape of Triton's statistics extension.

One :class:`InferenceStats` per served model version, kept by the code that runs its requests
(:class:`~modelpod.serving.execution.served.ServedModel` and its scheduler) and read by the v2
``stats`` endpoints. Recording is a few integer additions on plain attributes: no locks (everything
runs on the server's event loop), no allocation past the first batch of each size.

What each figure covers (every protocol's requests count, hooks' calls too):

* ``success`` / ``fail``: requests that reached the model version (after its lookup), from the
  start of their input check to their result; a request refused for bad input, a full queue, a
  passed deadline or a model error counts as a failure;
* ``queue``: from entering the model's queue to the start of its batch (batch collection included);
  0 for models that run inline on the event loop;
* ``compute_input``: the spec check and conversion of the request's inputs (inline models check
  inside the model call, so theirs is part of ``compute_infer``);
* ``compute_infer``: the model call (for a batch, the batch's call, counted once per request);
* ``compute_output``: splitting a batch's outputs back to its requests (0 for a batch of one);
* ``inference_count``: rows of successful requests for a model with a batch dimension, else 1 per
  request; ``execution_count``: model calls (a dynamic batch is one);
* ``batch_stats``: per batch size, the model calls and their durations.
"""

from __future__ import annotations

import time
from typing import Any

Ns = int


class InferenceStats:
    """Counts and nanoseconds of one model version since it was loaded."""

    __slots__ = ("success_count", "success_ns", "fail_count", "fail_ns", "queue_ns", "input_ns", "infer_ns",
                 "output_ns", "inference_count", "execution_count", "last_ns", "batches", "inline_rows")

    def __init__(self) -> None:
        self.success_count = self.success_ns = 0
        self.fail_count = self.fail_ns = 0
        #: summed over successful requests (their count is success_count)
        self.queue_ns = self.input_ns = self.infer_ns = self.output_ns = 0
        self.inference_count = self.execution_count = 0
        #: perf_counter_ns of the last request's end (0: none yet)
        self.last_ns = 0
        #: batch size -> [executions, input ns, infer ns, output ns] (calls through the scheduler)
        self.batches: dict[int, list[int]] = {}
        #: rows -> [requests, ns] of requests run inline (each one call: success = infer = execution)
        self.inline_rows: dict[int, list[int]] = {}

    # -- recording (hot path) ------------------------------------------------------------------
    def inline(self, start: Ns, end: Ns, rows: int) -> None:
        """One successful request run straight on the event loop (one model call): two additions
        here, the rest is worked out when read."""
        row = self.inline_rows.get(rows)
        if row is None:
            row = self.inline_rows[rows] = [0, 0]
        row[0] += 1
        row[1] += end - start
        self.last_ns = end

    def failed(self, took: Ns, end: Ns) -> None:
        """One request that failed after ``took`` ns, ending at ``end`` (perf_counter_ns)."""
        self.fail_count += 1
        self.fail_ns += took
        self.last_ns = end

    def execution(self, rows: int, input_ns: Ns, infer_ns: Ns, output_ns: Ns) -> None:
        """One model call through the scheduler (a batch of ``rows`` rows)."""
        self.execution_count += 1
        batch = self.batches.get(rows)
        if batch is None:
            batch = self.batches[rows] = [0, 0, 0, 0]
        batch[0] += 1
        batch[1] += input_ns
        batch[2] += infer_ns
        batch[3] += output_ns

    def succeeded(self, total_ns: Ns, queue_ns: Ns, input_ns: Ns, infer_ns: Ns, output_ns: Ns, rows: int,
                  end: Ns) -> None:
        """One successful request through the scheduler, with its share of its batch's durations."""
        self.success_count += 1
        self.success_ns += total_ns
        self.queue_ns += queue_ns
        self.input_ns += input_ns
        self.infer_ns += infer_ns
        self.output_ns += output_ns
        self.inference_count += rows
        self.last_ns = end

    # -- reading ---------------------------------------------------------------------------------
    def last_inference_ms(self) -> int:
        """The last request's end as milliseconds since the epoch (0: none yet)."""
        if not self.last_ns:
            return 0
        return (time.time_ns() - (time.perf_counter_ns() - self.last_ns)) // 1_000_000

    def as_triton(self, name: str, version: str) -> dict[str, Any]:
        """This version's ``model_stats`` entry, as Triton's statistics extension writes it."""
        inline = list(self.inline_rows.items())
        inline_count = sum(count for _, (count, _ns) in inline)
        inline_ns = sum(ns for _, (_count, ns) in inline)
        ok = self.success_count + inline_count
        batches = {size: list(row) for size, row in self.batches.items()}
        for rows, (count, ns) in inline:
            batch = batches.setdefault(rows, [0, 0, 0, 0])
            batch[0] += count
            batch[2] += ns

        def duration(count: int, ns: int) -> dict[str, int]:
            return {"count": count, "ns": ns}

        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms(),
            "inference_count": self.inference_count + sum(rows * count for rows, (count, _ns) in inline),
            "execution_count": self.execution_count + inline_count,
            "inference_stats": {
                "success": duration(ok, self.success_ns + inline_ns),
                "fail": duration(self.fail_count, self.fail_ns),
                "queue": duration(ok, self.queue_ns),
                "compute_input": duration(ok, self.input_ns),
                "compute_infer": duration(ok, self.infer_ns + inline_ns),
                "compute_output": duration(ok, self.output_ns),
                "cache_hit": duration(0, 0),
                "cache_miss": duration(0, 0),
            },
            "batch_stats": [
                {"batch_size": size, "compute_input": duration(count, in_ns),
                 "compute_infer": duration(count, infer_ns), "compute_output": duration(count, out_ns)}
                for size, (count, in_ns, infer_ns, out_ns) in sorted(batches.items())
            ],
        }
