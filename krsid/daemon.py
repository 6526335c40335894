"""Wires the stages together; does no stage's work itself.

start(): config -> plan (krsid.plan) -> compile, load and attach (pipeline.load)
-> the policy and options into the maps -> the event buffer (pipeline.transport)
-> the event path (pipeline.flow: decode, rule name, enrich, dispatch to the
sinks) -> metrics (krsid.metrics) -> READY (krsid.service). run(): the poll loop,
which waits on the transport, flushes the sinks, serves the signals (reload,
reopen, stop), feeds the watchdog and saves the sequence state. stop(): detach
everything (fail-open) and release the rest.

The live policy is krsid.policy's PolicyState; reload() re-reads the config and
hands the new policy to it (nothing is written before everything is checked).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from krsid.config import Config, load_config
from krsid.errors import ConfigError, KrsidError, ProgramLoadError, SinkError, UnsupportedKernelError
from krsid.identity.binary_hash import BinaryHasher
from krsid.pipeline.decode import EventDecoder
from krsid.pipeline.dispatch import Dispatcher
from krsid.pipeline.enrich import Enricher
from krsid.pipeline.flood import FloodSweeper
from krsid.pipeline.flow import EventPipeline
from krsid.pipeline.stats import PipelineStats
from krsid.pipeline.transport import BUSY_SINK_RETRY_MS, LANES, EventTransport
from krsid.plan import kernel_hooks, plan_build, require_bpf_lsm
from krsid.policy import CompiledRule, Policy, PolicyState, compile_policy
from krsid.service import Notifier, SeqState, pid_file_of, remove_pid_file, write_pid_file
from krsid.sinks.base import Sink
from krsid.watch import WatchConfig, WatchState, describe, resolve_watch

if TYPE_CHECKING:
    from krsid.kernel.bpfstats import BpfStats
    from krsid.kernel.probe import Check
    from krsid.pipeline.load import HookStatus, LoadedPrograms

log = logging.getLogger("krsid")

SEQ_SAVE_INTERVAL = 5.0
FLOOD_SWEEP_INTERVAL = 1.0  # how often the fair-share maps are read for floods gone quiet
WATCH_REFRESH_INTERVAL = 1.0  # s: re-resolve the watched paths and the rules' files and cgroups
RELEASE_HEAP_AFTER_BYTES = 4 << 20  # a sink backlog this big, once drained, is handed back to the kernel


def check_listen(host: str, port: int) -> None:
    """SinkError now if the metrics address cannot be bound (in use, not an address of
    this host), before the compile; serve() binds it for real after the attach."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the HTTP server does
            s.bind((host, port))
    except OSError as e:
        raise listen_error(host, port, e) from None


def listen_error(host: str, port: int, e: OSError) -> SinkError:
    return SinkError(f"sinks.prometheus.listen: cannot listen on {host}:{port}: {e.strerror or e}")


def build_sinks(config: Config) -> list[Sink]:
    sinks: list[Sink] = []
    if config.journald.enabled:
        from krsid.sinks.journald import JournaldSink

        sinks.append(JournaldSink(log=log.warning, backlog_bytes=config.journald.backlog_mb << 20))
    if config.jsonl.enabled:
        from krsid.sinks.jsonl import JsonlSink

        try:
            sinks.append(
                JsonlSink(config.jsonl.path, backlog_bytes=config.jsonl.backlog_mb << 20, format=config.jsonl.format)
            )
        except OSError as e:
            raise SinkError(f"sinks.jsonl.path: cannot open {config.jsonl.path}: {e.strerror or e}") from None
    return sinks


def daemon_process_key(pid: int | None = None, pidns_inode: int | None = None) -> int:
    """This process as a daemon_tgid option names it to the kernel (krsid.h,
    krsid_task_is_process): its pid as its own pid namespace sees it, and above it
    that namespace's inode number. Under systemd-nspawn or in a container getpid() is
    not the kernel's tgid, and the pair is what the kernel can compare at any level."""
    if pid is None:
        pid = os.getpid()
    if pidns_inode is None:
        pidns_inode = os.stat("/proc/self/ns/pid").st_ino
    if not 0 < pid < 1 << 32 or not 0 < pidns_inode < 1 << 32:
        raise ValueError(f"pid {pid} or pid namespace inode {pidns_inode} out of range")
    return pidns_inode << 32 | pid


class Daemon:
    # C appended to the BPF module: only for the load generator (tests/support/loadgen.py).
    extra_source = ""

    def __init__(
        self,
        config: Config,
        *,
        sinks: Sequence[Sink] | None = None,
        notifier: Notifier | None = None,
        available_hooks: Callable[[], Mapping[str, int]] = kernel_hooks,
        bpf_lsm_check: Callable[[], Check] | None = None,
    ) -> None:
        """bpf_lsm_check: is `bpf` an active LSM (default: ask the kernel)."""
        self.config = config
        self._bpf_lsm_check = bpf_lsm_check
        self.stats = PipelineStats()
        self.notifier = notifier or Notifier()
        self._available_hooks = available_hooks
        self._sinks = list(sinks) if sinks is not None else None
        self.programs: LoadedPrograms | None = None
        self.dispatcher: Dispatcher | None = None
        self.pipeline: EventPipeline | None = None
        self.transport: EventTransport | None = None  # the event buffer, opened by start()
        self.flood_sweeper: FloodSweeper | None = None  # writes the summaries of floods gone quiet
        self._stop = False
        self._seq_seeded = False
        self._opened_sinks: list[Sink] = []
        self.stop_signal = 0  # the signal that asked for the stop (the first one)
        self._metrics_server: object | None = None
        self._seq_state = SeqState(config.state_dir / "seq")
        identity = config.identity
        self.enricher = Enricher(
            process_table_size=identity.process_table_size,
            ancestors_depth=identity.ancestors_depth,
            exec_events=any(config.catalog[h.name].enrich.new_exe for h in config.enabled_hooks),
            # exe_sha256; the worker thread starts with the first event, stop() ends it.
            hasher=BinaryHasher(max_bytes=identity.hash_max_mb << 20, queue_size=identity.hash_queue, start=False)
            if identity.hash_max_mb and identity.hash_queue
            else None,
        )
        self.policy = PolicyState()
        self.watch = WatchState()  # the file-integrity watch: ids events carry, what the maps hold
        self._reload_requested = False
        self._reopen_requested = False
        self.reloads: Counter[str] = Counter()  # result -> count
        self.policy_refreshes = 0  # rules written again for a replaced file or cgroup (_refresh_policy)
        self._policy_refresh_error = ""  # why the last refresh could not compile ("": it could)
        self.last_reload_success = 0.0
        self.pid_file = pid_file_of(config.state_dir)
        self._bpf_stats: BpfStats | None = None
        # Loaded program -> the configured hook it serves (itself, or the hook a
        # fallback program stands in for): options, limits and rules go by the latter.
        self.serves: dict[str, str] = {}

    # -- start ---------------------------------------------------------------------------

    def build_programs(self) -> LoadedPrograms:
        """Compile the programs of the enabled hooks (nothing is loaded yet).

        state_dir/compiling marks a compile under way: if LLVM ends the process,
        the next start compiles each program alone first and leaves out the
        ones that fail (see compile_guard)."""
        from krsid.pipeline.load import LoadedPrograms

        specs, settings, self.serves = plan_build(self.config, self._available_hooks())
        if not specs:
            raise UnsupportedKernelError("none of the enabled hooks exists on this kernel")
        if self.extra_source:
            settings = dataclasses.replace(settings, extra_source=self.extra_source)
        log.info("kernel headers: %s", settings.header_source.description)
        programs = LoadedPrograms(
            self.config.catalog, specs, settings, log=log.error, compile_marker=self.config.state_dir / "compiling"
        )
        programs.build()
        log.info("compiled %d program(s) in %.2fs", len(programs.specs), programs.compile_seconds)
        return programs

    def start(self) -> None:
        from krsid.pipeline.load import disable_transparent_hugepages, release_free_heap

        t0 = time.monotonic()
        if not disable_transparent_hugepages():
            log.warning("transparent huge pages stay enabled for krsid (prctl refused): RSS may grow after the compile")
        self._install_signal_handlers()
        require_bpf_lsm(self._bpf_lsm_check)  # before a compile of a minute that would watch nothing
        # Destinations before the compile too: a path or port that cannot be opened is
        # a config error now, not after a minute of compiling and attaching.
        self._opened_sinks = self._sinks if self._sinks is not None else build_sinks(self.config)
        if self.config.prometheus.enabled:
            check_listen(self.config.prometheus.host, self.config.prometheus.port)
        programs = self.programs = self.build_programs()
        if self._stop:
            # A SIGTERM/SIGINT during the compile waited for it (LLVM cannot be
            # interrupted): stop now, before anything is attached; run() returns at once.
            log.info("stop requested during the compile: exiting before attaching anything")
            return

        # Options and the sequence seed go into the maps BEFORE attaching, so the
        # first event already obeys the config.
        programs.set_options(self._hook_options(self.config))
        programs.set_limits(self._hook_limits(self.config))
        programs.set_fair_share(self.config.fair_share)
        self._refresh_watch(self.config.watch, strict=True)
        programs.seed_sequence(self._seq_state.load())
        self._seq_seeded = True  # only now does the kernel's counter continue this boot's seq
        self._apply_policy(self.config.policy)

        status = self._attach(programs)
        release_free_heap()  # the compiler's freed memory would otherwise stay resident
        for st in status.values():
            if st.attached:
                log.info("hook %s: attached (%.2fs)", st.hook, st.load_seconds)
            else:
                log.error("hook %s: NOT attached: %s", st.hook, st.error)
        attached = [h for h, st in status.items() if st.attached]
        if not attached:
            programs.close()
            raise ProgramLoadError(
                "no hook could be attached:\n" + "\n".join(f"  {st.hook}: {st.error}" for st in status.values())
            )

        hooks_by_id = dict(enumerate(programs.specs))
        # Flood summaries carry the id one past the last hook (KRSID_FLOOD_HOOK_ID).
        flood_id = programs.max_hooks
        flood_spec = self.config.catalog.flood
        assert flood_spec is not None  # load_catalog sets it
        decoder = EventDecoder({**hooks_by_id, flood_id: flood_spec}, watch_entry=self.watch.table.entry)
        self.dispatcher = Dispatcher(self._opened_sinks, self.stats, log=log.warning)
        pipeline = self.pipeline = EventPipeline(
            decoder, self.policy.rule_name, self.enricher, self.dispatcher, self.stats
        )
        self.transport = programs.open_events({lane: pipeline.lane_handler(lane) for lane in LANES}, pipeline.lost)
        self.flood_sweeper = FloodSweeper(
            programs,
            flood_spec,
            flood_id,
            self.config.catalog.contract,
            pipeline.handle,
            self.config.fair_share.summary_interval_ms * 1_000_000,
            {i: s.name for i, s in hooks_by_id.items()},
            self.stats.flood_summaries_written,
        )
        self.stats.perf_buffer = self.transport.reports_losses  # its loss counter is exported from the start
        if self.config.bpf_stats:
            self._start_bpf_stats()
        self._start_metrics([s.name for s in programs.specs])
        self.cold_start_seconds = time.monotonic() - t0
        self.last_reload_success = time.time()
        write_pid_file(self.pid_file)
        status_line = f"attached {len(attached)}/{len(status)} hooks: {', '.join(attached)}"
        log.info("ready in %.2fs: %s", self.cold_start_seconds, status_line)
        self.notifier.notify(f"READY=1\nSTATUS={status_line}")

    def _attach(self, programs: LoadedPrograms) -> dict[str, HookStatus]:
        """Attach the hook programs (the load generator attaches its tracepoint instead)."""
        return programs.attach()

    def _program_of(self, hook: str) -> str | None:
        return next((program for program, served in self.serves.items() if served == hook), None)

    def _hook_options(self, config: Config) -> dict[str, dict[str, int | tuple[str, ...]]]:
        """Configured option values by loaded program, plus daemon_tgid options set to
        this process (daemon_process_key). A fallback declares the same options as its hook."""
        out: dict[str, dict[str, int | tuple[str, ...]]] = {}
        for h in config.enabled_hooks:
            program = self._program_of(h.name)
            if program is None:
                continue
            values = dict(h.options)
            for opt in config.catalog[program].options:
                if opt.kind == "daemon_tgid":
                    values[opt.name] = daemon_process_key()
            out[program] = values
        return out

    def _hook_limits(self, config: Config) -> dict[str, tuple[int, int]]:
        out = {}
        for h in config.enabled_hooks:
            program = self._program_of(h.name)
            if program is not None:
                out[program] = (h.rate_limit, h.dedup_window_ms)
        return out

    def _compile_policy(self, policy: Policy) -> dict[str, list[CompiledRule]]:
        """Compile the rules for the loaded programs (krsid.policy: cgroups and files are
        resolved now, ConfigError if gone; a fallback gets its hook's rules)."""
        assert self.programs is not None
        return compile_policy(policy, [s.name for s in self.programs.specs], self.serves)

    def _apply_policy(self, policy: Policy, compiled: dict[str, list[CompiledRule]] | None = None) -> None:
        """Write the compiled rules into the inactive bank and switch banks atomically."""
        assert self.programs is not None
        if compiled is None:
            compiled = self._compile_policy(policy)
        programs = [s.name for s in self.programs.specs]
        for r in self.policy.install(policy, programs, self.serves, compiled, self.programs):
            log.warning("policy rule %s: hook %s is not attached; the rule does nothing", r.name, r.hook)

    def rule_hits(self) -> Counter[tuple[str, str, str]]:
        return self.policy.hits(self.programs) if self.programs is not None else Counter()

    def request_reload(self, signum: int = 0, _frame: FrameType | None = None) -> None:
        self._reload_requested = True

    def reload(self) -> bool:
        """Re-read the config; apply new policy and options without detaching anything.

        A config that does not validate, or that changes which hooks are attached
        (that needs a recompile: restart krsid), is rejected and the old policy stays.
        So is any other failure, whatever raises it (BCC's plain Exception for a full
        map, an OSError, a bug): a reload never ends the daemon, and every rejection
        is counted in reloads["failure"].

        Everything that can be checked is checked before any map is written. Then the
        options and limits are written, and the rules go into the inactive bank; the
        bank switch is the last write, so a failure before it leaves the old rules
        active, and the options and limits are written back from the running config.
        """
        assert self.programs is not None
        programs = self.programs

        def rejected(e: BaseException, what: str) -> bool:
            self.reloads["failure"] += 1
            # A KrsidError says what is wrong for a person; anything else (BCC raises a
            # plain Exception) is named by its type, with the traceback at debug level.
            why = str(e) if isinstance(e, KrsidError) else f"{what}: {type(e).__name__}: {e}"
            if not isinstance(e, KrsidError):
                log.debug("what failed, in full:", exc_info=e)
            log.error("reload rejected, the previous policy stays in force: %s", why)
            return False

        # 1. Validate and compute everything; nothing is written yet. Against the
        #    catalog of the programs that run, never one read again from disk: a
        #    package upgrade may have changed a sidecar's field slots since the start,
        #    and rules compiled for the new slots would silently miss in the old code.
        try:
            new = load_config(Path(self.config.source), catalog=self.config.catalog)
            if new.programs_dir != self.config.programs_dir:
                raise ConfigError(
                    f"{new.source}: programs_dir changed; that needs a restart (was: {self.config.programs_dir})"
                )
            old_hooks = sorted((h.name, h.fallback) for h in self.config.enabled_hooks)
            if sorted((h.name, h.fallback) for h in new.enabled_hooks) != old_hooks:
                was = ", ".join(name if mode == "auto" else f"{name} (fallback: {mode})" for name, mode in old_hooks)
                raise ConfigError(
                    f"{new.source}: the set of enabled hooks (or a fallback setting) changed; "
                    f"that needs a restart (was: {was})"
                )
            compiled = self._compile_policy(new.policy)  # resolves cgroups and inodes: may fail
            options = self._hook_options(new)
            limits = self._hook_limits(new)
        except Exception as e:
            return rejected(e, f"reading {self.config.source} failed")

        # 2. Write: options, limits, then the rules into the inactive bank and the
        #    bank switch last (LoadedPrograms.apply_policy).
        try:
            programs.set_options(options)
            programs.set_limits(limits)
            programs.set_fair_share(new.fair_share)
            self._refresh_watch(new.watch, strict=True)
            self._apply_policy(new.policy, compiled)
        except Exception as e:
            # Options and limits are not banked: put the running config's values back.
            # The rules need nothing: the bank was not switched.
            try:
                programs.set_options(self._hook_options(self.config))
                programs.set_limits(self._hook_limits(self.config))
                programs.set_fair_share(self.config.fair_share)
                self._refresh_watch(self.config.watch, strict=True)
            except Exception as restore_error:
                log.critical(
                    "could not restore the previous hook options and limits (%s: %s): some may hold the "
                    "new values until the next successful reload or a restart; the previous rules stay active",
                    type(restore_error).__name__,
                    restore_error,
                )
            return rejected(e, "writing the new options or rules into the BPF maps failed")
        self.config = new
        if self.flood_sweeper is not None:
            self.flood_sweeper.summary_ns = new.fair_share.summary_interval_ms * 1_000_000
        self.reloads["success"] += 1
        self.last_reload_success = time.time()
        n = sum(len(r) for r in self.policy.rules.values())
        log.info("reloaded %s: %d policy rule(s) active", new.source, n)
        self.notifier.notify(f"STATUS=reloaded: {n} policy rule(s)")
        return True

    def program_costs(self) -> dict[str, tuple[int, int]]:
        """hook -> (runs, run time ns) while bpf_stats is on; {} otherwise."""
        if self._bpf_stats is None or self.programs is None:
            return {}
        out = {}
        for hook, fd in self.programs.program_fds().items():
            with contextlib.suppress(OSError):
                out[hook] = self._bpf_stats.run_stats(fd)
        return out

    def _start_bpf_stats(self) -> None:
        from krsid.kernel.bpfstats import BpfStats

        try:
            stats = BpfStats()
            stats.enable()
        except (OSError, KeyError, KrsidError) as e:
            log.warning("bpf_stats: cannot enable BPF run-time stats (%s); cost metrics stay absent", e)
            return
        self._bpf_stats = stats
        log.info("bpf_stats: kernel run-time stats on while krsid runs")

    def _start_metrics(self, hooks: list[str]) -> None:
        if not self.config.prometheus.enabled:
            return
        from krsid.metrics import KrsidCollector, make_registry, serve

        assert self.programs is not None
        registry = make_registry(
            KrsidCollector(
                self.stats, self.programs, hooks, self, self.enricher.processes, self.enricher.hasher, self.watch
            )
        )
        host, port = self.config.prometheus.host, self.config.prometheus.port
        try:
            self._metrics_server = serve(registry, host, port)
        except OSError as e:  # taken since check_listen, before the compile
            raise listen_error(host, port, e) from None
        log.info("metrics on http://%s:%d/metrics", self.config.prometheus.host, self.config.prometheus.port)

    # -- run / stop ----------------------------------------------------------------------

    def request_stop(self, signum: int = 0, _frame: FrameType | None = None) -> None:
        self._stop = True
        self.stop_signal = self.stop_signal or signum

    def request_reopen(self, signum: int = 0, _frame: FrameType | None = None) -> None:
        """SIGUSR1 (logrotate's postrotate, `krsid reopen`): reopen the JSON lines file."""
        self._reopen_requested = True

    def _install_signal_handlers(self) -> None:
        """Installed before the (slow) compile: the default actions of SIGHUP (reload)
        and SIGUSR1 (reopen: logrotate may send it at any time) would end the process,
        and a stop asked for mid-compile must be noted (the compile guard's watcher sees
        it too) instead of reading like a compiler crash. run() serves the requests.
        Only the main thread may set handlers (tests drive the daemon from others)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)
        signal.signal(signal.SIGUSR1, self.request_reopen)

    def run(self) -> None:
        if self._stop:  # asked to stop during start(): nothing was attached
            return
        assert self.programs is not None and self.dispatcher is not None and self.transport is not None
        self._install_signal_handlers()
        next_watchdog = 0.0
        next_save = time.monotonic() + SEQ_SAVE_INTERVAL
        next_sweep = time.monotonic() + FLOOD_SWEEP_INTERVAL
        next_watch = time.monotonic() + WATCH_REFRESH_INTERVAL
        timeout = self.config.poll_timeout_ms
        if self.notifier.watchdog_interval:
            timeout = min(timeout, int(self.notifier.watchdog_interval * 1000))
        from krsid.pipeline.load import release_free_heap

        while not self._stop:
            self._wait_and_read(timeout)
            if self._reopen_requested:
                # Before the flush: what was queued goes to the old file, then the reopen.
                self._reopen_requested = False
                self.dispatcher.reopen()
            self.dispatcher.flush()
            if self.dispatcher.take_drained_peak() >= RELEASE_HEAP_AFTER_BYTES:
                release_free_heap()  # a drained backlog's memory would stay in malloc's arenas
            if self._reload_requested:
                self._reload_requested = False
                self.reload()
            now = time.monotonic()
            # The watchdog is fed from the poll loop itself: a hung poller gets restarted.
            if self.notifier.watchdog_interval and now >= next_watchdog:
                self.notifier.notify("WATCHDOG=1")
                next_watchdog = now + self.notifier.watchdog_interval
            if now >= next_save:
                self._seq_state.save(self.programs.current_sequence(), clean=False)
                next_save = now + SEQ_SAVE_INTERVAL
            if now >= next_sweep:
                self._sweep_floods()
                next_sweep = now + FLOOD_SWEEP_INTERVAL
            if now >= next_watch:
                self._refresh_watch(self.config.watch)
                self._refresh_policy()
                next_watch = now + WATCH_REFRESH_INTERVAL

    def _refresh_watch(self, watch: WatchConfig, *, strict: bool = False) -> None:
        """Resolve the watched paths again and write the maps if anything changed.

        Run at start and at every reload (strict: a failed write raises, and the reload
        is rejected and restores), and every WATCH_REFRESH_INTERVAL from the poll loop
        (a failure is logged, and retried at the next refresh): a watched file that is
        replaced (passwd writes /etc/nshadow and renames it over /etc/shadow) is a new
        inode, and a watched directory may be created after krsid started. The
        replacement itself is reported (inode_rename); the new inode is watched from
        the next refresh on."""
        assert self.programs is not None
        resolved = resolve_watch(watch, self.watch.table, self.config.catalog.contract)
        current = self.watch.current
        if resolved == current:
            return
        if strict or current is None or resolved.missing != current.missing:
            log.info("file-integrity watch: %s", describe(resolved))
        self.watch.current = None  # unknown until the write completes: the next refresh rewrites
        try:
            self.programs.set_watch(resolved)
        except Exception as e:
            if strict:
                raise
            log.warning("file-integrity watch: writing the maps failed: %s: %s", type(e).__name__, e)
            return
        self.watch.current = resolved

    def _refresh_policy(self) -> None:
        """Compile the running policy again; when a rule's file or cgroup is no longer
        what the maps hold, write the rules again (the same bank switch as a reload).

        Run every WATCH_REFRESH_INTERVAL from the poll loop. A binary replaced by a
        package upgrade is a new inode, and a service's cgroup is made again when
        the service restarts: without this, their exe, exe_prefix, path_prefix and
        cgroup rules would silently stop matching until the next reload. A compile
        that fails (a rule's file or cgroup is gone for now) keeps the rules as they
        are, logged once per cause."""
        assert self.programs is not None
        try:
            compiled = self._compile_policy(self.config.policy)
        except Exception as e:
            self._policy_not_refreshed("a file or cgroup they name is not there now", e)
            return
        if compiled == self.policy.compiled:
            self._policy_refresh_error = ""
            return
        try:
            self._apply_policy(self.config.policy, compiled)
        except Exception as e:  # the bank was not switched: the loaded rules stay active
            self._policy_not_refreshed("writing them again failed", e)
            return
        self._policy_refresh_error = ""
        self.policy_refreshes += 1
        log.info("policy: a file or cgroup a rule names was replaced; the rules now match the new one")

    @property
    def policy_stale(self) -> bool:
        """The last refresh could not compile the rules: one names a file or cgroup that is not there now."""
        return bool(self._policy_refresh_error)

    def _policy_not_refreshed(self, what: str, e: Exception) -> None:
        """Log why a refresh left the rules as loaded, once per cause (it runs every second)."""
        why = f"{what}: {e if isinstance(e, KrsidError) else f'{type(e).__name__}: {e}'}"
        if why != self._policy_refresh_error:
            log.warning("policy: the rules stay as loaded, %s", why)
        self._policy_refresh_error = why

    def _sweep_floods(self, *, everything: bool = False) -> None:
        """Write the flood summaries the kernel could not (their key went quiet)."""
        if self.flood_sweeper is None:
            return
        try:
            self.flood_sweeper.sweep(everything=everything)
        except Exception as e:  # a map read failing must not end the daemon; retried next time
            log.warning("flood summaries: reading the fair-share maps failed: %s: %s", type(e).__name__, e)

    def _wait_and_read(self, timeout_ms: int) -> None:
        """Wait for records OR room in a busy sink, then read every record waiting.

        A sink whose destination is busy (journald's short receive queue is full) is
        retried as soon as it can take data, without ever waiting on it alone: the
        event buffer is read whatever the sinks do.
        """
        assert self.transport is not None and self.dispatcher is not None
        self.stats.poll_wakeups += 1
        fds, timer = self.dispatcher.blocked_sinks()
        if timer:
            timeout_ms = min(timeout_ms, BUSY_SINK_RETRY_MS)
        self.transport.wait_and_read(timeout_ms, fds)

    def stop(self) -> None:
        self.notifier.notify("STOPPING=1")
        if self.programs is not None:
            # Read what is already in the buffer, then detach (fail-open: nothing
            # stays attached, nothing stays denied).
            if self.transport is not None:
                with contextlib.suppress(Exception):
                    self.transport.read_pending()
                self._sweep_floods(everything=True)  # a flood's last period is said before exit
                if self.dispatcher is not None:
                    with contextlib.suppress(Exception):
                        self.dispatcher.flush()
            if self._seq_seeded:  # else the map holds 0, not this boot's last seq
                with contextlib.suppress(Exception):
                    self._seq_state.save(self.programs.current_sequence(), clean=True)
            self.programs.close()
        if self._bpf_stats is not None:
            self._bpf_stats.close()
        remove_pid_file(self.pid_file)
        if self.dispatcher is not None:
            self.dispatcher.close()
        else:  # stopped before the pipeline existed: the sinks were opened alone
            for sink in self._opened_sinks:
                with contextlib.suppress(Exception):
                    sink.close()
        server = self._metrics_server
        if server is not None:
            with contextlib.suppress(Exception):
                server.shutdown()  # type: ignore[attr-defined]
        self.enricher.close()
