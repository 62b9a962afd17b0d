"""Simulator stand-in for DCGM 4.6's ``DcgmHandle``: one connection to a host engine.

As in DCGM 4.5 and later, remote connections go through ``dcgmConnect_v3`` with
``tcp://`` or ``unix://`` URIs, and every handle is kept in the class-level ``handles`` list,
so dropping a reference does not disconnect: call ``Shutdown()``.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, ClassVar

import dcgm_agent
import dcgm_structs
import pydcgm  # noqa: F401 (imported first, as the real module: import pydcgm, not this one)


class DcgmHandle:
    """A handle to an embedded or remote host engine, and the library's lifetime."""

    handleLock: ClassVar[threading.Lock] = threading.Lock()
    handles: ClassVar[list[DcgmHandle]] = []

    def __init__(
        self,
        handle: Any = None,
        ipAddress: str | None = None,
        opMode: int = dcgm_structs.DCGM_OPERATION_MODE_AUTO,
        persistAfterDisconnect: bool = False,
        unixSocketPath: str | None = None,
        timeoutMs: int = 0,
        decoratorHandle: bool | None = None,
    ) -> None:
        self._handleCreated = False
        self._persistAfterDisconnect = persistAfterDisconnect
        if handle is not None:
            self.handle = handle
            self._fromDecorator = True if decoratorHandle is None else decoratorHandle
            return
        self._fromDecorator = False if decoratorHandle is None else decoratorHandle
        self._ipAddress = ipAddress
        if ipAddress is not None and unixSocketPath is not None:
            raise dcgm_structs.DCGMError(dcgm_structs.DCGM_ST_BADPARAM)

        dcgm_structs._dcgmInit()  # noqa: SLF001 (the bindings' own loader)
        dcgm_agent.dcgmInit()

        if ipAddress is None and unixSocketPath is None:
            self.handle = dcgm_agent.dcgmStartEmbedded(opMode)
            self.isEmbedded = True
        else:
            params = dcgm_structs.c_dcgmConnectV3Params_v1()
            params.version = dcgm_structs.c_dcgmConnectV3Params_version
            params.timeoutMs = timeoutMs
            params.persistAfterDisconnect = 1 if persistAfterDisconnect else 0
            where = f"tcp://{ipAddress}" if ipAddress is not None else f"unix://{unixSocketPath}"
            self.handle = dcgm_agent.dcgmConnect_v3(where, params)
            self.isEmbedded = False
        self._handleCreated = True
        if not self._fromDecorator:
            with DcgmHandle.handleLock:
                DcgmHandle.handles.append(self)

    @classmethod
    def reset(cls) -> None:
        """Shut down every tracked handle."""
        with cls.handleLock:
            cleanup, cls.handles = cls.handles[:], []
        for handle in cleanup:
            if handle._handleCreated:  # noqa: SLF001
                handle.Shutdown()

    def __del__(self) -> None:
        if getattr(self, "_handleCreated", False):
            self.Shutdown()

    def __StopDcgm__(self) -> None:
        """Stop the embedded engine, or disconnect."""
        if self.isEmbedded:
            dcgm_agent.dcgmStopEmbedded(self.handle)
        else:
            dcgm_agent.dcgmDisconnect(self.handle)

    def FromDecorator(self) -> bool:
        """Whether the handle came from a test decorator (and is not tracked)."""
        return self._fromDecorator

    def Shutdown(self) -> None:
        """Disconnect or stop the embedded engine; later calls do nothing."""
        if not self._handleCreated:
            return
        # The real one first drops pydcgm.DcgmGroup's tracking for decorator handles; the
        # simulator has no DcgmGroup class.
        with contextlib.suppress(AttributeError):  # modules torn down at interpreter exit
            self.__StopDcgm__()
        self._handleCreated = False
        self.handle = None

    @staticmethod
    def Unload() -> None:
        """Shut the library down for the whole process."""
        dcgm_agent.dcgmShutdown()

    def GetIpAddress(self) -> str | None:
        """The address connected to; None for an embedded engine."""
        return self._ipAddress
