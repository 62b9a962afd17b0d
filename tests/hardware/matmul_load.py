"""Keep one GPU busy with 8192x8192 bf16 matrix products for a given time.

The load for the GR-engine test: prints "started" once warm and "stopped" once the last product
has finished on the GPU, then exits. Run with the GPU chosen by CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

SIZE = 8192
# Products queued per synchronisation: about 30 ms of work on an H100, so the GPU never idles
# between batches and "stopped" is printed promptly after the deadline.
BATCH = 20


def say(word: str) -> None:
    """Tell the test something, one word a line."""
    sys.stdout.write(word + "\n")
    sys.stdout.flush()


def main() -> int:
    """Warm up, then multiply until the time is up."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, required=True, help="how long to keep busy")
    seconds = parser.parse_args().seconds
    a = torch.randn(SIZE, SIZE, dtype=torch.bfloat16, device="cuda")
    b = torch.randn_like(a)
    out = torch.empty_like(a)
    for _ in range(3):  # cuBLAS creates its handle and picks its kernel here, not under test
        torch.mm(a, b, out=out)
    torch.cuda.synchronize()
    say("started")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(BATCH):
            torch.mm(a, b, out=out)
        torch.cuda.synchronize()
    say("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
