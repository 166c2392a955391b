"""The encode's memory estimate against the resident set it really takes (a fresh process per size, the probe run
first as every entry point runs it), and the probe's own measurement against tensor sizes known in advance."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sr_model.inference.encode import allocated_peak

ROOT = Path(__file__).resolve().parent.parent

# The peak is VmHWM, the child's own high-water mark: its getrusage maxrss starts at the parent's resident set (Linux
# keeps it across fork and exec), which under pytest is larger than the encode.
MEASURE = """
import ctypes, json, sys
import torch
from sr_model.api import load_model
from sr_model.inference.encode import encode_cost, estimate_encode_bytes
torch.set_num_threads(2)
model = load_model().model
side = int(sys.argv[1])
estimate = estimate_encode_bytes(model, side, side)  # the probe runs here, as in p2g upscale / eval / view
image = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # the probe's freed memory back to the system: growth is new pages
    before = int(open("/proc/self/statm").read().split()[1]) * 4096
    model.encode(image)
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) * 1024
print(json.dumps({"estimate": estimate, "growth": peak - before}))
"""


@pytest.mark.skipif(
    not Path("/proc/self/statm").exists() or sys.platform != "linux", reason="reads the resident set from /proc (glibc)"
)
@pytest.mark.parametrize("side", [384, 512])
def test_estimate_is_within_a_quarter_of_the_resident_set_growth(side):
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, str(side)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    ratio = measured["estimate"] / measured["growth"]
    assert 0.75 <= ratio <= 1.25, measured


def test_allocated_peak_sees_the_largest_moment():
    def run():
        a = torch.empty(2**20)  # 4 MiB
        b = torch.empty(2**21)  # 8 MiB: 12 held
        del a
        c = torch.empty(2**20)  # 12 held again
        return b, c

    assert allocated_peak(run, torch.device("cpu")) == 12 * 2**20
