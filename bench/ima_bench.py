"""Binary hashes from the kernel (IMA, fs-verity) against krsid's worker (bench/run.py ima).

Issue 12 asks to measure what the kernel offers against hashing in user space. In
the VM (a throw-away boot: IMA's policy can be loaded once per boot):

- **krsid's way**: the worker thread reads the file and hashes it with hashlib,
  off the exec path, once per (dev, ino, size, mtime, ctime); the exec itself does
  not wait for it.
- **IMA**: with the policy ``measure func=BPRM_CHECK`` loaded, the kernel hashes
  every executed file inside execve, before the program runs, and caches the
  result per inode until the file changes. This is what ``bpf_ima_file_hash``
  would return from a sleepable LSM program (which BCC cannot load: its
  ``load_func`` passes no BPF_F_SLEEPABLE); without a policy, that helper hashes
  the whole file again on every call, inside the hook.
- **fs-verity**: ``bpf_get_fsverity_digest`` gives the Merkle-tree root of a file
  that has fs-verity enabled: not a sha256 of its content, and only for such
  files; how many binaries in /usr/bin have it is counted.

Printed: the exec time of a fresh copy of a large binary (first exec of the inode)
and of a second exec of it, without and with IMA's exec policy; the worker's time
to hash the same file; and whether IMA's measurement (its ascii list) equals the
sha256 krsid computes. Under TCG every absolute number is emulator-bound; the
kernel's and Python's sha256 are both emulated, so compare within the table.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import statistics
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import table
from krsid.identity.binary_hash import BinaryHasher, key_of

SECURITYFS = Path("/sys/kernel/security")
IMA = SECURITYFS / "ima"
EXEC_POLICY = "measure func=BPRM_CHECK\n"
FS_IOC_MEASURE_VERITY = 0xC0046686  # _IOWR('f', 134, struct fsverity_digest)
PAD_MB = 64  # bytes appended to /bin/true: the ELF loader ignores them, hashes do not


def _exec_seconds(path: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([str(path)], check=True)
    return time.perf_counter() - t0


def _fresh_binary(directory: Path, name: str) -> Path:
    """A new inode: /bin/true with PAD_MB of random bytes after it (still runs)."""
    path = directory / f"big-true-{name}"
    shutil.copy2("/bin/true", path)
    with open(path, "ab") as f:
        for _ in range(PAD_MB):
            f.write(os.urandom(1 << 20))
    os.sync()
    return path


def _exec_times(directory: Path, rounds: int, tag: str) -> tuple[list[float], list[float], list[Path]]:
    first, again, paths = [], [], []
    for i in range(rounds):
        p = _fresh_binary(directory, f"{tag}-{i}")
        subprocess.run(["cat", str(p)], stdout=subprocess.DEVNULL, check=True)  # in the page cache: hashing, not I/O
        first.append(_exec_seconds(p))
        again.append(_exec_seconds(p))
        paths.append(p)
    return first, again, paths


def _worker_seconds(paths: list[Path]) -> list[float]:
    """krsid's worker on each file, as for an exec whose process is gone (path + identity)."""
    out = []
    for p in paths:
        h = BinaryHasher(proc_root=p.parent / "no-proc")
        try:
            t0 = time.perf_counter()
            h.request(1, "bench", key_of(p.stat()), str(p).encode())
            assert h.wait_idle(600)
            out.append(time.perf_counter() - t0)
            assert h.stats.hashed_files == 1, h.stats
        finally:
            h.close()
    return out


def _ima_measurements() -> dict[str, str]:
    """path -> sha256 hex from IMA's list (templates ima-ng and ima-sig, Debian's:
    'PCR template-hash ima-sig sha256:<hex> <path> [<signature>]'; the bench's
    paths have no spaces)."""
    out = {}
    for line in (IMA / "ascii_runtime_measurements").read_text().splitlines():
        fields = line.split(" ")
        for i, f in enumerate(fields[:-1]):
            if f.startswith("sha256:"):
                out[fields[i + 1]] = f.split(":", 1)[1]
                break
    return out


def _verity_count(directory: Path) -> tuple[int, int]:
    with_verity = total = 0
    for p in directory.iterdir():
        if not p.is_file() or p.is_symlink():
            continue
        total += 1
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            fcntl.ioctl(fd, FS_IOC_MEASURE_VERITY, bytearray(struct.pack("HH", 0, 64) + bytes(64)))
            with_verity += 1
        except OSError:
            pass  # ENODATA: no verity; EOPNOTSUPP: the filesystem has none
        finally:
            os.close(fd)
    return with_verity, total


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e3:.0f} ms ({min(values) * 1e3:.0f}-{max(values) * 1e3:.0f})"


def main(args: argparse.Namespace) -> None:
    if not (IMA / "policy").exists():
        subprocess.run(["mount", "-t", "securityfs", "securityfs", str(SECURITYFS)], check=False)
    if not (IMA / "policy").exists():
        raise SystemExit(f"bench/run.py ima: no {IMA}/policy (a kernel without IMA?)")
    rounds = max(3, args.repeat)
    with tempfile.TemporaryDirectory(prefix="krsid-ima-") as tmp:
        scratch = Path(tmp)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1g", "krsid-ima", str(scratch)], check=True)
        try:
            before_first, before_again, paths = _exec_times(scratch, rounds, "before")
            worker = _worker_seconds(paths)
            for p in paths:
                p.unlink()
            (IMA / "policy").write_text(EXEC_POLICY)  # once per boot: the VM is thrown away
            ima_first, ima_again, paths = _exec_times(scratch, rounds, "ima")
            measured = _ima_measurements()
            agree = sum(measured.get(str(p)) == hashlib.sha256(p.read_bytes()).hexdigest() for p in paths)
        finally:
            subprocess.run(["umount", str(scratch)], check=False)
    verity, binaries = _verity_count(Path("/usr/bin"))
    size_mb = PAD_MB + os.path.getsize("/bin/true") / (1 << 20)
    table(
        f"Binary hashes: the kernel's (IMA) against krsid's worker, {size_mb:.0f} MB binaries, "
        f"{rounds} fresh copies each (median, min-max; TCG: compare within the table)",
        ["measure", "value"],
        [
            ["exec, first of a new file, no IMA policy", _ms(before_first)],
            ["exec, again, no IMA policy", _ms(before_again)],
            ["exec, first of a new file, IMA `measure func=BPRM_CHECK`", _ms(ima_first)],
            ["exec, again, IMA (cached per inode)", _ms(ima_again)],
            ["krsid's worker hashing the same file (off the exec path)", _ms(worker)],
            ["IMA's sha256 equals krsid's", f"{agree} of {len(paths)} files"],
            ["files in /usr/bin with fs-verity (bpf_get_fsverity_digest)", f"{verity} of {binaries}"],
        ],
    )
