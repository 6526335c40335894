"""Operations in the VM: journald restarts, kill -9 fail-open, a real Prometheus scraping krsid."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.support.journald import Journal
from tests.support.net import free_port
from tests.vm.conftest import ROOT, RunningDaemon

pytestmark = pytest.mark.vm


def run_unique_true(tmp_path: Path) -> Path:
    exe = tmp_path / f"krsid-ops-{uuid.uuid4().hex[:12]}"
    shutil.copy2("/bin/true", exe)
    subprocess.run([str(exe)], check=True)
    return exe


def lost(daemon: RunningDaemon, stage: str) -> float:
    for line in daemon.scrape().splitlines():
        if line.startswith("krsid_events_lost_total{") and f'stage="{stage}"' in line and "bprm_check_security" in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_journald_restart_mid_stream(
    daemon: RunningDaemon, journal: Journal, tmp_path: Path, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled("bprm_check_security")
    lost_before = lost(daemon, "sink_journald")
    journal.stop()
    try:
        down = run_unique_true(tmp_path)
        assert daemon.wait_events(lambda o: o.get("filename") == str(down)), "JSON lines must not stop"
        deadline = time.monotonic() + 30
        while lost(daemon, "sink_journald") < lost_before + 1:
            assert time.monotonic() < deadline, "the journald loss was not counted"
            time.sleep(0.3)
    finally:
        journal.restart()
    time.sleep(1.5)  # the sink looks for the socket again at most once a second
    up = run_unique_true(tmp_path)
    assert journal.wait_for(lambda e: True, f"KRSID_FILENAME={up}"), "delivery to journald did not resume"
    assert daemon.proc.poll() is None
    assert "no journald socket" in daemon.log.read_text() or "journald:" in daemon.log.read_text()


def lsm_programs() -> dict[int, str]:
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True)
    return {p["id"]: p.get("name", "") for p in json.loads(out.stdout) if p.get("type") == "lsm"}


def test_kill_9_leaves_nothing_attached(daemon: RunningDaemon, tmp_path: Path) -> None:
    """Fail-open: the programs live only as long as the daemon's file descriptors."""
    before = lsm_programs()
    cfg = tmp_path / "k.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "cache_dir": str(tmp_path / "cache"),
                "state_dir": str(tmp_path / "state"),
                "headers": daemon.headers,
                "hooks": {"file_mprotect": {}},
                "sinks": {
                    "journald": {"enabled": False},
                    "prometheus": {"enabled": False},
                    "jsonl": {"path": str(tmp_path / "e.jsonl")},
                },
            }
        )
    )
    notify_path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(600)
        proc = subprocess.Popen(
            [sys.executable, "-m", "krsid", "run", "--config", str(cfg)],
            cwd=ROOT,
            env=dict(os.environ, NOTIFY_SOCKET=str(notify_path)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert b"READY=1" in notify.recv(4096)
            mine = set(lsm_programs()) - set(before)
            assert mine, "the second daemon's program should be loaded"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
    deadline = time.monotonic() + 20
    while set(lsm_programs()) & mine:
        assert time.monotonic() < deadline, f"still loaded after kill -9: {mine}"
        time.sleep(0.2)
    assert set(before) <= set(lsm_programs()), "the session daemon's programs must be untouched"


@pytest.mark.skipif(not shutil.which("prometheus"), reason="prometheus not installed (Debian package prometheus)")
def test_real_prometheus_scrapes_krsid(
    daemon: RunningDaemon, tmp_path: Path, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled("bprm_check_security")
    run_unique_true(tmp_path)
    target = daemon.metrics_url.split("//")[1].split("/")[0]
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s"},
                "scrape_configs": [{"job_name": "krsid", "static_configs": [{"targets": [target]}]}],
            }
        )
    )
    prom = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        query = urllib.parse.quote('krsid_events_total{job="krsid",hook="bprm_check_security"}')
        deadline = time.monotonic() + 120
        result: list[dict[str, object]] = []
        while not result:
            assert time.monotonic() < deadline, "Prometheus never returned krsid_events_total"
            time.sleep(1)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?query={query}", timeout=5) as r:
                    result = json.loads(r.read())["data"]["result"]
            except OSError:
                continue
        assert float(result[0]["value"][1]) >= 1  # type: ignore[index]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?query=up", timeout=5) as r:
            up = json.loads(r.read())["data"]["result"]
        assert up and up[0]["value"][1] == "1"
    finally:
        prom.terminate()
        prom.wait(30)
