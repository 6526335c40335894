"""krsid's command line: run | check | reload | reopen | hooks | doctor | docs.

Exit codes: 0 success; 1 a runtime failure (kernel refused, nothing attached,
a doctor check failed, no daemon to signal); 2 bad input (config, catalog,
usage); 3 BPF-LSM is not active on this kernel (not retried by the unit);
130 interrupted (Ctrl-C); 141 stdout closed early (`krsid hooks | head`),
as for a tool that SIGPIPE ended.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from krsid import __version__
from krsid.config import DEFAULT_CONFIG_PATH, Config, default_programs_dir, load_config
from krsid.errors import BpfLsmInactiveError, CatalogError, ConfigError, KrsidError
from krsid.service import pid_file_of, signal_daemon

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2
# BPF-LSM is not active (no `bpf` in lsm=): only a reboot can change that, so the unit's
# RestartPreventExitStatus= keeps systemd from retrying it forever.
EXIT_BPF_LSM_INACTIVE = 3
EXIT_INTERRUPTED = 128 + signal.SIGINT  # the shell's status for a process Ctrl-C ended
EXIT_PIPE_CLOSED = 128 + signal.SIGPIPE
SOURCE_CONFIG = Path(__file__).resolve().parent.parent / "etc" / "krsid.yaml"

log = logging.getLogger("krsid")


def default_config_path() -> Path:
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else SOURCE_CONFIG


def _load(args: argparse.Namespace) -> Config:
    # `is None`, not falsiness: an empty --config is refused by argparse (_config_path),
    # never read as "no option given" (which would validate the default file instead).
    return load_config(Path(args.config) if args.config is not None else default_config_path())


def _config_path(text: str) -> str:
    """--config's value: a non-empty path (`-c ""`, e.g. from an unset shell variable, is a usage error)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path; give the config file to use")
    return text


# The shipped unit (systemd/krsid.service) firewalls the daemon's sockets to loopback.
UNIT_IP_FIREWALL = "IPAddressDeny=any with IPAddressAllow=localhost"


def exposure_warning(config: Config) -> str | None:
    """A warning if the metrics endpoint listens beyond loopback: the shipped unit's
    IP firewall drops remote scrapes, so the address alone would mislead."""
    prom = config.prometheus
    if not prom.enabled or prom.host == "localhost":
        return None
    address = ipaddress.ip_address(prom.host)  # validated by the config: an IP or localhost
    listen = f"[{prom.host}]:{prom.port}" if address.version == 6 else f"{prom.host}:{prom.port}"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
    if address.is_loopback:
        return None
    return (
        f"sinks.prometheus.listen: {listen} is not a loopback address, but the shipped unit (krsid.service) "
        f"sets {UNIT_IP_FIREWALL}: under it, remote scrapes are dropped and only local clients can read "
        "the metrics. To let a scraper in, add a drop-in (`systemctl edit krsid`) with:\n"
        "    [Service]\n    IPAddressAllow=<the scraper's address>"
    )


def _warn_if_exposed(config: Config) -> None:
    warning = exposure_warning(config)
    if warning is not None:
        log.warning("%s", warning)


def cmd_run(args: argparse.Namespace) -> int:
    from krsid.daemon import Daemon

    config = _load(args)
    _warn_if_exposed(config)
    daemon = Daemon(config)
    try:
        daemon.start()
        daemon.run()
    finally:
        daemon.stop()
    # SIGTERM (systemctl stop) is the normal end: 0. Ctrl-C reads as interrupted, as
    # for any foreground tool; both detach everything first.
    return EXIT_INTERRUPTED if daemon.stop_signal == signal.SIGINT else EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the config; then compile (and unless --compile-only, load+attach+detach)."""
    config = _load(args)
    _warn_if_exposed(config)
    print(f"config {config.source}: OK ({len(config.enabled_hooks)} hooks enabled)")
    if args.config_only:
        return EXIT_OK
    from krsid.pipeline.load import LoadedPrograms, compile_each_alone, compile_in_child, why_not
    from krsid.plan import kernel_hooks, plan_build

    specs, settings, _serves = plan_build(config, kernel_hooks())
    print(f"headers: {settings.header_source.description}")
    if args.compile_only:
        # In child processes: a program that makes LLVM end the process must not
        # end the check before it has named the program.
        joint = compile_in_child(config.catalog, specs, settings)
        if joint.ok:
            print(f"compiled {len(specs)} program(s): {', '.join(s.name for s in specs)}")
            return EXIT_OK
        failed = compile_each_alone(config.catalog, specs, settings)
        for hook, result in failed.items():
            print(f"{hook}: {why_not(result)}", file=sys.stderr)
        if not failed:  # each compiles alone, not together
            print(f"the programs compile alone but not together:\n{joint.output.strip()}", file=sys.stderr)
        print(f"{len(failed)} of {len(specs)} program(s) do not compile: {', '.join(failed) or '(only together)'}")
        return EXIT_FAILURE
    programs = LoadedPrograms(config.catalog, specs, settings, log=lambda m: print(m, file=sys.stderr))
    try:
        programs.build()
        status = programs.attach()
    finally:
        programs.close()
    width = max((len(s) for s in status), default=4)
    print(f"{'HOOK':<{width}}  STATE     LOAD+ATTACH  ERROR")
    for st in status.values():
        state = "attached" if st.attached else "FAILED"
        err = st.error.splitlines()[0] if st.error else ""
        print(f"{st.hook:<{width}}  {state:<8}  {st.load_seconds:>9.2f}s  {err}")
    print(f"compile: {programs.compile_seconds:.2f}s (one module for all hooks); all detached")
    return EXIT_OK if status and all(s.attached for s in status.values()) else EXIT_FAILURE


def cmd_hooks(args: argparse.Namespace) -> int:
    from krsid.catalog import load_catalog
    from krsid.kernel.btf import Btf

    catalog = load_catalog(Path(args.programs_dir) if args.programs_dir else default_programs_dir())
    kernel = Btf.load().lsm_hooks()
    have = set(kernel)
    print(f"{len(kernel)} LSM hooks in this kernel's BTF; {len(catalog.hooks)} krsid programs")
    for hook in sorted(have | set(catalog.hooks)):
        fallback = catalog.fallback_of(hook)
        if hook in catalog and catalog[hook].fallback_for:
            mark = f"program: the fallback for {catalog[hook].fallback_for}"
            mark += "" if hook in have else ", MISSING in this kernel"
        elif hook in catalog and hook in have:
            mark = "program"
        elif hook in catalog and fallback is not None and fallback.name in have:
            mark = f"program, MISSING in this kernel: its fallback {fallback.name} is used"
        elif hook in catalog:
            mark = "program, MISSING in this kernel"
        elif args.all:
            mark = "-"
        else:
            continue
        print(f"  {hook:<32} {mark}")
    if not args.all:
        print("(--all lists every hook of the kernel)")
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from krsid.kernel.probe import run_checks

    cache = Path(args.cache_dir)
    checks = run_checks(cache)
    failed = 0
    for c in checks:
        mark = {True: "ok  ", False: "FAIL", None: "info"}[c.ok]
        print(f"[{mark}] {c.name}: {c.detail}")
        if c.ok is False:
            failed += 1
            print(f"       -> {c.remedy}")
    if args.require_lsm_load:
        # For scripts (make run): exit 0 only if an LSM program can really load here.
        lsm = [c for c in checks if c.name.lower() == "lsm program load"]
        return EXIT_OK if lsm and lsm[0].ok else EXIT_FAILURE
    return EXIT_OK if not failed else EXIT_FAILURE


def cmd_reload(args: argparse.Namespace) -> int:
    """Ask the running daemon (pid in state_dir/krsid.pid) to re-read its config: SIGHUP."""
    config = _load(args)  # validate first: a broken file is reported here, not only in the daemon's log
    pid = signal_daemon(pid_file_of(config.state_dir), signal.SIGHUP)
    print(f"krsid: asked pid {pid} to reload {config.source}; see its log for the result")
    return EXIT_OK


def cmd_reopen(args: argparse.Namespace) -> int:
    """Ask the running daemon to reopen its JSON lines file (after logrotate moved it): SIGUSR1."""
    config = _load(args)  # for state_dir
    pid = signal_daemon(pid_file_of(config.state_dir), signal.SIGUSR1)
    print(f"krsid: asked pid {pid} to reopen its JSON lines file")
    return EXIT_OK


def cmd_docs(args: argparse.Namespace) -> int:
    from krsid import docs
    from krsid.catalog import load_catalog

    if args.write:
        root = Path(__file__).resolve().parent.parent
        for path in docs.write_all(root):
            print(f"wrote {path}")
        return EXIT_OK
    catalog = load_catalog(Path(args.programs_dir) if args.programs_dir else default_programs_dir())
    print(docs.journal_catalog(catalog) if args.journal_catalog else docs.field_reference(catalog))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="krsid", description="Runtime-security audit daemon on BPF-LSM hooks")
    p.add_argument("--version", action="version", version=f"krsid {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--config",
            "-c",
            type=_config_path,
            help=f"config file (default {DEFAULT_CONFIG_PATH}, or the checkout's etc/krsid.yaml)",
        )

    run = sub.add_parser("run", help="run the daemon in the foreground")
    with_config(run)
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="validate config; compile, load, attach and detach each hook")
    with_config(check)
    mode = check.add_mutually_exclusive_group()
    mode.add_argument("--config-only", action="store_true", help="only validate the config (exit 0 or 2)")
    mode.add_argument("--compile-only", action="store_true", help="validate and compile, load nothing")
    check.set_defaults(func=cmd_check)

    reload = sub.add_parser("reload", help="validate the config, then make the running daemon apply it (SIGHUP)")
    with_config(reload)
    reload.set_defaults(func=cmd_reload)

    reopen = sub.add_parser(
        "reopen", help="make the running daemon reopen its JSON lines file, e.g. after logrotate (SIGUSR1)"
    )
    with_config(reopen)
    reopen.set_defaults(func=cmd_reopen)

    hooks = sub.add_parser("hooks", help="LSM hooks this kernel offers and which have a program")
    hooks.add_argument("--programs-dir")
    hooks.add_argument("--all", action="store_true", help="also list hooks without a program")
    hooks.set_defaults(func=cmd_hooks)

    doctor = sub.add_parser("doctor", help="can this machine run krsid? each failed check says what to do")
    doctor.add_argument("--cache-dir", default="/var/cache/krsid")
    doctor.add_argument("--require-lsm-load", action="store_true", help="exit 0 only if an LSM program can load here")
    doctor.set_defaults(func=cmd_doctor)
    docs = sub.add_parser("docs", help="print the field reference or journald catalog generated from programs/*.yaml")
    docs.add_argument("--programs-dir")
    docs.add_argument("--journal-catalog", action="store_true", help="the journald message catalog instead")
    docs.add_argument("--write", action="store_true", help="regenerate README.md's reference and systemd/krsid.catalog")
    docs.set_defaults(func=cmd_docs)
    return p


def _stdout_closed() -> int:
    """The reader of stdout went away (`krsid hooks --all | head -1`): end quietly, as a
    tool that SIGPIPE ended. Python ignores SIGPIPE, so the write raised instead; stdout
    now points at /dev/null so that the interpreter's last flush of what is still
    buffered cannot raise again ("Exception ignored ... BrokenPipeError")."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return EXIT_PIPE_CLOSED


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="krsid: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        rc: int = args.func(args)
        return rc
    except (ConfigError, CatalogError) as e:
        print(f"krsid: config error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BpfLsmInactiveError as e:
        print(f"krsid: error: {e}", file=sys.stderr)
        return EXIT_BPF_LSM_INACTIVE
    except KrsidError as e:
        print(f"krsid: error: {e}", file=sys.stderr)
        return EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    try:
        rc = _run(argv)
        sys.stdout.flush()  # a closed pipe raises here, not at exit where it cannot be caught
        return rc
    except BrokenPipeError:
        return _stdout_closed()
    except KeyboardInterrupt:
        # Ctrl-C (before `run` has its own SIGINT handler, e.g. while compiling): not a success.
        return EXIT_INTERRUPTED
    except SystemExit:
        # argparse after --help or a usage error: what it printed may meet a closed pipe too.
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _stdout_closed()
        raise


if __name__ == "__main__":
    sys.exit(main())
