"""Peak memory: the most resident memory (RSS) a process held while a stage ran.

Linux keeps a process's high-water mark of resident memory (``VmHWM`` in
``/proc/self/status``) and resets it to the current RSS when ``5`` is written to
``/proc/self/clear_refs``. ``PeakMemory.start`` resets it, so ``peak`` is the stage's
own peak (scope ``stage``). Where the reset is not allowed (another kernel, a sandbox
without ``clear_refs``), the peak is the process's since it started (scope
``process``), which is still an upper bound users can size machines from. Stages
that run at once in one process (embedded mode's bus delivering in parallel) share one
high-water mark.
"""

from __future__ import annotations

import dataclasses
import resource
import sys
from pathlib import Path
from typing import Any

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclasses.dataclass(frozen=True)
class PeakMemory:
    scope: str  # "stage": since ``start``; "process": since the process started

    @classmethod
    def start(cls) -> PeakMemory:
        try:
            _CLEAR_REFS.write_text("5")
        except OSError:
            return cls("process")
        return cls("stage" if _high_water_kb() is not None else "process")

    def peak_bytes(self) -> int:
        """The peak so far, in bytes."""
        return process_peak_bytes()

    def report(self) -> dict[str, Any]:
        """What a stage record keeps: the peak and what it covers."""
        return {"peak_rss_bytes": self.peak_bytes(), "scope": self.scope}


def process_peak_bytes() -> int:
    """This process's peak resident memory: ``VmHWM``, the high-water mark of its own
    address space (since its exec, or since ``PeakMemory.start`` reset it). Not
    ``ru_maxrss`` where ``VmHWM`` can be read: Linux carries the spawning process's peak
    into it across the exec, so a process started by one that had read a large file
    reports that file whatever it used itself."""
    kb = _high_water_kb()
    if kb is not None:
        return kb * 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS


def _high_water_kb() -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None
