"""The watch walk's cost inside the hook programs, with and without the inode pre-filter.

`bench/run.py walk` (in the VM: BPF-LSM). One daemon, file_open and inode_rename only,
with kernel run-time stats on (``bpf_stats: true``): the cost of a program run is
read from the kernel (run_time_ns / run_cnt of that program), not from a syscall
loop's wall time, whose noise under TCG (±10 % and more between rounds) is larger
than what the walk costs.

Two states of krsid_watch_ino_filter alternate, ``--rounds`` times, in the same
daemon:

  pre-filter  as krsid writes it: a bit per watched inode number
  saturated   every bit set, so every level of the walk pays the (device, inode) hash
              lookup, as before the pre-filter existed (plus the bit test itself)

and eight filtered loops (bench/loops.c) run in each: a write open and a rename
there and back of a file 4 directories deep on a tmpfs holding a watched directory
(the walk runs up to that filesystem's root: 6 levels), a write open of a file
on a tmpfs holding no watched path (the walk is skipped by the device check: the
floor), a write open there of a file in lib/systemd/user (the directories watched
by name: three lookups that find nothing), and three read opens there: of an unwatched name, of a name that passes the
watched names' pre-filter (id_rsb: a hash lookup), and of a secret read by its owner
(id_rsa: the lookup and the owner check), and a file created and removed there
(inode_create's program as shipped: rules only, no walk). Reads do not walk: the bitmap's two states
do not concern them. Each state is written whole with `bpftool batch`; the daemon writes only
the words it changes, so it leaves them alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.common import ROOT, build_loops, krsid_running, scrape, table, tmpfs_mounted
from krsid.catalog import load_catalog
from krsid.watch import DEFAULT_NAMES, DEFAULT_PATHS, WatchConfig, WatchTable, ino_filter, resolve_watch
from tests.support.net import free_port

FILTER_MAP = "krsid_watch_ino"  # krsid_watch_ino_filter as the kernel names maps (15 bytes)


@dataclass(frozen=True)
class WalkLoop:
    title: str
    kind: str  # bench/loops.c
    calls: int
    file: str  # "deep" | "flat" | "dirs" | "near" | "secret"
    hook: str


LOOPS = (
    WalkLoop("open(O_WRONLY)+close, 4 dirs deep, watched fs", "open_w", 4000, "deep", "file_open"),
    WalkLoop("rename there and back, 4 dirs deep, watched fs", "rename", 2000, "deep", "inode_rename"),
    WalkLoop("open(O_WRONLY)+close, fs without watched paths", "open_w", 4000, "flat", "file_open"),
    # A directory the dirs' pre-filter lets through (the packages' lib/systemd/user):
    # its names are read and looked up three times (three names, two, one), no match.
    WalkLoop(
        "open(O_WRONLY)+close in lib/systemd/user (passes the dirs' pre-filter)", "open_w", 4000, "dirs", "file_open"
    ),
    # Reads: no walk; the secrets' name check (watch.secrets) at three depths.
    WalkLoop("open(O_RDONLY)+close, an unwatched name", "open", 4000, "flat", "file_open"),
    WalkLoop("open(O_RDONLY)+close of id_rsb (passes the names' pre-filter)", "open", 4000, "near", "file_open"),
    WalkLoop("open(O_RDONLY)+close of its own id_rsa (a secret, its owner)", "open", 4000, "secret", "file_open"),
    # inode_create as shipped (rules only): two option lookups and whether the policy
    # has a rule for it, no walk; its whole cost for a filtered call.
    WalkLoop("create+close+unlink, fs without watched paths", "create", 2000, "flat", "inode_create"),
)
STATES = ("pre-filter", "saturated")


def note(msg: str) -> None:
    print(f"[walk] {msg}", file=sys.stderr, flush=True)


def filter_map_id() -> int:
    maps = json.loads(subprocess.run(["bpftool", "-j", "map", "show"], capture_output=True, check=True).stdout)
    ids = [m["id"] for m in maps if m.get("name") == FILTER_MAP]
    if len(ids) != 1:
        raise SystemExit(f"walk bench: expected one {FILTER_MAP} map (one krsid running), found {len(ids)}")
    return int(ids[0])


def write_filter(map_id: int, words: dict[int, int], count: int, tmp: Path) -> None:
    """Every word of the map: words[w], else 0; one bpftool process for all of them."""
    lines = []
    for w in range(count):
        key = " ".join(f"{b:02x}" for b in w.to_bytes(4, "little"))
        value = " ".join(f"{b:02x}" for b in words.get(w, 0).to_bytes(8, "little"))
        lines.append(f"map update id {map_id} key hex {key} value hex {value}")
    batch = tmp / "filter.batch"
    batch.write_text("\n".join(lines) + "\n")
    subprocess.run(["bpftool", "batch", "file", str(batch)], capture_output=True, check=True)


def program_ns(port: int, hook: str) -> tuple[float, float]:
    """(runs, ns) of the hook's program so far (kernel bpf_stats, through krsid's metrics)."""
    m = scrape(port)
    label = f'hook="{hook}"'
    return m[("krsid_hook_program_runs_total", label)], m[("krsid_hook_program_seconds_total", label)] * 1e9


def main(args: argparse.Namespace) -> None:
    contract = load_catalog(ROOT / "programs").contract
    words = contract.watch_ino_filter_bits // 64
    with tempfile.TemporaryDirectory(prefix="krsid-walk-") as t:
        tmp = Path(t)
        with tmpfs_mounted(tmp / "watched-fs", "16m") as watched_fs, tmpfs_mounted(tmp / "flat-fs", "16m") as flat:
            (watched_fs / "watched").mkdir()
            deep = watched_fs / "a" / "b" / "c" / "d"
            deep.mkdir(parents=True)
            files = {
                "deep": deep / "bench-deep",
                "flat": flat / "bench-flat",
                "dirs": flat / "lib" / "systemd" / "user" / "bench-unit",
                "near": flat / "id_rsb",
                "secret": flat / "id_rsa",
            }
            for f in files.values():
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_text("x\n")
            loops_exe = build_loops(tmp)
            watch = WatchConfig(paths=(*DEFAULT_PATHS, str(watched_fs / "watched")), names=DEFAULT_NAMES)
            as_written = ino_filter(resolve_watch(watch, WatchTable(), contract).files, contract)
            port = free_port()
            config = tmp / "krsid.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "headers": args.headers,
                        "cache_dir": str(tmp / "cache"),
                        "state_dir": str(tmp / "state"),
                        "bpf_stats": True,
                        "hooks": {"file_open": {}, "inode_rename": {}, "inode_create": {}},
                        "watch": {"paths": list(watch.paths), "names": list(watch.names)},
                        "sinks": {
                            "journald": {"enabled": False},
                            "jsonl": {"enabled": True, "path": str(tmp / "events.jsonl")},
                            "prometheus": {"enabled": True, "listen": f"127.0.0.1:{port}"},
                        },
                    }
                )
            )
            samples: dict[tuple[str, str], list[float]] = {}
            with (tmp / "krsid.log").open("w") as log, krsid_running(config, tmp / "notify", stderr=log):
                map_id = filter_map_id()
                filters = {"pre-filter": as_written, "saturated": dict.fromkeys(range(words), (1 << 64) - 1)}
                for round_no in range(1, args.rounds + 1):
                    for state in STATES:
                        write_filter(map_id, filters[state], words, tmp)
                        for loop in LOOPS:
                            for _ in range(args.repeat):
                                runs0, ns0 = program_ns(port, loop.hook)
                                argv = [str(loops_exe), loop.kind, str(loop.calls), str(files[loop.file])]
                                subprocess.run(argv, capture_output=True, check=True)
                                runs1, ns1 = program_ns(port, loop.hook)
                                samples.setdefault((loop.title, state), []).append((ns1 - ns0) / max(runs1 - runs0, 1))
                        note(f"round {round_no} {state}: done")
    rows = []
    floor = statistics.median(samples[(LOOPS[2].title, "pre-filter")])

    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"

    for loop in LOOPS:
        pre, sat = samples[(loop.title, "pre-filter")], samples[(loop.title, "saturated")]
        above_floor = statistics.median(pre) - floor
        rows.append(
            [
                loop.title,
                loop.hook,
                cell(pre),
                cell(sat),
                f"{statistics.median(sat) / statistics.median(pre):.2f}x",
                f"{above_floor:+.0f}" if loop.hook == "file_open" else "",
            ]
        )
    table(
        f"The watch walk inside the programs (VM, TCG; kernel bpf_stats, ns per program run: median of "
        f"{args.rounds} rounds x {args.repeat} runs (min-max))",
        [
            "loop",
            "program",
            "with the pre-filter",
            "saturated (a hash lookup per level)",
            "saturated / pre-filter",
            "pre-filter above the no-walk floor",
        ],
        rows,
    )
