"""How much a benign workload makes krsid say, on the shipped config (bench/run.py benign).

In the VM (BPF-LSM loads only there): krsid runs etc/krsid.yaml as shipped (hooks,
options, fair shares, the file-integrity watch), with its state, cache and JSON lines
moved to a scratch directory, and each workload runs in a cgroup of its own, so its
events are told from everything else's by the event's cgroup:

- dpkg: a package built with dpkg-deb, installed and removed (dpkg --root: into a
  scratch root, not the VM's, whose root is the host's filesystem);
- C build: make -j2 of 16 C files and a link (cc1, as, collect2, ld per file);
- Python: python3 -m venv and pip install of a local wheel (offline);
- git: init, 10 commits, a branch, a merge, log, gc;
- logrotate: three forced rotations of a log with compression (gzip).

Printed: per workload, execs and the other events by hook, per 1,000 execs (issue
11's budget: fewer than 50 non-exec events per 1,000 benign execs on the shipped
config), then every non-exec event's hook and summary, so a reviewer can judge
whether each is one a security team wants.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import hashlib
import json
import os
import subprocess
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from bench.common import ROOT, krsid_running, table

CGROUP_ROOT = Path("/sys/fs/cgroup")
EXEC_HOOK = "bprm_check_security"
BUDGET_PER_1000_EXECS = 50


def shipped_config(tmp: Path, headers: str) -> Path:
    cfg = yaml.safe_load((ROOT / "etc" / "krsid.yaml").read_text())
    cfg.update(headers=headers, cache_dir=str(tmp / "cache"), state_dir=str(tmp / "state"))
    cfg["sinks"] = {
        "journald": {"enabled": False},
        "jsonl": {"enabled": True, "path": str(tmp / "events.jsonl")},
        "prometheus": {"enabled": False},
    }
    path = tmp / "krsid.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@contextlib.contextmanager
def cgroup(name: str) -> Iterator[Path]:
    path = CGROUP_ROOT / name
    path.mkdir()
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.rmdir()


def run_in(group: Path, script: str, cwd: Path) -> None:
    """sh -c script, started inside the cgroup (its children stay there)."""
    procs = group / "cgroup.procs"

    def enter() -> None:
        procs.write_text(str(os.getpid()))

    env = dict(os.environ, HOME=str(cwd), GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@example.org")
    env |= {"GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@example.org", "PIP_NO_INDEX": "1"}
    subprocess.run(["sh", "-ec", script], cwd=cwd, env=env, check=True, preexec_fn=enter, capture_output=True)


def wheel(directory: Path) -> Path:
    """A pure-Python wheel of one module, written by hand (no build backend offline)."""
    name, version = "krsid_bench_pkg", "1.0"
    files = {
        f"{name}/__init__.py": b"VALUE = 42\n",
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: krsid-bench\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = "".join(
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
        for path, data in files.items()
    )
    files[f"{name}-{version}.dist-info/RECORD"] = (record + f"{name}-{version}.dist-info/RECORD,,\n").encode()
    out = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
    return out


def prepare_dpkg(work: Path) -> str:
    pkg = work / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "usr/share/krsid-bench").mkdir(parents=True)
    (pkg / "etc").mkdir()
    (pkg / "DEBIAN/control").write_text(
        "Package: krsid-bench\nVersion: 1.0\nArchitecture: all\nMaintainer: b <b@example.org>\nDescription: bench\n"
    )
    (pkg / "usr/share/krsid-bench/data").write_text("data\n" * 100)
    (pkg / "etc/krsid-bench.conf").write_text("setting = 1\n")
    root = work / "root"
    for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates"):
        (root / d).mkdir(parents=True)
    (root / "var/lib/dpkg/status").touch()
    return (
        "dpkg-deb -b pkg p.deb >/dev/null\n"
        f"dpkg --root={root} --force-not-root --log={work}/dpkg.log -i p.deb\n"
        f"dpkg --root={root} --log={work}/dpkg.log -r krsid-bench\n"
    )


def prepare_c_build(work: Path) -> str:
    for i in range(16):
        (work / f"f{i}.c").write_text(f"int f{i}(int x) {{ return x * {i} + 1; }}\n")
    calls = " + ".join(f"f{i}(1)" for i in range(16))
    decls = "".join(f"int f{i}(int);\n" for i in range(16))
    (work / "main.c").write_text(f"{decls}int main(void) {{ return ({calls}) == 0; }}\n")
    objs = " ".join(f"f{i}.o" for i in range(16))
    (work / "Makefile").write_text(f"prog: main.o {objs}\n\tcc -o $@ $^\n%.o: %.c\n\tcc -O2 -c -o $@ $<\n")
    return "make -j2 >/dev/null\n./prog || true\n"


def prepare_python(work: Path) -> str:
    whl = wheel(work)
    return (
        "/usr/bin/python3 -m venv venv\n"
        f"venv/bin/pip install --no-index --disable-pip-version-check -q {whl}\n"
        "venv/bin/python -c 'import krsid_bench_pkg'\n"
    )


def prepare_git(work: Path) -> str:
    return (
        "git init -q repo && cd repo\n"
        "for i in 1 2 3 4 5 6 7 8 9 10; do echo $i > f$i; git add f$i; git commit -qm c$i; done\n"
        "git checkout -qb topic && echo t > t && git add t && git commit -qm t\n"
        "git checkout -q - && git merge -q --no-edit topic\n"
        "git log --oneline > /dev/null && git gc -q\n"
    )


def prepare_logrotate(work: Path) -> str:
    (work / "app.log").write_text("line\n" * 1000)
    (work / "logrotate.conf").write_text(f"{work}/app.log {{\n  rotate 3\n  compress\n  missingok\n}}\n")
    return "".join(
        f"logrotate -f -s {work}/state {work}/logrotate.conf\necho more >> {work}/app.log\n" for _ in range(3)
    )


WORKLOADS: dict[str, Callable[[Path], str]] = {
    "dpkg install + remove": prepare_dpkg,
    "C build (make -j2, 17 files)": prepare_c_build,
    "Python venv + pip install (local wheel)": prepare_python,
    "git (10 commits, branch, merge, gc)": prepare_git,
    "logrotate (3 forced rotations, gzip)": prepare_logrotate,
}


def events_of(jsonl: Path, group: str) -> list[dict[str, Any]]:
    out = []
    for line in jsonl.read_text().splitlines():
        with contextlib.suppress(ValueError):
            o = json.loads(line)
            if o.get("cgroup") == group:
                out.append(o)
    return out


def main(args: argparse.Namespace) -> None:
    if os.environ.get("KRSID_IN_VM") != "1":
        raise SystemExit(
            "bench/run.py benign: run it inside the test VM: tests/vm/run -- .venv/bin/python bench/run.py benign"
        )
    headers = args.headers if args.headers != "auto" else "btf"
    rows, total_execs, total_other, noted = [], 0, collections.Counter[str](), []
    with tempfile.TemporaryDirectory(prefix="krsid-benign-") as tmpdir:
        tmp = Path(tmpdir)
        cfg = shipped_config(tmp, headers)
        with krsid_running(cfg, tmp / "notify"):
            for i, (name, prepare) in enumerate(WORKLOADS.items()):
                work = tmp / f"work{i}"
                work.mkdir()
                script = prepare(work)
                with cgroup(f"krsid-benign-{i}") as group:
                    run_in(group, script, work)
                    # Drained: events wait at most poll_timeout_ms (200) plus the write.
                    subprocess.run(["sleep", "2"], check=True)
                    events = events_of(tmp / "events.jsonl", f"/krsid-benign-{i}")
                hooks = collections.Counter(o["hook"] for o in events)
                execs = hooks.pop(EXEC_HOOK, 0)
                other = sum(hooks.values())
                total_execs += execs
                total_other += hooks
                noted += [(name, o) for o in events if o["hook"] != EXEC_HOOK]
                per_1000 = 1000 * other / max(execs, 1)
                by_hook = ", ".join(f"{h} {n}" for h, n in hooks.most_common()) or "none"
                rows.append([name, str(execs), str(other), f"{per_1000:.1f}", by_hook])
    all_other = sum(total_other.values())
    rows.append(
        [
            "**all**",
            str(total_execs),
            str(all_other),
            f"**{1000 * all_other / max(total_execs, 1):.1f}**",
            ", ".join(f"{h} {n}" for h, n in total_other.most_common()) or "none",
        ]
    )
    table(
        f"Benign workloads on the shipped config (VM, {headers} headers): non-exec events per 1,000 execs "
        f"(budget < {BUDGET_PER_1000_EXECS})",
        ["workload", "execs", "other events", "per 1,000 execs", "other events by hook"],
        rows,
    )
    print("\nEvery non-exec event (workload: hook, comm, what):\n")
    for name, o in noted:
        what = o.get("path") or o.get("name") or o.get("file") or o.get("new_name") or ""
        print(f"- {name}: {o['hook']} by {o.get('comm')}: {what} {o.get('reason') or o.get('changes') or ''}".rstrip())
