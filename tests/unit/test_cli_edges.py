"""The command line at its edges: closed pipes, Ctrl-C, empty paths, configs that would
mislead, signals to a daemon that is not there (or not krsid), BCC's EPERM."""

from __future__ import annotations

import ctypes as ct
import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from krsid import cli, service
from krsid.catalog import load_catalog
from krsid.config import Config, parse_config
from krsid.errors import KrsidError
from tests.support.cli import ROOT, run_krsid

CATALOG = load_catalog(ROOT / "programs")
BTF = Path("/sys/kernel/btf/vmlinux")


def write_config(tmp_path: Path, body: str = "hooks:\n  file_mprotect: {}\n") -> Path:
    path = tmp_path / "krsid.yaml"
    path.write_text(f"state_dir: {tmp_path / 'state'}\ncache_dir: {tmp_path / 'cache'}\n{body}")
    return path


# -- stdout closed early, Ctrl-C --------------------------------------------------------------


def run_into_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """krsid with stdout a pipe whose reader has already gone: every write meets EPIPE
    (deterministic, unlike `| head -1`, where a short output may fit in the pipe)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "krsid", *args],
            cwd=ROOT,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)


CLOSED_PIPE_COMMANDS = [
    pytest.param(
        ["hooks", "--all"], cli.EXIT_PIPE_CLOSED, marks=pytest.mark.skipif(not BTF.exists(), reason="no kernel BTF")
    ),
    pytest.param(["docs"], cli.EXIT_PIPE_CLOSED),
    # argparse's own output: the write fails in parse_args (141) or its text waits in the
    # buffer until exit (0), depending on the Python version's argparse
    pytest.param(["--help"], None),
]


@pytest.mark.parametrize(("args", "status"), CLOSED_PIPE_COMMANDS)
def test_a_closed_stdout_ends_quietly(args: list[str], status: int | None) -> None:
    p = run_into_closed_pipe(*args)
    assert p.stderr == "", p.stderr  # no BrokenPipeError traceback, no "Exception ignored"
    assert p.returncode in ((0, cli.EXIT_PIPE_CLOSED) if status is None else (status,))


@pytest.mark.skipif(not BTF.exists(), reason="no kernel BTF")
def test_hooks_into_head_prints_one_line_and_no_traceback() -> None:
    p = subprocess.run(
        ["sh", "-c", f"'{sys.executable}' -m krsid hooks --all | head -1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert len(p.stdout.splitlines()) == 1 and "LSM hooks" in p.stdout


def test_ctrl_c_exits_130_not_0(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(_args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_hooks", interrupted)
    assert cli.main(["hooks"]) == 130 == cli.EXIT_INTERRUPTED


INTERRUPTIBLE = """\
import pathlib, signal, sys, time
from krsid import cli
# A background job may inherit SIGINT ignored; a terminal's Ctrl-C reaches a Python that has
# Python's own handler, which raises KeyboardInterrupt.
signal.signal(signal.SIGINT, signal.default_int_handler)
def busy(_args):
    pathlib.Path(sys.argv[1]).write_text("")
    time.sleep(60)
    return 0
cli.cmd_hooks = busy
sys.exit(cli.main(["hooks"]))
"""


def test_ctrl_c_in_a_real_process_exits_130(tmp_path: Path) -> None:
    """A real SIGINT while a command runs: exit status 130, no traceback."""
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTIBLE, str(ready)], cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and err == "", err


# -- -c "" --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["check", "--config-only"], ["run"], ["reload"], ["reopen"]])
def test_an_empty_config_path_is_a_usage_error(command: list[str]) -> None:
    p = run_krsid(*command, "-c", "")
    assert p.returncode == 2, p.stdout + p.stderr
    assert "--config/-c: empty path" in p.stderr and "Traceback" not in p.stderr
    assert "OK" not in p.stdout  # the default config was not validated instead


# -- configs that would mislead -------------------------------------------------------------


def test_every_hook_disabled_is_a_config_error_exit_2(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "hooks:\n  file_mprotect: {enabled: false}\n  bpf: {enabled: false}\n")
    p = run_krsid("check", "--config-only", "-c", str(cfg))
    assert p.returncode == 2, p.stdout + p.stderr
    assert "config error" in p.stderr and "every hook is disabled" in p.stderr


def prometheus_at(listen: str, enabled: bool = True) -> Config:
    sinks = f"sinks:\n  prometheus: {{enabled: {str(enabled).lower()}, listen: '{listen}'}}\n"
    text = "hooks:\n  file_mprotect: {}\n" + sinks
    return parse_config(text, "t.yaml", catalog=CATALOG)


@pytest.mark.parametrize(
    "listen", ["0.0.0.0:9477", "[::]:9477", "192.168.1.10:9477", "[2001:db8::1]:9", "[::ffff:10.0.0.1]:9477"]
)
def test_listening_beyond_loopback_warns_about_the_units_ip_firewall(listen: str) -> None:
    warning = cli.exposure_warning(prometheus_at(listen))
    assert warning is not None
    assert warning.startswith(f"sinks.prometheus.listen: {listen} is not a loopback address")
    assert "IPAddressDeny=any" in warning and "IPAddressAllow=localhost" in warning
    assert "remote scrapes are dropped" in warning
    assert "systemctl edit krsid" in warning and "[Service]\n    IPAddressAllow=<the scraper's address>" in warning


@pytest.mark.parametrize(
    "listen", ["127.0.0.1:9477", "127.0.0.2:1", "[::1]:9477", "localhost:9477", "[::ffff:127.0.0.1]:1"]
)
def test_loopback_listen_does_not_warn(listen: str) -> None:
    assert cli.exposure_warning(prometheus_at(listen)) is None


def test_disabled_prometheus_does_not_warn() -> None:
    assert cli.exposure_warning(prometheus_at("0.0.0.0:9477", enabled=False)) is None


def test_the_warning_describes_the_shipped_unit() -> None:
    """If the unit's IP firewall changes, the warning must change with it."""
    unit = (ROOT / "systemd" / "krsid.service").read_text().splitlines()
    assert "IPAddressDeny=any" in unit and "IPAddressAllow=localhost" in unit
    assert cli.UNIT_IP_FIREWALL == "IPAddressDeny=any with IPAddressAllow=localhost"


def test_check_logs_the_warning_once_and_still_accepts(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "hooks:\n  file_mprotect: {}\nsinks:\n  prometheus: {listen: '0.0.0.0:9477'}\n")
    p = run_krsid("check", "--config-only", "-c", str(cfg))
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stderr.count("krsid: WARNING: sinks.prometheus.listen: 0.0.0.0:9477 is not a loopback address") == 1
    assert "IPAddressAllow=<the scraper's address>" in p.stderr
    quiet = run_krsid("check", "--config-only", "-c", str(write_config(tmp_path)))
    assert quiet.returncode == 0 and "WARNING" not in quiet.stderr


# -- reload / reopen: only a running krsid gets the signal ---------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["/usr/bin/python3", "-m", "krsid", "run", "--config", "/etc/krsid/krsid.yaml"],
        ["/opt/krsid/bin/python3.11", "-u", "-X", "dev", "-m", "krsid", "-v", "run"],
        ["python3", "-mkrsid", "run"],
        ["/opt/krsid/bin/python3", "/opt/krsid/bin/krsid", "run", "--config", "/etc/krsid/krsid.yaml"],
        ["/usr/bin/python3", "-I", "/usr/bin/krsid", "--verbose", "run"],
        ["/usr/sbin/krsid", "run"],
    ],
)
def test_krsid_daemon_command_lines_are_recognised(argv: list[str]) -> None:
    assert service.is_krsid_daemon(argv)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["sleep", "60"],
        ["/usr/bin/python3", "-m", "krsid", "reload"],  # krsid, but not the daemon
        ["/usr/bin/python3", "-m", "krsid", "check", "run"],
        ["/usr/bin/python3", "-m", "pytest", "krsid", "run"],
        ["/usr/bin/python3", "-c", "krsid", "run"],
        ["/usr/bin/python3", "/opt/other/bin/krsid-helper", "run"],
        ["/usr/bin/perl", "/usr/bin/krsid", "run"],
        ["/usr/bin/python3", "-m"],
    ],
)
def test_other_command_lines_are_not_krsid(argv: list[str]) -> None:
    assert not service.is_krsid_daemon(argv)


FAKE_DAEMON = """\
import os, pathlib, signal, sys, time
log = pathlib.Path(sys.argv[-1])
def note(signum, _frame):
    with log.open("a") as f:
        f.write(signal.Signals(signum).name + "\\n")
for name in os.environ.get("FAKE_KRSID_CATCHES", "SIGHUP SIGUSR1").split():
    signal.signal(signal.Signals[name], note)
log.with_suffix(".ready").write_text("")
while True:
    time.sleep(0.05)
"""


@pytest.fixture
def catches() -> str:
    return "SIGHUP SIGUSR1"


@pytest.fixture
def fake_daemon(tmp_path: Path, catches: str) -> Iterator[tuple[Path, Path]]:
    """A process whose command line is `python .../krsid run ...` (what the entry point
    looks like in /proc), its pid in the config's state_dir/krsid.pid. Yields (config,
    the file it writes each signal's name to)."""
    script = tmp_path / "bin" / "krsid"
    script.parent.mkdir()
    script.write_text(FAKE_DAEMON)
    got = tmp_path / "signals.txt"
    cfg = write_config(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, str(script), "run", "--config", str(cfg), str(got)],
        env={**os.environ, "FAKE_KRSID_CATCHES": catches},
    )
    try:
        deadline = time.monotonic() + 30
        while not got.with_suffix(".ready").exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        (tmp_path / "state").mkdir()
        (tmp_path / "state" / "krsid.pid").write_text(f"{proc.pid}\n")
        yield cfg, got
    finally:
        proc.kill()
        proc.wait()


def wait_for_signals(got: Path, n: int) -> list[str]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = got.read_text().split() if got.exists() else []
        if len(lines) >= n:
            return lines
        time.sleep(0.05)
    return got.read_text().split() if got.exists() else []


def test_reload_and_reopen_signal_a_running_krsid(fake_daemon: tuple[Path, Path]) -> None:
    cfg, got = fake_daemon
    p = run_krsid("reload", "-c", str(cfg))
    assert p.returncode == 0 and "to reload" in p.stdout, p.stdout + p.stderr
    assert wait_for_signals(got, 1) == ["SIGHUP"]
    p = run_krsid("reopen", "-c", str(cfg))
    assert p.returncode == 0 and "reopen its JSON lines file" in p.stdout, p.stdout + p.stderr
    assert wait_for_signals(got, 2) == ["SIGHUP", "SIGUSR1"]


@pytest.mark.parametrize("catches", ["SIGHUP"])
def test_a_krsid_without_a_handler_for_the_signal_is_not_sent_it(fake_daemon: tuple[Path, Path]) -> None:
    """A krsid that cannot handle SIGUSR1 (still starting, or older than `reopen`) would end."""
    cfg, got = fake_daemon
    pid = int((cfg.parent / "state" / "krsid.pid").read_text())
    p = run_krsid("reopen", "-c", str(cfg))
    assert p.returncode == 1 and f"refusing to send SIGUSR1 to krsid (pid {pid})" in p.stderr, p.stderr
    assert Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert run_krsid("reload", "-c", str(cfg)).returncode == 0 and wait_for_signals(got, 1) == ["SIGHUP"]


@pytest.mark.parametrize("command", ["reload", "reopen"])
def test_a_foreign_pid_is_refused_and_left_alone(tmp_path: Path, command: str) -> None:
    cfg = write_config(tmp_path)
    (tmp_path / "state").mkdir()
    other = subprocess.Popen(["sleep", "60"])  # SIGHUP or SIGUSR1 would end it
    try:
        (tmp_path / "state" / "krsid.pid").write_text(f"{other.pid}\n")
        p = run_krsid(command, "-c", str(cfg))
        assert p.returncode == 1, p.stdout + p.stderr
        assert f"refusing to signal pid {other.pid}" in p.stderr and "not a running krsid daemon" in p.stderr
        assert "sleep 60" in p.stderr and "Traceback" not in p.stderr
        time.sleep(0.2)
        assert other.poll() is None, "the foreign process got the signal"
    finally:
        other.kill()
        other.wait()


def test_a_stale_pid_is_refused(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    (tmp_path / "state").mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()
    (tmp_path / "state" / "krsid.pid").write_text(f"{gone.pid}\n")
    p = run_krsid("reload", "-c", str(cfg))
    assert p.returncode == 1 and f"names pid {gone.pid}, which is not running" in p.stderr, p.stderr


@pytest.mark.parametrize(
    ("content", "message"), [(None, "does not exist"), ("", "does not hold"), ("-4\n", "does not hold")]
)
def test_a_missing_or_garbled_pid_file_is_a_clean_error(tmp_path: Path, content: str | None, message: str) -> None:
    cfg = write_config(tmp_path)
    (tmp_path / "state").mkdir()
    if content is not None:
        (tmp_path / "state" / "krsid.pid").write_text(content)
    p = run_krsid("reopen", "-c", str(cfg))
    assert p.returncode == 1 and message in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_signal_daemon_refuses_this_very_python_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "krsid.pid"
    pid_file.write_text(f"{os.getpid()}\n")  # a python, but pytest, not `krsid run`
    with pytest.raises(KrsidError, match="not a running krsid daemon"):
        service.signal_daemon(pid_file, signal.SIGHUP)


# -- BCC's EPERM points at `krsid doctor` ---------------------------------------------------


class RefusingBpf:
    """attach_lsm as bcc fails it: load_func's EPERM text, or attach with errno set."""

    def __init__(self, error: str, errno_value: int = 0) -> None:
        self.error, self.errno_value = error, errno_value

    def attach_lsm(self, fn_name: bytes) -> None:
        ct.set_errno(self.errno_value)
        raise Exception(self.error)  # bcc raises plain Exceptions


@pytest.mark.parametrize(
    ("error", "errno_value", "expected"),
    [
        ("Need super-user privileges to run", errno.EPERM, "refused to load the BPF-LSM program (EPERM)"),
        ("Failed to attach LSM", errno.EPERM, "refused to attach the BPF-LSM program (EPERM)"),
    ],
)
def test_eperm_from_bcc_points_at_doctor(error: str, errno_value: int, expected: str) -> None:
    load = pytest.importorskip("krsid.pipeline.load")
    programs = load.LoadedPrograms(CATALOG, [CATALOG["file_mprotect"]], settings=None, log=lambda _m: None)
    programs._bpf = RefusingBpf(error, errno_value)
    status = programs.attach()["file_mprotect"]
    assert not status.attached
    first = status.error.splitlines()[0]
    assert expected in first and "run `krsid doctor` to see why" in first and error in first


def test_other_load_errors_keep_bccs_text() -> None:
    load = pytest.importorskip("krsid.pipeline.load")
    programs = load.LoadedPrograms(CATALOG, [CATALOG["file_mprotect"]], settings=None, log=lambda _m: None)
    programs._bpf = RefusingBpf("Failed to load BPF program b'lsm__file_mprotect': Invalid argument", errno.EINVAL)
    error = programs.attach()["file_mprotect"].error
    assert error.startswith("Failed to load BPF program") and "doctor" not in error


@pytest.mark.bcc
def test_check_on_a_kernel_that_refuses_points_at_doctor(tmp_path: Path) -> None:
    """The real thing where the kernel refuses BPF-LSM (this host kind): BCC's EPERM."""
    pytest.importorskip("bcc")
    if os.geteuid() != 0 or not BTF.exists():
        pytest.skip("compiling needs root and kernel BTF")
    p = run_krsid("check", "-c", str(write_config(tmp_path)), timeout=300)
    if p.returncode == 0:
        pytest.skip("this kernel loads BPF-LSM programs")
    if "Need super-user privileges" not in p.stdout:
        pytest.skip(f"the kernel refused with something else than EPERM: {p.stdout[-300:]}")
    row = next(line for line in p.stdout.splitlines() if line.startswith("file_mprotect"))
    assert "FAILED" in row and "(EPERM): run `krsid doctor` to see why" in row, p.stdout


class _StoppedBy:
    """A Daemon stand-in whose run() ends the way a signal ends the real one."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.stop_signal = 0
        self.stopped = False

    def __call__(self, config: object) -> _StoppedBy:
        return self

    def start(self) -> None:
        pass

    def run(self) -> None:
        self.stop_signal = self.signum  # what Daemon.request_stop records

    def stop(self) -> None:
        self.stopped = True


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_run_ended_by_ctrl_c_exits_130_and_by_sigterm_0(
    signum: int, status: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import krsid.daemon

    fake = _StoppedBy(signum)
    monkeypatch.setattr(krsid.daemon, "Daemon", fake)
    assert cli.main(["run", "-c", str(ROOT / "etc" / "krsid.yaml")]) == status
    assert fake.stopped
