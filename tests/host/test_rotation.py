"""JSON lines file rotation under load (raw-tracepoint load generator, host kernel).

The real daemon writes a stream of numbered events to a file; mid-stream the file is
rotated: renamed, then SIGUSR1 (logrotate's postrotate), or renamed with no signal
at all (krsid's once-a-second inode check), or by logrotate itself with the shipped
etc/logrotate/krsid. The books must balance across both files: every seq the
kernel produced is in exactly one file or counted lost, no line is torn, and the
old file holds only seqs before the new file's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from krsid.sinks import jsonl
from tests.support import loadgen
from tests.support.records import PROGRAMS

LOGROTATE_CONFIG = PROGRAMS.parent / "etc" / "logrotate" / "krsid"

pytestmark = pytest.mark.skipif(loadgen.environ_ok() is not None, reason=str(loadgen.environ_ok()))

RATE = 20000  # events/s offered: well within what the daemon takes on the host
SECONDS = 2.5  # the driver's run; the rotation comes ROTATE_AT seconds in
ROTATE_AT = 0.6


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return loadgen.build_driver(tmp_path_factory.mktemp("loadgen"))


@dataclass
class Files:
    """What each file of a rotated output holds, read after the daemon stopped."""

    paths: list[Path]
    seqs: dict[Path, list[int]] = field(default_factory=dict)

    def read(self) -> list[int]:
        out: list[int] = []
        for path in self.paths:
            data = path.read_bytes() if path.exists() else b""
            assert not data or data.endswith(b"\n"), f"{path} ends with a torn line"
            self.seqs[path] = [json.loads(line)["seq"] for line in data.splitlines()]  # a torn line fails here
            out += self.seqs[path]
        return out


def rotate_under_load(
    tmp_path: Path, driver: Path, rotate: Callable[[Path, Path], object]
) -> tuple[loadgen.LoadResult, list[int], list[int]]:
    """Run the load, rotate `events.jsonl` to `events.jsonl.1` mid-stream; return the
    books and the seqs (relative to the run) in the old and the new file."""
    live, rotated = tmp_path / "events.jsonl", tmp_path / "events.jsonl.1"
    files = Files([rotated, live])

    def during(_daemon: loadgen.LoadgenDaemon) -> None:
        time.sleep(ROTATE_AT)
        rotate(live, rotated)

    r = loadgen.run_load(
        tmp_path, driver, events_per_s=RATE, seconds=SECONDS, jsonl_path=live, during=during, read_jsonl=files.read
    )
    old, new = files.seqs[rotated], files.seqs[live]
    print(
        f"produced {r.produced}, in {rotated.name} {len(old)}, in {live.name} {len(new)}, "
        f"lost {dict(+r.lost)}, duplicates {r.duplicates['jsonl']}"
    )
    return r, old, new


def assert_balanced_across_both(r: loadgen.LoadResult, old: list[int], new: list[int]) -> None:
    assert r.produced > 0 and old and new, f"the rotation did not split the stream: {len(old)} / {len(new)}"
    assert r.balanced("jsonl"), r  # every seq once, in one of the files, or counted lost
    assert len(set(old) & set(new)) == 0
    assert max(old) < min(new), "a line written after the reopen went to the old file"
    assert len(old) + len(new) == r.delivered["jsonl"]


def test_rename_then_sigusr1_splits_the_stream_exactly(
    tmp_path: Path, driver: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The signal alone must do it: the inode check is switched off for this run.
    monkeypatch.setattr(jsonl, "ROTATION_CHECK_INTERVAL", 1e9)

    def rename_and_signal(live: Path, rotated: Path) -> None:
        live.rename(rotated)
        time.sleep(0.2)  # lines keep going to the renamed file until the signal
        os.kill(os.getpid(), signal.SIGUSR1)

    r, old, new = rotate_under_load(tmp_path, driver, rename_and_signal)
    assert_balanced_across_both(r, old, new)


def test_rename_without_signal_is_noticed_by_the_inode_check(tmp_path: Path, driver: Path) -> None:
    r, old, new = rotate_under_load(tmp_path, driver, lambda live, rotated: live.rename(rotated))
    assert_balanced_across_both(r, old, new)


def test_a_failed_reopen_is_counted_and_retried_under_load(tmp_path: Path, driver: Path) -> None:
    """The path cannot be opened for a while (a directory is in its way): lines keep
    going to the renamed file, the failure is logged, and the retry a second later
    opens the new file; nothing lost, nothing twice."""

    def rename_block_then_free(live: Path, rotated: Path) -> None:
        live.rename(rotated)
        live.mkdir()
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.5)
        live.rmdir()

    r, old, new = rotate_under_load(tmp_path, driver, rename_block_then_free)
    assert_balanced_across_both(r, old, new)
    assert any("cannot reopen" in line for line in r.logs), r.logs


@pytest.mark.skipif(not shutil.which("logrotate"), reason="logrotate not installed")
def test_the_shipped_logrotate_config_rotates_a_live_file(tmp_path: Path, driver: Path) -> None:
    """etc/logrotate/krsid run by logrotate itself (-f: now), on this test's file, with
    its postrotate signalling this process instead of krsid.service."""
    shipped = LOGROTATE_CONFIG.read_text()
    postrotate = "systemctl kill --kill-whom=main --signal=SIGUSR1 krsid.service"
    assert "/var/log/krsid/*.jsonl {" in shipped and postrotate in shipped
    config = tmp_path / "logrotate.conf"
    config.write_text(
        shipped.replace("/var/log/krsid/*.jsonl", str(tmp_path / "*.jsonl")).replace(
            postrotate, f"kill -USR1 {os.getpid()}"
        )
    )
    outputs: list[str] = []

    def run_logrotate(live: Path, rotated: Path) -> None:
        p = subprocess.run(
            ["logrotate", "-f", "-v", "-s", str(tmp_path / "logrotate.state"), str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        outputs.append(f"rc={p.returncode}\n{p.stdout}{p.stderr}")

    r, old, new = rotate_under_load(tmp_path, driver, run_logrotate)
    assert outputs and outputs[0].startswith("rc=0"), outputs
    assert_balanced_across_both(r, old, new)
    live = tmp_path / "events.jsonl"
    assert oct(live.stat().st_mode & 0o777) == "0o600"  # logrotate's `create 0600`: the file krsid reopened


@pytest.mark.skipif(not shutil.which("logrotate"), reason="logrotate not installed")
def test_logrotate_accepts_the_shipped_config(tmp_path: Path) -> None:
    p = subprocess.run(
        ["logrotate", "-d", "-s", str(tmp_path / "state"), str(LOGROTATE_CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "error" not in out.lower(), out
    assert "rotating pattern: /var/log/krsid/*.jsonl" in out and "(14 rotations)" in out, out
    # The check can fail: a config logrotate cannot parse is an error.
    broken = tmp_path / "broken"
    broken.write_text(LOGROTATE_CONFIG.read_text().replace("notifempty", "notifempty\n    rotate_daily_typo"))
    p = subprocess.run(["logrotate", "-d", "-s", str(tmp_path / "state"), str(broken)], capture_output=True, text=True)
    assert p.returncode != 0 or "error" in (p.stdout + p.stderr).lower()
