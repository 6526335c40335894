"""Run krsid's command line the way a user does, from this checkout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_krsid(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m krsid ARGS` in the checkout; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "krsid", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
