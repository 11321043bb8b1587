"""Run code in a fresh Python interpreter from a test: what a second process, a clean environment or an executor
sees. One home for the run-check-parse steps the tests repeat."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def python_stdout(args: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 120) -> str:
    """The standard output of `python *args`; the test fails with the end of its stderr if the process fails.
    Bounded by `timeout` seconds, like every wait in the tests."""
    done = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def last_json_line(stdout: str) -> Any:
    """The JSON the process printed last (libraries may print before it)."""
    return json.loads(stdout.strip().splitlines()[-1])
