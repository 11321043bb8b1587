"""One line naming the machine a benchmark ran on, and how busy it was."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def describe() -> str:
    one, five, _ = os.getloadavg()
    return (
        f"{platform.platform()} | {cpu_model()} | {os.cpu_count()} cores | Python {platform.python_version()} "
        f"| load average {one:.1f} (1 min), {five:.1f} (5 min)"
    )
