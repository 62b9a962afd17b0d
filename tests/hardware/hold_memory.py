"""Hold a CUDA context, then 10 GiB of GPU memory, each on cue from the test.

The load for the memory test: creates its CUDA context and prints "ctx"; after a line on stdin,
allocates 10 GiB and prints "alloc"; holds it until the next line or the end of stdin. Run with
the GPU chosen by CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import sys

import torch

ALLOCATION_BYTES = 10 * 2**30


def say(word: str) -> None:
    """Tell the test something, one word a line."""
    sys.stdout.write(word + "\n")
    sys.stdout.flush()


def main() -> int:
    """Context first, so that the test's baseline already includes it; then the allocation."""
    # A one-element tensor creates the context and loads the fill kernel; what it allocates
    # (one 2 MiB block) is part of the baseline, not of the 10 GiB rise.
    torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    say("ctx")
    sys.stdin.readline()
    # torch.empty launches no kernel: the rise is the allocation alone (10 GiB is a multiple
    # of the caching allocator's 2 MiB rounding, so it asks the driver for exactly that).
    block = torch.empty(ALLOCATION_BYTES, dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()
    say("alloc")
    sys.stdin.readline()
    del block
    return 0


if __name__ == "__main__":
    sys.exit(main())
