"""The fleet path: krsid -> journald -> systemd-journal-upload -> systemd-journal-remote.

On loopback: KRSID_* fields (hostile values included) arrive whole on the receiving
side and can be queried there like locally.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from krsid.pipeline.decode import EventDecoder
from krsid.sinks.journald import JournaldSink
from tests.support.journald import Journal, private_journald, unavailable_reason
from tests.support.net import free_port
from tests.support.records import catalog, pack

REMOTE = Path("/lib/systemd/systemd-journal-remote")
UPLOAD = Path("/lib/systemd/systemd-journal-upload")
CAT = catalog()
EXEC = CAT["bprm_check_security"]


@pytest.fixture(scope="module")
def journal() -> Iterator[Journal]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    if not (REMOTE.exists() and UPLOAD.exists()):
        pytest.skip("systemd-journal-remote not installed (Debian package systemd-journal-remote)")
    with private_journald() as j:
        yield j


def test_events_reach_a_remote_journal(journal: Journal, tmp_path: Path) -> None:
    sink = JournaldSink()
    decoder = EventDecoder({0: EXEC}, boot_to_epoch=0.0)
    names = [b"/usr/bin/fleet-%d" % i for i in range(5)] + [b"/tmp/evil\nKRSID_HOOK=fake\xff"]
    for i, name in enumerate(names):
        sink.emit(
            decoder.decode(
                pack(EXEC, 0, seq=7000 + i, pid=77, tgid=77, comm="fleet", filename=name, interp=name, path=name)
            )
        )
    assert not sink.flush() and not sink.pending()
    assert len(journal.wait_for(lambda e: True, "KRSID_COMM=fleet")) == len(names)

    port = free_port()
    out = tmp_path / "remote.journal"
    remote = subprocess.Popen(
        [str(REMOTE), f"--listen-http=127.0.0.1:{port}", f"--output={out}", "--split-mode=none", "--compress=no"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while True:  # wait until it listens
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline and remote.poll() is None, remote.stdout.read() if remote.stdout else ""
            time.sleep(0.05)
        up = subprocess.run(
            [
                str(UPLOAD),
                f"--url=http://127.0.0.1:{port}",
                "--directory=/run/log/journal",
                "--follow=no",
                f"--save-state={tmp_path / 'state'}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert up.returncode == 0, up.stdout + up.stderr
    finally:
        remote.terminate()
        remote.wait(10)

    got = subprocess.run(
        ["journalctl", f"--file={out}", "-o", "json", "--all", "KRSID_COMM=fleet"],
        capture_output=True,
        text=True,
        check=True,
    )
    entries = [json.loads(line) for line in got.stdout.splitlines() if line.strip()]
    assert sorted(int(e["KRSID_SEQ"]) for e in entries) == list(range(7000, 7000 + len(names)))
    hostile = next(e for e in entries if e["KRSID_SEQ"] == str(7000 + len(names) - 1))
    assert bytes(hostile["KRSID_FILENAME"]) == names[-1]  # byte array in JSON: not valid UTF-8
    assert hostile["KRSID_HOOK"] == "bprm_check_security"
    assert all(e["MESSAGE_ID"] == EXEC.message_id and e["SYSLOG_IDENTIFIER"] == "krsid" for e in entries)
    # The receiving side answers the same queries as the host.
    one = subprocess.run(
        ["journalctl", f"--file={out}", "-o", "json", "KRSID_FILENAME=/usr/bin/fleet-3"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(one.stdout)["KRSID_SEQ"] == "7003"
