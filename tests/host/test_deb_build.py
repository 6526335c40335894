"""The Debian package (`make deb`) and what `make install` puts on a machine.

`make deb` is built once per module into a temp DEB_DIR and inspected with dpkg-deb
and lintian: Depends are Debian packages only, every file is where krsid and systemd
look for it and is the checkout's own, lintian reports no error. tests/vm/
test_deb_package.py installs the package under real systemd and purges it.

`make install` is the source install: its package set is .ci/install-deps' runtime
set, which must hold nothing of the test tooling (qemu, auditd, a Prometheus server,
systemd-nspawn, journal-remote, the packaging tools).
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import krsid
from tests.support.net import free_port
from tests.support.records import PROGRAMS

ROOT = PROGRAMS.parent
INSTALL_DEPS = ROOT / ".ci" / "install-deps"
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# Test and development tooling: none of it belongs on a production host.
TEST_TOOLING = {
    "qemu-system-x86",
    "auditd",
    "prometheus",
    "systemd-container",
    "systemd-journal-remote",
    "busybox-static",
    "debhelper",
    "dh-python",
    "lintian",
}
DEB_DEPENDS = {"python3-bpfcc", "python3-systemd", "python3-yaml", "python3-prometheus-client", "bpftool"}
BUILD_TOOLS = ("dpkg-buildpackage", "dh", "lintian", "dpkg-deb")


def install_deps_set(*flags: str) -> list[str]:
    """The Debian packages of one .ci/install-deps set (its --print mode installs nothing)."""
    p = subprocess.run([str(INSTALL_DEPS), *flags, "--print"], capture_output=True, text=True, timeout=30, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout.split()


def depends_names(field: str) -> set[str]:
    """Package names of a Depends field ("a (>= 1), b:any | c" -> {a, b, c})."""
    names = set()
    for alternative in re.split(r"[,|]", field):
        name = alternative.strip().split(" ")[0].split(":")[0]
        if name:
            names.add(name)
    return names


# --- make install: runtime packages only ---------------------------------------------


def test_runtime_set_has_no_test_tooling_and_covers_the_package_depends() -> None:
    runtime = set(install_deps_set("--runtime"))
    everything = set(install_deps_set())
    # The print mode lists what the default (make test, make run) installs: the tooling is there.
    assert everything >= TEST_TOOLING, TEST_TOOLING - everything
    assert runtime <= everything
    assert not runtime & TEST_TOOLING, runtime & TEST_TOOLING
    # Whatever the .deb needs, a source install needs too (and gets from Debian).
    control = (ROOT / "debian" / "control").read_text()
    binary = control.split("\nPackage: krsid\n", 1)[1]
    depends = re.search(r"^Depends:(.*(?:\n[ \t].*)*)", binary, re.M)
    assert depends, binary
    declared = {n for n in depends_names(re.sub(r"^\s*#.*$", "", depends.group(1), flags=re.M)) if "$" not in n}
    assert declared == DEB_DEPENDS, declared
    assert declared <= runtime, declared - runtime
    assert "python3-venv" in runtime  # make install builds /opt/krsid with it


def make_dry_run(*args: str) -> list[str]:
    p = subprocess.run(
        ["make", "--no-print-directory", "-n", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout.splitlines()


def test_make_install_runs_only_the_runtime_install_deps() -> None:
    """What `make install` would run (make -n): .ci/install-deps --runtime, and nothing
    of the development setup (the full install-deps, the .venv with the test extras)."""
    if not shutil.which("make"):
        pytest.skip("make not installed")
    commands = make_dry_run("install")
    calls = [line for line in commands if "install-deps" in line]
    assert calls, "make install no longer installs its runtime packages:\n" + "\n".join(commands)
    for line in calls:
        flags = re.findall(r"install-deps((?:\s+--[a-z-]+)*)", line)
        assert flags and all("--runtime" in f.split() for f in flags), line
    dev = [
        line
        for line in commands
        if ".venv" in line or "[test]" in line or "pip install -q --disable-pip-version-check -e" in line
    ]
    assert not dev, dev
    # And that set, as install-deps would install it, has none of the tooling.
    runtime = set(install_deps_set("--runtime"))
    assert not runtime & TEST_TOOLING


def test_staged_unit_runs_the_venv_and_the_package_unit_runs_usr_bin(tmp_path: Path) -> None:
    """One unit file, two installs: the .deb ships ExecStart=/usr/bin/krsid, make install
    rewrites it to its venv (PREFIX_VENV)."""
    if not shutil.which("make"):
        pytest.skip("make not installed")
    shipped = (ROOT / "systemd" / "krsid.service").read_text()
    assert re.search(r"^ExecStart=/usr/bin/krsid run --config /etc/krsid/krsid.yaml$", shipped, re.M), shipped
    dest = tmp_path / "root"
    p = subprocess.run(
        ["make", "-s", "install", f"DESTDIR={dest}", "INSTALL_VENV=no", "PREFIX_VENV=/srv/krsid-venv"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    staged = (dest / "etc/systemd/system/krsid.service").read_text()
    assert re.findall(r"^ExecStart=.*$", staged, re.M) == [
        "ExecStart=/srv/krsid-venv/bin/krsid run --config /etc/krsid/krsid.yaml"
    ]
    # Nothing else of the unit differs.
    assert staged.replace("/srv/krsid-venv/bin/krsid", "/usr/bin/krsid") == shipped


# --- make deb ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make deb` into a DEB_DIR of this module; the path of the .deb."""
    missing = [t for t in BUILD_TOOLS if not shutil.which(t, path=SYSTEM_PATH)]
    if missing:
        pytest.skip(f"missing {', '.join(missing)}: .ci/install-deps --packaging (as root) installs them")
    out = tmp_path_factory.mktemp("deb")
    p = subprocess.run(
        ["make", "-s", "deb", f"DEB_DIR={out}"], cwd=ROOT, capture_output=True, text=True, timeout=900, check=False
    )
    assert p.returncode == 0, f"make deb failed:\n{p.stdout[-6000:]}\n{p.stderr[-6000:]}"
    path = out / f"krsid_{krsid.__version__}_all.deb"
    assert path.is_file(), sorted(x.name for x in out.iterdir())
    # dpkg-buildpackage writes to the parent of the tree it builds: that is DEB_DIR.
    assert not list(ROOT.parent.glob("krsid_*")), "make deb wrote into the checkout's parent"
    return path


@pytest.fixture(scope="module")
def unpacked(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package's files (dpkg-deb --extract)."""
    out = tmp_path_factory.mktemp("unpacked")
    dpkg_deb("--extract", str(deb), str(out))
    return out


def debian_python(unpacked: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`code` on Debian's python3 with Debian's packages and the unpacked package only:
    no site (-S: neither /usr/local nor a venv), the package's dist-packages first."""
    paths = [str(unpacked / "usr/lib/python3/dist-packages"), "/usr/lib/python3/dist-packages"]
    prologue = f"import sys; sys.path[:0] = {paths!r}\n"
    return subprocess.run(
        ["/usr/bin/python3", "-S", "-c", prologue + code, *args],
        cwd=unpacked,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": SYSTEM_PATH},
    )


def dpkg_deb(*args: str) -> str:
    p = subprocess.run(["dpkg-deb", *args], capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_control_fields_and_depends_are_debian_packages(deb: Path) -> None:
    fields = {f: dpkg_deb("--field", str(deb), f).strip() for f in ("Package", "Version", "Architecture", "Depends")}
    assert fields["Package"] == "krsid"
    assert fields["Version"] == krsid.__version__
    assert fields["Architecture"] == "all"
    names = depends_names(fields["Depends"])
    assert names - {"python3"} == DEB_DEPENDS, fields["Depends"]
    # BCC is Debian's python3-bpfcc: the PyPI "bcc" (an unrelated project) has no
    # Debian package, and nothing PyPI-only may be depended on.
    assert "python3-bcc" not in names and "bcc" not in names
    assert re.search(r"\bbpftool \(>= 7\.2\)", fields["Depends"]), fields["Depends"]
    for name in names:
        known = subprocess.run(["apt-cache", "show", name], capture_output=True, text=True, timeout=60, check=False)
        assert known.returncode == 0 and f"Package: {name}" in known.stdout, f"{name} is not a Debian package"
    conffiles = dpkg_deb("--info", str(deb), "conffiles").split()
    assert sorted(conffiles) == ["/etc/krsid/krsid.yaml", "/etc/logrotate.d/krsid"], conffiles


def test_files_are_where_krsid_and_systemd_look(deb: Path, unpacked: Path) -> None:
    listing = {line.split()[-1].removeprefix(".") for line in dpkg_deb("--contents", str(deb)).splitlines()}
    unit_dirs = ("/lib/systemd/system/krsid.service", "/usr/lib/systemd/system/krsid.service")
    assert any(u in listing for u in unit_dirs), sorted(listing)
    # The checkout's own files, byte for byte.
    same = {
        "/etc/krsid/krsid.yaml": ROOT / "etc/krsid.yaml",
        "/etc/logrotate.d/krsid": ROOT / "etc/logrotate/krsid",
        "/usr/lib/systemd/catalog/krsid.catalog": ROOT / "systemd/krsid.catalog",
        "/usr/share/doc/krsid/README.md": ROOT / "README.md",
    }
    programs = [*PROGRAMS.glob("*.c"), *PROGRAMS.glob("*.yaml"), *(PROGRAMS / "include").iterdir()]
    assert len(programs) > 2
    for f in programs:
        same[f"/usr/share/krsid/programs/{f.relative_to(PROGRAMS)}"] = f
    for example in ("policies", "grafana", "prometheus"):
        for f in (ROOT / "etc" / example).iterdir():
            same[f"/usr/share/doc/krsid/examples/{example}/{f.name}"] = f
    for f in (ROOT / "krsid").rglob("*.py"):
        same[f"/usr/lib/python3/dist-packages/krsid/{f.relative_to(ROOT / 'krsid')}"] = f
    missing = sorted(set(same) - listing)
    assert not missing, missing
    differ = [path for path, src in same.items() if (unpacked / path.lstrip("/")).read_bytes() != src.read_bytes()]
    assert not differ, differ
    unit = next(unpacked / u.lstrip("/") for u in unit_dirs if (unpacked / u.lstrip("/")).exists())
    assert unit.read_text() == (ROOT / "systemd/krsid.service").read_text()
    assert (unpacked / "usr/share/man/man8/krsid.8.gz").is_file()


def test_usr_bin_krsid_runs_on_debians_python_and_packages(unpacked: Path) -> None:
    """Every module imports, and /usr/bin/krsid answers, with Debian's packages only."""
    krsid_bin = unpacked / "usr/bin/krsid"
    assert krsid_bin.read_text().startswith("#!/usr/bin/python3\n")
    p = debian_python(
        unpacked,
        "import importlib, pkgutil, runpy, krsid\n"
        "for m in pkgutil.walk_packages(krsid.__path__, 'krsid.'):\n"
        "    if m.name != 'krsid.__main__':  # runs the CLI when imported\n"
        "        importlib.import_module(m.name)\n"
        "print(krsid.__file__)\n"
        "sys.argv = [sys.argv[1], '--version']\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n",
        str(krsid_bin),
    )
    assert p.returncode == 0, p.stdout + p.stderr
    init = str(unpacked / "usr/lib/python3/dist-packages/krsid/__init__.py")
    assert p.stdout.split() == [init, "krsid", krsid.__version__], p.stdout


def test_man_page_lists_every_command() -> None:
    """debian/krsid.8 is written by hand: it must name each command the CLI has."""
    usage = subprocess.run(
        [sys.executable, "-m", "krsid", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    choices = re.search(r"\{([a-z,-]+)\}", usage.stdout)
    assert choices, usage.stdout + usage.stderr
    page = (ROOT / "debian" / "krsid.8").read_text()
    documented = set(re.findall(r"^\.TP\n\.B ([a-z-]+)$", page, re.M))
    assert documented == set(choices.group(1).split(",")), documented


def test_metrics_endpoint_serves_on_debians_prometheus_client(unpacked: Path) -> None:
    """The package runs on python3-prometheus-client as Debian ships it (bookworm: 0.16,
    older than the venv's PyPI release), not only on what pip would install."""
    p = debian_python(
        unpacked,
        "import urllib.request, prometheus_client\n"
        "from prometheus_client.core import GaugeMetricFamily\n"
        "from krsid.metrics import make_registry, serve\n"
        "class Probe:\n"
        "    def collect(self):\n"
        "        g = GaugeMetricFamily('krsid_probe', 'probe'); g.add_metric([], 7); yield g\n"
        "serve(make_registry(Probe()), '127.0.0.1', int(sys.argv[1]))\n"
        "print(prometheus_client.__file__)\n"
        "print(urllib.request.urlopen(f'http://127.0.0.1:{sys.argv[1]}/metrics', timeout=30).read().decode())\n",
        str(free_port()),
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.startswith("/usr/lib/python3/dist-packages/prometheus_client/"), p.stdout
    assert "krsid_probe 7.0" in p.stdout, p.stdout


def maintainer_script(deb: Path, name: str) -> str:
    p = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(deb)], capture_output=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    with tarfile.open(fileobj=io.BytesIO(p.stdout)) as control:
        member = control.extractfile(f"./{name}")
        assert member is not None, name
        return member.read().decode()


def test_unit_is_enabled_and_started_and_purge_removes_runtime_dirs(deb: Path) -> None:
    postinst = maintainer_script(deb, "postinst")
    assert "deb-systemd-helper enable 'krsid.service'" in postinst, postinst
    # ... on a first install too: with --no-enable, debhelper guards it with "only if
    # the admin had enabled it before" (deb-systemd-helper debian-installed).
    assert "debian-installed 'krsid.service'" not in postinst, postinst
    assert "deb-systemd-invoke $_dh_action 'krsid.service'" in postinst, postinst
    postrm = maintainer_script(deb, "postrm")
    purge = re.search(r'if \[ "\$1" = "purge" \]; then\n\s*rm -rf ([^\n]*)\n', postrm)
    assert purge, postrm
    assert set(purge.group(1).split()) == {
        "/var/log/krsid",
        "/var/cache/krsid",
        "/var/lib/krsid",
        "/run/krsid",
        "/etc/krsid",
    }
    assert "deb-systemd-helper purge 'krsid.service'" in postrm, postrm
    # The catalog is loaded by systemd's trigger on /usr/lib/systemd/catalog, not by us.
    assert "interest-noawait /usr/lib/systemd/catalog" in Path("/var/lib/dpkg/info/systemd.triggers").read_text()


def test_lintian_reports_no_error(deb: Path, tmp_path: Path) -> None:
    # TMPDIR: lintian leaves Berkeley DB files (mldbm-elf-*) there; not in the machine's /tmp.
    p = subprocess.run(
        ["lintian", "--display-info", str(deb)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={"PATH": SYSTEM_PATH, "TMPDIR": str(tmp_path)},
    )
    tags = [line for line in p.stdout.splitlines() if re.match(r"^[EWIPX]: ", line)]
    errors = [t for t in tags if t.startswith("E: ")]
    assert not errors, "\n".join(tags)
    assert p.returncode == 0, p.stdout + p.stderr


def test_make_deb_refuses_a_changelog_behind_the_version(tmp_path: Path) -> None:
    """krsid/__init__.py's __version__ names the package: a changelog that says
    otherwise stops the build with what to do (before anything is built)."""
    if not shutil.which("dpkg-parsechangelog", path=SYSTEM_PATH):
        pytest.skip("dpkg-parsechangelog not installed (dpkg-dev)")
    p = subprocess.run(
        ["make", "-s", "deb", f"DEB_DIR={tmp_path}", "VERSION=99.0.0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert p.returncode != 0
    assert f"debian/changelog is at {krsid.__version__} but krsid/__init__.py at 99.0.0" in p.stderr, p.stderr
    assert "dch -v 99.0.0" in p.stderr
    assert not list(tmp_path.iterdir())
