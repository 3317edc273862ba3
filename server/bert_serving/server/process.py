"""Helpers that keep child processes from outliving the server."""
import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1
_parent_pid = None


def die_with_parent():
    """Make the kernel send SIGKILL to this process when its parent dies (Linux only).

    Also records the parent's pid for `parent_is_alive`, which covers other platforms and
    the short window before the prctl call.
    """
    global _parent_pid
    _parent_pid = os.getppid()
    if sys.platform.startswith('linux'):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass


def parent_is_alive():
    return _parent_pid is None or os.getppid() == _parent_pid
