"""The suite's own tmp_path base (tests/conftest.py): a run leaves nothing in TMPDIR."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

A_TEST_WRITING_TO_TMP_PATH = """
import os

def test_writes(tmp_path):
    assert tmp_path.parent.name.startswith("krsid-pytest-")
    assert str(tmp_path).startswith(os.environ["TMPDIR"])
    (tmp_path / "left-behind").write_text("x")
"""


def run_a_test_writing_to_tmp_path(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """pytest on a test that writes a file into its tmp_path, with TMPDIR a fresh
    directory (returned): tests/conftest.py loaded as a plugin, as for the suite."""
    test_file = tmp_path / "src" / "test_writes.py"
    test_file.parent.mkdir()
    test_file.write_text(A_TEST_WRITING_TO_TMP_PATH)
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest", str(test_file)],
        cwd=ROOT,
        env=dict(os.environ, TMPDIR=str(tmpdir), **env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done, tmpdir


def test_a_run_removes_its_tmp_path_base(tmp_path: Path) -> None:
    done, tmpdir = run_a_test_writing_to_tmp_path(tmp_path)
    assert "1 passed" in done.stdout
    assert list(tmpdir.iterdir()) == []


def test_krsid_keep_test_tmp_keeps_it_and_says_where(tmp_path: Path) -> None:
    done, tmpdir = run_a_test_writing_to_tmp_path(tmp_path, KRSID_KEEP_TEST_TMP="1")
    (base,) = tmpdir.iterdir()
    assert f"tmp_path base kept (KRSID_KEEP_TEST_TMP): {base}" in done.stdout
    assert list(base.rglob("left-behind"))
