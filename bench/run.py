#!/usr/bin/env python3
"""krsid benchmarks. Prints markdown tables; never asserts a speed.

    bench/run.py compile            host: BCC compile time, per hook alone vs all as one module
    bench/run.py throughput         host: the user-space pipeline at native speed (load generator),
                                    events/s into JSON lines and journald, exact loss accounting
    bench/run.py stages             host: per-stage CPU of one event (decode, enrich, JSON line,
                                    journald entry, whole path); --against DIR: another checkout
                                    side by side (stages.py)
    bench/run.py flood              host: priority-lane delivery under bulk floods of 1x, 10x, 100x
                                    the drain rate: one lane / lanes / lanes + fair sharing (flood.py)
    bench/run.py vm                 in the VM (tests/vm/run): load+attach per hook, daemon cold
                                    start, RSS, exec-loop events/s into journald
    bench/run.py daemon             in the VM: the daemon part of vm alone, with the binary hash
                                    cache's hit rate and what the exec events carried
    bench/run.py fallback           in the VM: fork/exec cost of userns_create's fallback
                                    (cred_prepare, which runs on every credential copy)
    bench/run.py cost               in the VM: hook cost vs auditd, cold start, RSS (cost_bench.py)
    bench/run.py policy             in the VM: policy cost (bench/policy_bench.py)
    bench/run.py exec               in the VM: an exec's cost split into BPF programs and consumers
    bench/run.py benign             in the VM: events per 1,000 execs of benign workloads (dpkg, a C
                                    build, venv + pip, git, logrotate) on the shipped config (benign.py)
    bench/run.py ima                in the VM: exec with IMA hashing the binary vs krsid's worker;
                                    fs-verity on /usr/bin (ima_bench.py; loads an IMA policy: a throw-away VM)
    bench/run.py table              in the VM: daemon RSS with a full process table (N sleeping
                                    processes seeded at start; table_bench.py)
    bench/run.py in-vm              inside the VM: vm, cost, exec, policy, fallback and benign in one session
    bench/run.py all                everything: compile + throughput + stages + flood here, then in-vm in the VM
    make bench                      = bench/run.py all

Compile time is measured on the host (compile-only works there; under TCG it is
~30x slower and says little); load/attach and delivery only where LSM programs load.
Ratios come from runs side by side in one invocation.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import flood, stages, throughput  # noqa: E402
from bench.common import build_loops, exec_loop, krsid_running, proc_status_mb, scrape, table  # noqa: E402
from krsid.catalog import HookSpec, load_catalog  # noqa: E402
from krsid.kernel.btf import lsm_hook_arity  # noqa: E402
from krsid.kernel.headers import HeaderSource, resolve_headers  # noqa: E402
from tests.support.net import free_port  # noqa: E402

CATALOG = load_catalog(ROOT / "programs")
DEFAULT_HOOKS = ["bprm_check_security", "file_mprotect"]


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def headers(mode: str, cache: Path) -> HeaderSource:
    return resolve_headers(cache, prefer=mode)


# -- compile (host) ----------------------------------------------------------------------------


def bench_compile(args: argparse.Namespace) -> None:
    from krsid.pipeline.load import BuildSettings, compile_only

    with tempfile.TemporaryDirectory() as cache:
        settings = BuildSettings(headers(args.headers, Path(cache)), lsm_hook_arity())
        specs = [CATALOG[h] for h in args.hooks]
        rows = []
        separate = 0.0
        for spec in specs:
            t = timed(lambda s=spec: compile_only(CATALOG, [s], settings), args.repeat)  # type: ignore[misc]
            separate += statistics.median(t)
            rows.append([spec.name, f"{statistics.median(t):.2f}", f"{min(t):.2f}"])
        t = timed(lambda: compile_only(CATALOG, specs, settings), args.repeat)
        rows.append([f"**all {len(specs)} as one module**", f"{statistics.median(t):.2f}", f"{min(t):.2f}"])
        rows.append([f"sum of {len(specs)} separate modules", f"{separate:.2f}", ""])
        rows.append(["one module / separate (ratio)", f"{statistics.median(t) / separate:.2f}", ""])
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        table(
            f"BCC compile on this host ({settings.header_source.kind} headers, median of {args.repeat}; "
            f"peak RSS {peak:.0f} MB)",
            ["programs", "median s", "min s"],
            rows,
        )


# -- load + attach, daemon (VM) ----------------------------------------------------------------


def bench_attach(specs: list[HookSpec], src: HeaderSource) -> list[list[str]]:
    from krsid.pipeline.load import BuildSettings, LoadedPrograms

    rows = []
    for group in [[s] for s in specs] + [specs]:
        programs = LoadedPrograms(CATALOG, group, BuildSettings(src, lsm_hook_arity()))
        t0 = time.perf_counter()
        programs.build()
        t_compile = time.perf_counter() - t0
        status = programs.attach()
        t_total = time.perf_counter() - t0
        programs.close()
        name = group[0].name if len(group) == 1 else f"**all {len(group)} as one module**"
        attach = " + ".join(f"{st.load_seconds:.2f}" for st in status.values())
        ok = all(st.attached for st in status.values())
        rows.append([name, f"{t_compile:.1f}", attach, f"{t_total:.1f}", "yes" if ok else "NO"])
    return rows


def bench_daemon(args: argparse.Namespace, tmp: Path) -> None:
    from tests.support.journald import private_journald

    true_copy = tmp / "bench-true"
    shutil.copy2("/bin/true", true_copy)
    port = free_port()
    cfg = tmp / "krsid.yaml"
    cfg.write_text(
        f"headers: {args.headers}\ncache_dir: {tmp / 'cache'}\nstate_dir: {tmp / 'state'}\n"
        "hooks:\n"
        + "".join(f"  {h}: {{}}\n" for h in args.hooks)
        + f"sinks:\n  jsonl: {{path: {tmp / 'events.jsonl'}}}\n  prometheus: {{listen: '127.0.0.1:{port}'}}\n"
    )
    n = args.execs
    without = exec_loop(true_copy, n)  # baseline: no krsid attached
    with private_journald() as journal:
        t0 = time.perf_counter()
        with krsid_running(cfg, tmp / "notify") as proc:
            cold = time.perf_counter() - t0
            rss_ready = proc_status_mb(proc.pid)["VmRSS"]
            t_loop0 = time.perf_counter()
            with_krsid = exec_loop(true_copy, n)
            deadline = time.monotonic() + 600
            got = 0
            while time.monotonic() < deadline:
                got = len(journal.entries(f"KRSID_FILENAME={true_copy}", "--output-fields=KRSID_SEQ"))
                if got >= n:
                    break
                time.sleep(0.5)
            delivered = time.perf_counter() - t_loop0
            rss_after = proc_status_mb(proc.pid)["VmRSS"]
            metrics = scrape(port, timeout=10)
            lost = sum(v for (name, _), v in metrics.items() if name == "krsid_events_lost_total")
    hash_rows = _hash_rows(metrics, tmp / "events.jsonl", true_copy)
    table(
        f"Daemon in the VM ({args.headers} headers, {len(args.hooks)} hooks, TCG: absolute numbers are "
        "emulator-bound, compare ratios)",
        ["measure", "value"],
        [
            ["cold start: process start -> READY=1 (compile+load+attach+sinks)", f"{cold:.1f} s"],
            ["RSS after READY", f"{rss_ready:.0f} MB"],
            [f"RSS after {n} exec events", f"{rss_after:.0f} MB"],
            [f"exec loop, {n} execs, krsid not running", f"{without:.2f} s ({n / without:.0f}/s)"],
            [f"exec loop, {n} execs, krsid attached", f"{with_krsid:.2f} s ({n / with_krsid:.0f}/s)"],
            ["exec loop slowdown (attached / not)", f"{with_krsid / without:.2f}x"],
            [f"events in journald ({got}/{n}) by", f"{delivered:.2f} s -> {got / delivered:.0f} events/s"],
            ["events counted lost (all stages)", f"{lost:.0f}"],
            *hash_rows,
        ],
    )


def _hash_rows(metrics: dict[tuple[str, str], float], events: Path, binary: Path) -> list[list[str]]:
    """How the binary hashes fared during the exec loop (issue 12): the cache's hit rate
    over all events, and what the exec events of the loop's binary carried."""
    requests = metrics.get(("krsid_binary_hash_requests_total", ""), 0)
    hits = metrics.get(("krsid_binary_hash_cache_hits_total", ""), 0)
    files = metrics.get(("krsid_binary_hash_files_total", ""), 0)
    answers: collections.Counter[str] = collections.Counter()
    with events.open() as f:
        for line in f:
            if not line.endswith("\n"):
                continue  # a line still being written
            o = json.loads(line)
            if o["hook"] == "bprm_check_security" and o.get("filename") == str(binary):
                answers["sha256" if o.get("exe_sha256") else o.get("hash_unavailable") or "none"] += 1
    return [
        [
            "binary hash cache: hits / look-ups (all events)",
            f"{hits:.0f} / {requests:.0f} ({hits / requests:.1%}); {files:.0f} files hashed" if requests else "none",
        ],
        [
            f"exec events of {binary.name}: what they carried",
            ", ".join(f"{what} {n}" for what, n in answers.most_common()) or "none",
        ],
    ]


def bench_daemon_only(args: argparse.Namespace) -> None:
    """bench_daemon alone: cold start, RSS, the exec loop and the hash cache."""
    require_vm("daemon")
    with tempfile.TemporaryDirectory() as tmpdir:
        bench_daemon(args, Path(tmpdir))


LOOPS = {  # kind -> (iterations, what krsid does with it by default)
    "mprotect": (20000, "file_mprotect: emitted (PROT_EXEC)"),
    "mprotect_rw": (20000, "file_mprotect: filtered in the kernel (no EXEC)"),
    "open": (20000, "file_open: filtered in the kernel (not a sensitive path)"),
    "open_w": (20000, "file_open: the watch walk, filtered (not watched)"),
    "rename": (5000, "inode_rename: two watch walks, filtered (not watched)"),
    "connect": (10000, "socket_connect: emitted (UDP to 127.0.0.1)"),
    "exec": (500, "bprm_check_security + others: emitted"),
}
# cred_prepare runs once per fork (copy_creds) and once more per exec.
FALLBACK_LOOPS = {"fork": (1000, "fork + exit + wait"), "exec": (200, "fork + exec /bin/true")}


def run_loops(exe: Path, repeat: int, loops: Mapping[str, tuple[int, str]] = LOOPS) -> dict[str, float]:
    """Median ns per operation of each loop."""
    return {
        kind: statistics.median(
            float(subprocess.run([str(exe), kind, str(n)], capture_output=True, text=True, check=True).stdout)
            for _ in range(repeat)
        )
        for kind, (n, _) in loops.items()
    }


def bench_hook_cost(args: argparse.Namespace, tmp: Path) -> None:
    """Each syscall loop without krsid, then with every hook of the catalog attached."""
    from tests.support.journald import private_journald

    exe = build_loops(tmp)
    hooks = sorted(CATALOG.configurable)  # a fallback program is attached in place of its hook
    cfg = tmp / "all.yaml"
    hook_cfg: dict[str, object] = {h: {} for h in hooks}
    hook_cfg["socket_connect"] = {"families": (1 << 2) | (1 << 10)}
    import yaml

    cfg.write_text(
        yaml.safe_dump(
            {
                "headers": args.headers,
                "cache_dir": str(tmp / "cache2"),
                "state_dir": str(tmp / "state2"),
                "hooks": hook_cfg,
                "sinks": {"jsonl": {"path": str(tmp / "all.jsonl")}, "prometheus": {"enabled": False}},
            }
        )
    )
    base = run_loops(exe, args.repeat)
    with private_journald(), krsid_running(cfg, tmp / "notify2"):
        attached = run_loops(exe, args.repeat)
    rows = [
        [kind, what, f"{base[kind]:.0f}", f"{attached[kind]:.0f}", f"{attached[kind] / base[kind]:.2f}x"]
        for kind, (_, what) in LOOPS.items()
    ]
    table(
        f"Per-call cost with all {len(hooks)} hooks attached (VM, TCG: compare the ratios; median of {args.repeat})",
        ["loop", "krsid's part", "ns/call without", "ns/call with", "ratio"],
        rows,
    )


def bench_fallback(args: argparse.Namespace) -> None:
    """fork and fork+exec loops: without krsid, with userns_create, with its fallback
    cred_prepare (fallback: always), side by side. cred_prepare runs once per fork
    (copy_creds) and once per exec; it drops both in the kernel after reading the
    syscall number. userns_create does not run on either: its column is the control."""
    require_vm("fallback")
    from tests.support.journald import private_journald

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        exe = build_loops(tmp)
        columns = {"none": None, "userns_create": {}, "cred_prepare": {"fallback": "always"}}
        results: dict[str, dict[str, float]] = {}
        with private_journald():
            for name, settings in columns.items():
                if settings is None:
                    results[name] = run_loops(exe, args.repeat, FALLBACK_LOOPS)
                    continue
                cfg = {
                    "headers": args.headers,
                    "cache_dir": str(tmp / "cache"),
                    "state_dir": str(tmp / f"state-{name}"),
                    "hooks": {"userns_create": settings},
                    "sinks": {"jsonl": {"path": str(tmp / f"{name}.jsonl")}, "prometheus": {"enabled": False}},
                }
                with daemon_running(tmp, name, cfg):
                    results[name] = run_loops(exe, args.repeat, FALLBACK_LOOPS)
    none = results["none"]
    rows = [
        [
            what,
            f"{none[kind]:.0f}",
            f"{results['userns_create'][kind]:.0f} ({results['userns_create'][kind] / none[kind]:.2f}x)",
            f"{results['cred_prepare'][kind]:.0f} ({results['cred_prepare'][kind] / none[kind]:.2f}x)",
        ]
        for kind, (_, what) in FALLBACK_LOOPS.items()
    ]
    table(
        f"userns_create vs its fallback cred_prepare, ns/call (VM, {args.headers} headers, TCG: compare the "
        f"ratios; median of {args.repeat})",
        ["loop", "no krsid", "userns_create", "cred_prepare (fallback: always)"],
        rows,
    )


def require_vm(what: str) -> None:
    if os.environ.get("KRSID_IN_VM") != "1":
        print(
            f"bench/run.py {what}: run it inside the test VM: tests/vm/run -- .venv/bin/python bench/run.py {what}",
            file=sys.stderr,
        )
        sys.exit(2)


@contextlib.contextmanager
def daemon_running(tmp: Path, name: str, config: dict[str, object]) -> Iterator[subprocess.Popen[bytes]]:
    """krsid on config, from READY=1 until SIGTERM (output discarded)."""
    import yaml

    cfg = tmp / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(config))
    with krsid_running(cfg, tmp / f"notify-{name}") as proc:
        yield proc


def bench_vm(args: argparse.Namespace) -> None:
    require_vm("vm")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        src = headers(args.headers, tmp / "hcache")
        rows = bench_attach([CATALOG[h] for h in args.hooks], src)
        table(
            f"Cold start in the VM ({src.kind} headers; TCG, so compile is ~30x the host's)",
            ["programs", "compile s", "load+attach s (per hook)", "total s", "attached"],
            rows,
        )
        bench_daemon(args, tmp)
        bench_hook_cost(args, tmp)


def bench_cost(args: argparse.Namespace) -> None:
    from bench.cost_bench import main as cost_main

    cost_main(args)


def bench_exec(args: argparse.Namespace) -> None:
    from bench.exec_breakdown import main as exec_main

    exec_main(args)


def bench_walk(args: argparse.Namespace) -> None:
    require_vm("walk")
    from bench.walk_bench import main as walk_main

    walk_main(args)


def bench_benign(args: argparse.Namespace) -> None:
    from bench.benign import main as benign_main

    benign_main(args)


def bench_ima(args: argparse.Namespace) -> None:
    require_vm("ima")
    from bench.ima_bench import main as ima_main

    ima_main(args)


def bench_table(args: argparse.Namespace) -> None:
    require_vm("table")
    from bench.table_bench import main as table_main

    table_main(args)


def bench_policy(args: argparse.Namespace) -> None:
    from bench.policy_bench import bench_policy as policy_main  # policy cost (issue 4)

    policy_main(args)


def bench_throughput(args: argparse.Namespace) -> None:
    throughput.bench_throughput(args, table)


def bench_stages(args: argparse.Namespace) -> None:
    stages.bench_stages(args, table)


def bench_flood(args: argparse.Namespace) -> None:
    flood.bench_flood(args, table)


IN_VM = ("vm", "cost", "exec", "policy", "fallback", "benign")  # what `in-vm` runs, in one VM session


def bench_in_vm(args: argparse.Namespace) -> None:
    for what in IN_VM:
        print(f"\n## bench/run.py {what}\n", flush=True)
        BENCHES[what](args)


def bench_all(args: argparse.Namespace) -> None:
    """Every benchmark: host parts here, then one VM session for the BPF-LSM parts."""
    args.hooks = sorted(CATALOG.hooks) if args.hooks == DEFAULT_HOOKS else args.hooks
    bench_compile(args)
    bench_throughput(args)
    bench_stages(args)
    bench_flood(args)
    vm = [str(ROOT / "tests" / "vm" / "run"), "--timeout", "7200", "--"]
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "run.py"),
        "in-vm",
        "--headers",
        args.headers if args.headers != "auto" else "kernel",
    ]
    sys.stdout.flush()
    subprocess.run(vm + cmd, check=True, cwd=ROOT)


BENCHES: dict[str, Callable[[argparse.Namespace], None]] = {
    "compile": bench_compile,
    "throughput": bench_throughput,
    "stages": bench_stages,
    "flood": bench_flood,
    "vm": bench_vm,
    "daemon": bench_daemon_only,
    "fallback": bench_fallback,
    "cost": bench_cost,
    "exec": bench_exec,
    "policy": bench_policy,
    "benign": bench_benign,
    "walk": bench_walk,
    "ima": bench_ima,
    "table": bench_table,
    "in-vm": bench_in_vm,
    "all": bench_all,
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=list(BENCHES))
    p.add_argument("--headers", default="auto", choices=["auto", "kernel", "btf"])
    p.add_argument("--hooks", nargs="+", default=DEFAULT_HOOKS)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--execs", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=2, help="cost: alternations of krsid / auditd / baseline")
    p.add_argument("--execs-per-run", type=int, default=60, help="exec: fork+exec calls per timed run")
    p.add_argument("--table-processes", type=int, default=32768, help="table: sleeping processes krsid seeds")
    throughput.add_arguments(p)
    stages.add_arguments(p)
    flood.add_arguments(p)
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: needs root")
    BENCHES[args.what](args)


if __name__ == "__main__":
    main()
