"""The exceptions krsid raises on purpose; each one carries a message meant for a person."""

from __future__ import annotations


class KrsidError(Exception):
    """Base class: anything krsid reports as a clean error instead of a traceback."""


class ConfigError(KrsidError):
    """A configuration file (or a hook's sidecar YAML) is malformed or invalid."""


class CatalogError(KrsidError):
    """The programs directory is inconsistent: a .c without .yaml, a bad layout, ..."""


class HeaderError(KrsidError):
    """No usable kernel headers: neither /lib/modules/<release>/build nor a BTF tree."""


class UnsupportedKernelError(KrsidError):
    """The running kernel cannot run BPF-LSM programs (not built, not active, refused)."""


class ProgramLoadError(KrsidError):
    """BCC failed to compile, load or attach a program."""


class BpfLsmInactiveError(UnsupportedKernelError):
    """`bpf` is not among the active LSMs: programs would attach and never run. Permanent
    until a reboot with lsm=...,bpf, so systemd must not restart krsid for it (exit 3)."""


class BpfAtomicsMissingError(BpfLsmInactiveError):
    """The kernel's BPF verifier has no atomic fetch-and-add (before Linux 5.12), which
    every krsid program uses for its sequence numbers: each would be rejected after a
    compile of a minute. Permanent until a boot into a newer kernel, so, like an
    inactive BPF-LSM, exit 3 (cli.py maps BpfLsmInactiveError and its subclasses to it)."""


class SinkError(ConfigError):
    """A sink's destination cannot be opened at start (an unwritable JSON lines path, a
    metrics port in use): checked before the compile; exit 2, which the unit does not
    retry, since restarting every 2 s with a full compile cannot fix the config."""
