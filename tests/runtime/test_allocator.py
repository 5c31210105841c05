"""The allocator tuning ``modelpod serve`` applies: large buffers freed by one request are reused by
the next instead of being given back to the OS and faulted in again.

Counted in page faults (``ru_minflt``), in fresh processes because the setting is process-wide.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)

CHURN = """
import resource, sys
import numpy as np
from modelpod.runtime import allocator

if sys.argv[1] == "on":
    assert allocator.keep_freed_memory() and allocator.applied()
else:
    assert not allocator.applied()

def churn():
    for _ in range(40):  # what a request with a 4 MiB tensor does: body, input, output, answer
        body = bytes(4 << 20)
        x = np.frombuffer(body, np.float32)
        out = (x + 1).tobytes()
        del body, x, out

churn()  # the first round may fault pages in
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_kept_memory_stops_the_page_faults_of_repeated_large_buffers() -> None:
    untuned, tuned = _faults("off"), _faults("on")
    pages_per_round = 40 * 3 * (4 << 20) // 4096
    assert untuned > pages_per_round // 2, f"expected the untuned churn to fault pages in, got {untuned}"
    assert tuned < untuned // 20, f"tuned {tuned} faults vs untuned {untuned}"
