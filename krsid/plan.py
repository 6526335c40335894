"""Hook planning: which program serves which enabled hook on this kernel, and how to build them.

The kernel's BTF says which LSM hooks exist (and their argument counts); the config
says which hooks are wanted and whether a fallback program may stand in for one the
kernel lacks. plan_build turns that into what pipeline.load compiles: the programs,
the headers and the event buffer kind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from krsid.catalog import HookSpec
from krsid.config import BUFFER_AUTO, Config
from krsid.errors import BpfAtomicsMissingError, BpfLsmInactiveError, KrsidError, UnsupportedKernelError
from krsid.kernel.btf import VMLINUX_BTF, lsm_hook_arity
from krsid.kernel.headers import resolve_headers
from krsid.pipeline.transport import PERFBUF

if TYPE_CHECKING:
    from krsid.kernel.probe import Check
    from krsid.pipeline.load import BuildSettings

log = logging.getLogger("krsid")


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


def require_bpf_lsm(check: Callable[[], Check] | None = None, atomics_check: Callable[[], Check] | None = None) -> None:
    """Refuse to start, before the compile, on a kernel that cannot run krsid: `bpf` is
    not an active LSM (BpfLsmInactiveError: the programs would attach and never run),
    or the verifier has no atomic fetch-and-add (BpfAtomicsMissingError, before 5.12:
    every program would be rejected). An unreadable LSM list is only a warning."""
    from krsid.kernel.probe import bpf_atomics_check, bpf_lsm_active_check

    result = (check or bpf_lsm_active_check)()
    if result.ok is False:
        raise BpfLsmInactiveError(
            f"BPF-LSM is not active on this kernel ({result.detail}); {result.remedy}. "
            'See `krsid doctor` and the README\'s "Enabling BPF-LSM".'
        )
    if result.ok is None:
        log.warning("cannot tell whether BPF-LSM is active (%s): %s", result.detail, result.remedy)
    atomics = (atomics_check or bpf_atomics_check)()
    if atomics.ok is False:
        raise BpfAtomicsMissingError(f"{atomics.detail}; {atomics.remedy}. See `krsid doctor`.")


def plan_build(config: Config, available: Mapping[str, int]) -> tuple[list[HookSpec], BuildSettings, dict[str, str]]:
    """What to compile and how: the programs serving the enabled hooks on this kernel,
    headers, buffer kind; and program name -> the configured hook it serves."""
    from krsid.kernel.probe import ringbuf_available
    from krsid.pipeline.load import BuildSettings

    selected = select_hooks(config, available)
    specs = list(selected.values())
    headers = resolve_headers(config.cache_dir, prefer=config.headers)
    use_perf = config.buffer_kind == PERFBUF or (config.buffer_kind == BUFFER_AUTO and not ringbuf_available())
    nargs = {s.name: available[s.name] for s in specs}
    serves = {spec.name: hook for hook, spec in selected.items()}
    settings = BuildSettings(
        headers,
        nargs,
        config.ringbuf_pages,
        use_perf,
        wakeup_events=config.wakeup_events,
        priority_pages=config.priority_pages,
    )
    return specs, settings, serves
