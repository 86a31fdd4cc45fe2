"""NVML's library and session as the tuner holds them: opened on demand, restarted after driver trouble with
back-off, closed whenever the backend lets go, and judged for the readiness and liveness probes.

An open NVML session keeps /dev/nvidia* open, which keeps the driver module loaded and the GPUs busy for a
reset or a MIG change. So the session is not for the process lifetime: the backend closes it between
reconciles where persistence mode keeps the GPUs' state (see `NvmlGpuBackend.release`), and after any error
that means the session is gone (a driver reload, a library/driver version mismatch) it is closed at once and
started afresh on the next use.

`nvmlInit` that fails is retried on use, but not before a back-off (10 s doubling to 5 min) has passed, so that
a broken node is not hammered every reconcile. Readiness is lost at once; liveness only when the failure is one
that a fresh container fixes (the library is injected at container creation, so a library missing at start or
left behind by a driver upgrade, or a lost device grant) and has lasted longer than `restart_after_s`.
"""

from __future__ import annotations

from typing import Any

import structlog

from climatik.clock import Clock
from climatik.tune.backends.base import BackendHealth, BackendUnavailableError

# Errors meaning that the session (not one GPU) is gone: every handle is stale until nvmlShutdown + nvmlInit.
_SESSION_GONE = ("NVML_ERROR_UNINITIALIZED", "NVML_ERROR_DRIVER_NOT_LOADED", "NVML_ERROR_LIB_RM_VERSION_MISMATCH",
                 "NVML_ERROR_LIBRARY_NOT_FOUND", "NVML_ERROR_GPU_IS_LOST")
# Start failures that only a new container fixes: the runtime injects libnvidia-ml and grants the device nodes
# when the container is created, so neither a library that was missing nor one older than the reloaded driver,
# nor device nodes whose cgroup grant was lost (UNKNOWN, NO_PERMISSION), come back in a running container.
_RESTART_FIXES = ("NVML_ERROR_LIBRARY_NOT_FOUND", "NVML_ERROR_DRIVER_NOT_LOADED",
                  "NVML_ERROR_LIB_RM_VERSION_MISMATCH", "NVML_ERROR_UNKNOWN", "NVML_ERROR_NO_PERMISSION")


def nvml_text(value: object) -> str:
    """A string from nvidia-ml-py, which has returned bytes in some releases and str in others."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def error_code(error: BaseException) -> int | None:
    """The NVML return code an NVMLError carries."""
    code = getattr(error, "value", None)
    return code if isinstance(code, int) else None


class NvmlSession:
    """The pynvml module and whether NVML is initialised. `nvml` is the module (tests inject the zoo's fake)."""

    def __init__(self, *, nvml: Any | None, clock: Clock, retry_initial_s: float = 10.0, retry_max_s: float = 300.0,
                 restart_after_s: float = 300.0) -> None:
        self._module = nvml
        self._clock = clock
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._restart_after_s = restart_after_s
        self._open = False
        self._failure: str | None = None
        self._failure_code: int | None = None
        self._failing_since: float | None = None
        self._next_try: float | None = None
        self._delay_s = retry_initial_s
        self._log = structlog.get_logger(__name__).bind(backend="nvml")

    @property
    def is_open(self) -> bool:
        return self._open

    def lib(self) -> Any:
        """The pynvml module, imported on first use so that the tuner and its tests load without it."""
        if self._module is None:
            try:
                import pynvml  # noqa: PLC0415
            except ImportError as error:
                raise BackendUnavailableError(f"the NVML bindings (nvidia-ml-py) are not installed: {error}") from error
            self._module = pynvml
        return self._module

    def open(self) -> Any:
        """The module with NVML initialised; BackendUnavailableError while it cannot start (and during back-off)."""
        nvml = self.lib()
        if self._open:
            return nvml
        now = self._clock.now()
        if self._next_try is not None and now < self._next_try:
            # The same words on every try: the message ends up in status, which is written only when it changes.
            raise BackendUnavailableError(f"NVML cannot start: {self._failure}")
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as error:
            self._failed(error, now)
            raise BackendUnavailableError(f"NVML cannot start: {error}") from error
        if self._failure is not None:
            self._log.info("nvml_started", after=self._failure)
        self._open = True
        self._failure = self._failure_code = self._failing_since = self._next_try = None
        self._delay_s = self._retry_initial_s
        return nvml

    def gone(self, error: BaseException) -> bool:
        """Whether `error` means the whole session is gone (then every handle from it is stale)."""
        return error_code(error) in self._codes(_SESSION_GONE)

    def close(self, *, reason: str = "released") -> None:
        """nvmlShutdown if initialised; NVML lets go of the device nodes once its last session closes."""
        if not self._open:
            return
        nvml = self.lib()
        self._open = False
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError as error:
            self._log.warning("nvml_shutdown_failed", reason=reason, error=str(error))
        else:
            self._log.debug("nvml_closed", reason=reason)

    def health(self) -> BackendHealth:
        """Not ready while NVML cannot start; not live once a restart-fixable failure outlasts the grace."""
        if self._failure is None:
            return BackendHealth(True, True, "NVML ok")
        since = self._clock.now() - (self._failing_since or self._clock.now())
        message = f"NVML cannot start for {since:.0f} s: {self._failure}"
        restart = self._failure_code in self._codes(_RESTART_FIXES) and since >= self._restart_after_s
        if restart:
            message += "; a new container gets the driver's current library and device nodes"
        return BackendHealth(False, not restart, message)

    def _failed(self, error: BaseException, now: float) -> None:
        if self._failing_since is None:
            self._failing_since = now
            self._delay_s = self._retry_initial_s
        else:
            self._delay_s = min(self._delay_s * 2, self._retry_max_s)
        self._failure, self._failure_code = str(error), error_code(error)
        self._next_try = now + self._delay_s
        self._log.error("nvml_unavailable", error=self._failure, retry_in_s=self._delay_s)

    def _codes(self, names: tuple[str, ...]) -> set[int]:
        nvml = self.lib()
        return {getattr(nvml, name) for name in names if isinstance(getattr(nvml, name, None), int)}
