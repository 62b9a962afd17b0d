"""Raise XID 31 in this process only: a CUDA kernel stores through an invalid pointer.

Prints one JSON line, ``{"time": ..., "error": 700, "error_name": ..., "pid": ...}``, where time
is ``time.time()`` taken right after ``cuCtxSynchronize`` returned; exits 0 when that error was
CUDA_ERROR_ILLEGAL_ADDRESS, 3 otherwise. Run with the GPU chosen by CUDA_VISIBLE_DEVICES.

Only the CUDA driver API through ctypes and a hand-written PTX kernel, which the driver
JIT-compiles: no nvcc, torch or cupy. An MMU fault is an application error: the driver tears
down this process's context and logs XID 31; the GPU, its settings and other processes are
left alone, and no reset is needed.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import time

CUDA_SUCCESS = 0
CUDA_ERROR_ILLEGAL_ADDRESS = 700
EXIT_UNEXPECTED = 3
# The null page is never mapped into a CUDA context (nor into the process, so HMM cannot serve
# the fault either): a store there is a fatal MMU fault, XID 31, as seen on the H100.
DEFAULT_ADDRESS = 0

# PTX for sm_75, the oldest target CUDA 13 still compiles: PTX is forward compatible, so the
# driver JIT-compiles it for whatever GPU this is (sm_90 on the H100). The store is volatile so
# that nothing may drop it; the address is a parameter so that nothing can prove it invalid.
PTX = b"""
.version 6.4
.target sm_75
.address_size 64

.visible .entry poke(.param .u64 target)
{
    .reg .b64 %rd<2>;
    .reg .b32 %r<2>;
    ld.param.u64 %rd1, [target];
    mov.b32 %r1, 31;
    st.volatile.global.u32 [%rd1], %r1;
    ret;
}
"""


class CudaError(Exception):
    """A driver call before the fault failed: nothing was tested."""


def main() -> int:
    """Set up a context and the kernel, launch it, and report what synchronising returned."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", type=int, default=0, help="CUDA device ordinal (default 0)")
    parser.add_argument(
        "--address", type=lambda text: int(text, 0), default=DEFAULT_ADDRESS,
        help="the invalid address to store to (default 0)",
    )  # fmt: skip
    args = parser.parse_args()
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError as error:
        sys.stderr.write(f"xid_fault: no CUDA driver: {error}\n")
        return EXIT_UNEXPECTED

    def call(name: str, *arguments: object) -> None:
        result = int(getattr(cuda, name)(*arguments))
        if result != CUDA_SUCCESS:
            raise CudaError(f"{name} failed: {result} {error_name(cuda, result)}")

    try:
        call("cuInit", 0)
        device = ctypes.c_int()
        call("cuDeviceGet", ctypes.byref(device), args.gpu)
        # The primary context: unversioned calls, unlike cuCtxCreate (_v2, _v3, _v4 by release).
        context = ctypes.c_void_p()
        call("cuDevicePrimaryCtxRetain", ctypes.byref(context), device)
        call("cuCtxSetCurrent", context)
        module = ctypes.c_void_p()
        call("cuModuleLoadData", ctypes.byref(module), ctypes.c_char_p(PTX))
        function = ctypes.c_void_p()
        call("cuModuleGetFunction", ctypes.byref(function), module, b"poke")
        target = ctypes.c_uint64(args.address)
        params = (ctypes.c_void_p * 1)(ctypes.addressof(target))
        # One thread of one block; launching is asynchronous, the fault surfaces on synchronise.
        call("cuLaunchKernel", function, 1, 1, 1, 1, 1, 1, 0, None, params, None)
    except CudaError as error:
        sys.stderr.write(f"xid_fault: {error}\n")
        return EXIT_UNEXPECTED
    result = int(cuda.cuCtxSynchronize())
    returned = time.time()  # first thing after the return: the latency is measured from here
    report = {"time": returned, "error": result, "error_name": error_name(cuda, result)}
    report["pid"] = os.getpid()
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    # The context is unusable now; leave it to the driver, which frees it when the process ends.
    return 0 if result == CUDA_ERROR_ILLEGAL_ADDRESS else EXIT_UNEXPECTED


def error_name(cuda: ctypes.CDLL, result: int) -> str:
    """CUDA's name for a CUresult, such as CUDA_ERROR_ILLEGAL_ADDRESS."""
    name = ctypes.c_char_p()
    if cuda.cuGetErrorName(result, ctypes.byref(name)) != CUDA_SUCCESS or not name.value:
        return "unknown"
    return name.value.decode()


if __name__ == "__main__":
    sys.exit(main())
