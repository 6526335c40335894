"""Wires the stages together: config -> load/attach -> poll -> decode -> dispatch -> sinks.

Also owns the service protocol: sd_notify READY/STATUS/WATCHDOG/STOPPING, signals,
and the sequence-number state file that keeps seq monotonic across restarts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import select
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from krsid.catalog import HookSpec
from krsid.config import Config, load_config
from krsid.errors import ConfigError, KrsidError, ProgramLoadError, UnsupportedKernelError
from krsid.kernel.btf import VMLINUX_BTF, lsm_hook_arity
from krsid.kernel.headers import resolve_headers
from krsid.pipeline.decode import EventDecoder
from krsid.pipeline.dispatch import Dispatcher
from krsid.pipeline.enrich import Enricher
from krsid.pipeline.stats import STAGE_DECODE, STAGE_PERFBUF, PipelineStats
from krsid.policy import CompiledRule, Policy, Rule, compile_rules
from krsid.sinks.base import Sink

if TYPE_CHECKING:
    from krsid.kernel.bpfstats import BpfStats
    from krsid.pipeline.load import BuildSettings, HookStatus, LoadedPrograms

log = logging.getLogger("krsid")

# After an unclean stop the state file may lag the kernel's counter; jumping ahead
# by this much keeps seq strictly increasing (a visible gap, never a repeat).
SEQ_CRASH_JUMP = 1 << 24
SEQ_SAVE_INTERVAL = 5.0
BUSY_SINK_RETRY_MS = 10
RELEASE_HEAP_AFTER_BYTES = 4 << 20  # a sink backlog this big, once drained, is handed back to the kernel


class Notifier:
    """sd_notify without libsystemd: one datagram to $NOTIFY_SOCKET, if any."""

    def __init__(self, socket_path: str | None = None) -> None:
        path = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET", "")
        if path.startswith("@"):
            path = "\0" + path[1:]  # abstract namespace
        self._path = path
        usec = os.environ.get("WATCHDOG_USEC", "")
        wd_pid = os.environ.get("WATCHDOG_PID", "")
        mine = not wd_pid or wd_pid == str(os.getpid())
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and mine else 0.0

    def notify(self, state: str) -> None:
        if not self._path:
            return
        # MSG_DONTWAIT: a full receiver queue must never stall the poll loop.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s, contextlib.suppress(OSError):
            s.sendto(state.encode(), socket.MSG_DONTWAIT, self._path)


def kernel_hooks(btf_path: Path = VMLINUX_BTF) -> dict[str, int]:
    """LSM hooks this kernel offers (bpf_lsm_* in BTF) with their argument counts."""
    try:
        return lsm_hook_arity(btf_path)
    except KrsidError:
        raise
    except Exception as e:  # a BTF reader bug must still read as a clean error
        raise UnsupportedKernelError(f"cannot read the kernel's BTF ({btf_path}): {e}") from e


def select_hooks(config: Config, available: Mapping[str, int]) -> dict[str, HookSpec]:
    """Enabled hook -> the program that serves it on this kernel: its own, or its
    fallback (a catalog program with fallback_for) where the kernel lacks the hook or
    the config says fallback: always. A hook served by neither is left out with one
    warning."""
    out: dict[str, HookSpec] = {}
    for hc in config.enabled_hooks:
        own = config.catalog[hc.name]
        fallback = config.catalog.fallback_of(hc.name)
        if fallback is None or hc.fallback == "never":
            if hc.name in available:
                out[hc.name] = own
            else:
                why = " (fallback: never)" if fallback is not None else ""
                log.warning("hook %s: this kernel has no bpf_lsm_%s; skipping it%s", hc.name, hc.name, why)
            continue
        if hc.fallback == "auto" and hc.name in available:
            out[hc.name] = own
        elif fallback.name in available:
            if hc.fallback == "always":
                log.info("hook %s: served by its fallback %s (fallback: always)", hc.name, fallback.name)
            else:
                log.warning(
                    "hook %s: this kernel has no bpf_lsm_%s; using its fallback %s instead (events carry "
                    "hook=%s and its own MESSAGE_ID; %s's policy rules apply)",
                    hc.name,
                    hc.name,
                    fallback.name,
                    fallback.name,
                    hc.name,
                )
            out[hc.name] = fallback
        else:
            missing = fallback.name if hc.fallback == "always" else f"{hc.name} nor bpf_lsm_{fallback.name}"
            log.warning(
                "hook %s: this kernel has no bpf_lsm_%s (fallback: %s); skipping it", hc.name, missing, hc.fallback
            )
    return out


def plan_build(config: Config, available: Mapping[str, int]) -> tuple[list[HookSpec], BuildSettings, dict[str, str]]:
    """What to compile and how: the programs serving the enabled hooks on this kernel,
    headers, buffer kind; and program name -> the configured hook it serves."""
    from krsid.kernel.probe import ringbuf_available
    from krsid.pipeline.load import BuildSettings

    selected = select_hooks(config, available)
    specs = list(selected.values())
    headers = resolve_headers(config.cache_dir, prefer=config.headers)
    use_perf = config.buffer_kind == "perfbuf" or (config.buffer_kind == "auto" and not ringbuf_available())
    nargs = {s.name: available[s.name] for s in specs}
    serves = {spec.name: hook for hook, spec in selected.items()}
    settings = BuildSettings(headers, nargs, config.ringbuf_pages, use_perf, wakeup_events=config.wakeup_events)
    return specs, settings, serves


@dataclass
class SeqState:
    """last seq per boot in state_dir/seq: 'BOOT_ID SEQ clean|running'."""

    path: Path

    @staticmethod
    def boot_id() -> str:
        try:
            return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            return "unknown"

    def load(self) -> int:
        try:
            boot, seq, state = self.path.read_text().split()
        except (OSError, ValueError):
            return 0
        if boot != self.boot_id():
            return 0
        return int(seq) if state == "clean" else int(seq) + SEQ_CRASH_JUMP

    def save(self, seq: int, *, clean: bool) -> None:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(f"{self.boot_id()} {seq} {'clean' if clean else 'running'}\n")
            os.replace(tmp, self.path)
        except OSError as e:
            log.warning("cannot save sequence state to %s: %s", self.path, e)


def build_sinks(config: Config) -> list[Sink]:
    sinks: list[Sink] = []
    if config.journald.enabled:
        from krsid.sinks.journald import JournaldSink

        sinks.append(JournaldSink(log=log.warning, backlog_bytes=config.journald.backlog_mb << 20))
    if config.jsonl.enabled:
        from krsid.sinks.jsonl import JsonlSink

        sinks.append(JsonlSink(config.jsonl.path, backlog_bytes=config.jsonl.backlog_mb << 20))
    return sinks


class PolicyState:
    """The active policy's rules by slot, and hit counts carried over from retired banks.

    Kernel hit counters live per bank slot; a reload moves to the other bank, so
    the old bank's counts are folded into ``retired`` (keyed by hook, rule name and
    action) to keep the Prometheus counters monotonic across reloads.
    """

    def __init__(self) -> None:
        self.bank = 0
        self.rules: dict[str, list[Rule]] = {}
        self.retired: Counter[tuple[str, str, str]] = Counter()

    def rule_name(self, hook: str, rule_no: int) -> str:
        rules = self.rules.get(hook, [])
        return rules[rule_no - 1].name if 0 < rule_no <= len(rules) else ""

    def hits(self, programs: LoadedPrograms) -> Counter[tuple[str, str, str]]:
        out = Counter(self.retired)
        for hook, rules in self.rules.items():
            for slot, rule in enumerate(rules):
                out[(hook, rule.name, rule.action)] += programs.rule_hits(self.bank, hook, slot)
        return out


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
    ) -> None:
        self.config = config
        self.stats = PipelineStats()
        self.notifier = notifier or Notifier()
        self._available_hooks = available_hooks
        self._sinks = list(sinks) if sinks is not None else None
        self.programs: LoadedPrograms | None = None
        self.dispatcher: Dispatcher | None = None
        self.decoder: EventDecoder | None = None
        self._stop = False
        self._metrics_server: object | None = None
        self._seq_state = SeqState(config.state_dir / "seq")
        self.enricher = Enricher()
        self.policy = PolicyState()
        self._reload_requested = False
        self.reloads: Counter[str] = Counter()  # result -> count
        self.last_reload_success = 0.0
        self.pid_file = config.state_dir / "krsid.pid"
        self._bpf_stats: BpfStats | None = None
        self._events_fd = -1  # the ring buffer's map fd, polled with busy sinks' fds
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
        from krsid.pipeline.load import release_free_heap

        t0 = time.monotonic()
        programs = self.programs = self.build_programs()

        # Options and the sequence seed go into the maps BEFORE attaching, so the
        # first event already obeys the config.
        programs.set_options(self._hook_options(self.config))
        programs.set_limits(self._hook_limits(self.config))
        programs.seed_sequence(self._seq_state.load())
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

        self.decoder = EventDecoder({i: s for i, s in enumerate(programs.specs)})
        sinks = self._sinks if self._sinks is not None else build_sinks(self.config)
        self.dispatcher = Dispatcher(sinks, self.stats, log=log.warning)
        programs.open_events(self._on_record, self._on_perf_lost)
        self._events_fd = programs.events_fd()  # -1 with a perf buffer
        if self.config.bpf_stats:
            self._start_bpf_stats()
        self._start_metrics([s.name for s in programs.specs])
        self.cold_start_seconds = time.monotonic() - t0
        self.last_reload_success = time.time()
        self._write_pid_file()
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
        this process's id. A fallback declares the same options as its hook."""
        out: dict[str, dict[str, int | tuple[str, ...]]] = {}
        for h in config.enabled_hooks:
            program = self._program_of(h.name)
            if program is None:
                continue
            values = dict(h.options)
            for opt in config.catalog[program].options:
                if opt.kind == "daemon_tgid":
                    values[opt.name] = os.getpid()
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
        """Compile the rules, resolving cgroup paths and files to ids now (ConfigError if
        gone). A fallback program gets the rules of the hook it serves."""
        assert self.programs is not None
        return {s.name: compile_rules(policy.for_hook(self.serves.get(s.name, s.name))) for s in self.programs.specs}

    def _apply_policy(self, policy: Policy, compiled: dict[str, list[CompiledRule]] | None = None) -> None:
        """Write the compiled rules into the inactive bank and switch banks atomically."""
        assert self.programs is not None
        per_hook = {s.name: policy.for_hook(self.serves.get(s.name, s.name)) for s in self.programs.specs}
        if compiled is None:
            compiled = self._compile_policy(policy)
        old = self.policy.hits(self.programs) if self.policy.rules else Counter()
        self.policy.bank = self.programs.apply_policy(compiled)
        self.policy.retired = old
        self.policy.rules = {h: rules for h, rules in per_hook.items() if rules}
        served = {self.serves.get(s.name, s.name) for s in self.programs.specs}
        for r in policy.rules:
            if r.hook not in served:
                log.warning("policy rule %s: hook %s is not attached; the rule does nothing", r.name, r.hook)

    def rule_hits(self) -> Counter[tuple[str, str, str]]:
        return self.policy.hits(self.programs) if self.programs is not None else Counter()

    def request_reload(self, signum: int = 0, _frame: FrameType | None = None) -> None:
        self._reload_requested = True

    def reload(self) -> bool:
        """Re-read the config; apply new policy and options without detaching anything.

        A config that does not validate, or that changes which hooks are attached
        (that needs a recompile: restart krsid), is rejected and the old policy stays.
        """
        assert self.programs is not None
        try:
            new = load_config(Path(self.config.source))
            old_hooks = sorted((h.name, h.fallback) for h in self.config.enabled_hooks)
            if sorted((h.name, h.fallback) for h in new.enabled_hooks) != old_hooks:
                was = ", ".join(name if mode == "auto" else f"{name} (fallback: {mode})" for name, mode in old_hooks)
                raise ConfigError(
                    f"{new.source}: the set of enabled hooks (or a fallback setting) changed; "
                    f"that needs a restart (was: {was})"
                )
            compiled = self._compile_policy(new.policy)  # may fail: before anything is written
            self.programs.set_options(self._hook_options(new))
            self.programs.set_limits(self._hook_limits(new))
            self._apply_policy(new.policy, compiled)
        except KrsidError as e:
            self.reloads["failure"] += 1
            log.error("reload rejected, the previous policy stays in force: %s", e)
            return False
        self.config = new
        self.reloads["success"] += 1
        self.last_reload_success = time.time()
        n = sum(len(r) for r in self.policy.rules.values())
        log.info("reloaded %s: %d policy rule(s) active", new.source, n)
        self.notifier.notify(f"STATUS=reloaded: {n} policy rule(s)")
        return True

    def _write_pid_file(self) -> None:
        try:
            self.pid_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.pid_file.write_text(f"{os.getpid()}\n")
        except OSError as e:
            log.warning("cannot write %s (krsid reload needs it): %s", self.pid_file, e)

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
        from krsid.sinks.prometheus import KrsidCollector, make_registry, serve

        assert self.programs is not None
        registry = make_registry(KrsidCollector(self.stats, self.programs, hooks, self))
        self._metrics_server = serve(registry, self.config.prometheus.host, self.config.prometheus.port)
        log.info("metrics on http://%s:%d/metrics", self.config.prometheus.host, self.config.prometheus.port)

    # -- event path ----------------------------------------------------------------------

    def _on_record(self, raw: bytes) -> None:
        # Runs inside bcc's C callback: an exception here would be printed and lost,
        # so everything is caught and counted.
        assert self.decoder is not None and self.dispatcher is not None
        try:
            event = self.decoder.decode(raw)
        except Exception:  # DecodeError, or a decoder bug: count it, keep polling
            spec = self.decoder.hook_of(raw)
            self.stats.lost[(spec.name if spec else "unknown", STAGE_DECODE)] += 1
            return
        rule_no = event.values.get("rule")
        if isinstance(rule_no, int):
            event.values["rule"] = self.policy.rule_name(event.hook, rule_no)
        try:
            self.enricher.enrich(event)
        except Exception:  # context is a bonus: deliver the event without it
            self.stats.enrich_errors += 1
        self.dispatcher.handle(event)

    def _on_perf_lost(self, count: int) -> None:
        self.stats.lost[("unknown", STAGE_PERFBUF)] += count

    # -- run / stop ----------------------------------------------------------------------

    def request_stop(self, signum: int = 0, _frame: FrameType | None = None) -> None:
        self._stop = True

    def run(self) -> None:
        assert self.programs is not None and self.dispatcher is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)
        next_watchdog = 0.0
        next_save = time.monotonic() + SEQ_SAVE_INTERVAL
        timeout = self.config.poll_timeout_ms
        if self.notifier.watchdog_interval:
            timeout = min(timeout, int(self.notifier.watchdog_interval * 1000))
        from krsid.pipeline.load import release_free_heap

        while not self._stop:
            self._wait_and_drain(timeout)
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

    def _wait_and_drain(self, timeout_ms: int) -> None:
        """Wait for records in the ring buffer OR room in a busy sink, then drain.

        A sink whose destination is busy (journald's short receive queue is full) is
        retried as soon as it polls writable, without ever waiting on it alone: the
        ring buffer is drained whatever the sinks do.
        """
        assert self.programs is not None and self.dispatcher is not None
        events_fd = self._events_fd
        fds, timer = self.dispatcher.blocked_sinks()
        if timer:
            timeout_ms = min(timeout_ms, BUSY_SINK_RETRY_MS)
        if events_fd < 0:  # perf buffer: bcc's own poll
            self.programs.poll(BUSY_SINK_RETRY_MS if fds else timeout_ms)
            return
        poller = select.poll()
        poller.register(events_fd, select.POLLIN)
        for fd in fds:
            poller.register(fd, select.POLLOUT)
        with contextlib.suppress(InterruptedError):
            poller.poll(timeout_ms)
        self.programs.consume()

    def stop(self) -> None:
        self.notifier.notify("STOPPING=1")
        if self.programs is not None:
            # Drain what is already in the buffer, then detach (fail-open: nothing
            # stays attached, nothing stays denied).
            with contextlib.suppress(Exception):
                self.programs.poll(0)
            with contextlib.suppress(Exception):
                self._seq_state.save(self.programs.current_sequence(), clean=True)
            self.programs.close()
        if self._bpf_stats is not None:
            self._bpf_stats.close()
        with contextlib.suppress(OSError):
            self.pid_file.unlink()
        if self.dispatcher is not None:
            self.dispatcher.close()
        server = self._metrics_server
        if server is not None:
            with contextlib.suppress(Exception):
                server.shutdown()  # type: ignore[attr-defined]
