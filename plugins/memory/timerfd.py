"""A Linux timerfd, armed at an absolute time on the event loop's clock to the nanosecond (through ctypes):
the wake-up source of ``chaos.TimerQueue``. Apart from ``chaos`` because that module is compiled
(pyproject's ``[tool.cloudprov] compiled``) and mypyc does not compile ctypes structures.

``TimerFd.open()`` gives None where there is no timerfd (not Linux, a loop clock other than
``CLOCK_MONOTONIC``, out of file descriptors): the caller falls back to an event-loop timer.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import sys
import time


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_CLOCK_MONOTONIC = time.CLOCK_MONOTONIC if hasattr(time, "CLOCK_MONOTONIC") else 1  # the loop's clock
_TFD_NONBLOCK, _TFD_CLOEXEC, _TFD_TIMER_ABSTIME = os.O_NONBLOCK, os.O_CLOEXEC, 1


def _load_libc() -> ctypes.CDLL | None:
    """The C library, if it offers timerfds (Linux) and the loop's clock is ``CLOCK_MONOTONIC``."""
    if not sys.platform.startswith("linux") or time.get_clock_info("monotonic").implementation != (
        "clock_gettime(CLOCK_MONOTONIC)"
    ):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _load_libc()


class TimerFd:
    """One non-blocking timerfd: ``arm`` it for a time, watch ``fd`` for reading, ``clear`` it when it fired."""

    __slots__ = ("_libc", "_spec", "fd")

    def __init__(self, libc: ctypes.CDLL, fd: int) -> None:
        self._libc = libc
        self._spec = _Itimerspec()  # reused for every arming
        self.fd = fd

    @classmethod
    def open(cls) -> TimerFd | None:
        if _LIBC is None:
            return None
        fd = _LIBC.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        return None if fd < 0 else cls(_LIBC, fd)

    def arm(self, when: float) -> None:
        """Fire at ``when`` (the loop's clock, seconds), never before it."""
        seconds = int(when)
        nanoseconds = math.ceil((when - seconds) * 1e9)  # up: the fd never fires before ``when``
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = (seconds + 1, 0) if nanoseconds >= 1_000_000_000 else (seconds, nanoseconds)
        if self._libc.timerfd_settime(self.fd, _TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def clear(self) -> None:
        """Read the expiry count, which quiets the fd until it is armed again (nothing to read: it fired,
        then was armed again before the loop got to it)."""
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def available() -> bool:
    """Whether this system has timerfds on the loop's clock."""
    return _LIBC is not None
