"""The file-integrity watch in a VM: writes, creation, renames, hard links, symlinks, new
directories, special files, deletion of watched files and directories, truncation,
deletion and renames of logs, and reads of secrets by others, are reported with exact values (file_open, inode_rename,
inode_link, inode_symlink, inode_mkdir, inode_mknod, inode_unlink, inode_rmdir,
inode_setattr; inode_mknod also reports device nodes anywhere), and the evasions do
not work: a hard link to a watched file, a bind mount of a watched directory, a file
renamed into one, and a watched file replaced by a rename (a new inode, watched again after the daemon's next
refresh).

Everything happens on the session's own watched tmpfs (tests/vm/conftest.py,
watched_tmpfs): dir/ and file are watched by identity, logs/ as a log directory,
outside/ is not, and WATCHED_NAME is watched anywhere. Files get unique names: the tmpfs lives as long as
the session's daemon.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.journald import Journal
from tests.support.metrics import metric
from tests.support.procs import PYTHON3, SETFL_THEN_WRITE, as_uid
from tests.vm.conftest import WATCHED_NAME, RunningDaemon, message_id
from tests.vm.test_policy import Reloader

pytestmark = pytest.mark.vm
REFRESH_WAIT = 3.0  # s: the daemon re-resolves watched paths every second (WATCH_REFRESH_INTERVAL)


@pytest.fixture
def root(daemon: RunningDaemon, hook_enabled: Callable[[str], None]) -> Path:
    for hook in ("file_open", "inode_rename", "inode_link", "inode_unlink"):
        hook_enabled(hook)
    paths = yaml.safe_load(daemon.config.read_text())["watch"]["paths"]
    return Path(paths[-1]).parent  # the last two are the session's dir/ and file


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def run(*argv: str, ok: bool = True) -> tuple[int, subprocess.CompletedProcess[str]]:
    """Run argv; returns (its pid, the events' tgid, and its result)."""
    p = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=60)
    done = subprocess.CompletedProcess(argv, p.returncode, out, err)
    if ok:
        assert p.returncode == 0, done
    return p.pid, done


def events_of(daemon: RunningDaemon, hook: str, pid: int, count: int = 1) -> list[dict[str, Any]]:
    found = daemon.wait_events(lambda o: o["hook"] == hook and o["tgid"] == pid, count)
    return sorted(found, key=lambda o: int(o["seq"]))


def test_writes_and_creation_in_watched_places_are_reported_and_reads_are_not(
    daemon: RunningDaemon, root: Path, journal: Journal
) -> None:
    watched_file, sub = root / "file", root / "dir" / unique("sub")
    sub.mkdir()
    reader, _ = run("cat", str(watched_file))
    outsider, _ = run("sh", "-c", f"echo x > {root / 'outside' / unique('f')}")
    appender, _ = run("sh", "-c", f"echo x >> {watched_file}")
    created = sub / unique("job")
    creator, _ = run("sh", "-c", f"echo x > {created}")

    (o,) = events_of(daemon, "file_open", appender)
    assert (o["reason"], o["watch"], o["watch_level"], o["path"]) == ("WATCH", str(watched_file), 0, str(watched_file))
    assert (o["access"], o["flags"]) == ("WRONLY", "WRONLY|CREAT|APPEND|LARGEFILE")
    (o,) = events_of(daemon, "file_open", creator)
    assert (o["reason"], o["watch"], o["watch_level"], o["path"]) == ("WATCH", str(root / "dir"), 2, str(created))
    assert o["flags"] == "WRONLY|CREAT|TRUNC|LARGEFILE"
    # Same lane, in order: by now the read and the write outside would have arrived.
    assert daemon.events(lambda e: e["hook"] == "file_open" and e["tgid"] in (reader, outsider)) == []

    (j,) = journal.wait_for(lambda e: True, "KRSID_HOOK=file_open", f"KRSID_TGID={creator}")
    assert j["MESSAGE_ID"] == message_id("file_open")
    assert (j["KRSID_REASON"], j["KRSID_WATCH"], j["KRSID_WATCH_LEVEL"]) == ("WATCH", str(root / "dir"), "2")


def test_a_hard_link_to_a_watched_file_is_reported_and_does_not_evade_the_watch(
    daemon: RunningDaemon, root: Path
) -> None:
    watched_file, alias = root / "file", root / "outside" / unique("alias")
    st = watched_file.stat()
    linker, _ = run("ln", str(watched_file), str(alias))
    (o,) = events_of(daemon, "inode_link", linker)
    assert (o["watch"], o["watch_side"], o["watch_level"]) == (str(watched_file), "OLD", 0)
    assert (o["old_dir"], o["old_name"], o["new_dir"], o["new_name"]) == ("/", "file", "outside", alias.name)
    assert (o["ino"], o["nlink"], o["dev_major"], o["dev_minor"]) == (
        st.st_ino,
        st.st_nlink,
        os.major(st.st_dev),
        os.minor(st.st_dev),
    )
    assert (o["action"], o["comm"]) == ("audit", "ln")

    # A write through the second name is a write to the watched inode.
    writer, _ = run("sh", "-c", f"echo x >> {alias}")
    (o,) = events_of(daemon, "file_open", writer)
    assert (o["reason"], o["watch"], o["watch_level"], o["path"]) == ("WATCH", str(watched_file), 0, str(alias))
    # And so is removing it.
    remover, _ = run("rm", str(alias))
    (o,) = events_of(daemon, "inode_unlink", remover)
    assert (o["name"], o["watch"], o["watch_level"], o["running"]) == (alias.name, str(watched_file), 0, False)


def test_a_bind_mount_of_a_watched_directory_does_not_evade_the_watch(daemon: RunningDaemon, root: Path) -> None:
    bind = root / "outside" / unique("bind")
    bind.mkdir()
    subprocess.run(["mount", "--bind", str(root / "dir"), str(bind)], check=True)
    try:
        target = bind / unique("job")
        writer, _ = run("sh", "-c", f"echo x > {target}")
        (o,) = events_of(daemon, "file_open", writer)
        # bpf_d_path names the path written through; the watch names what it is.
        assert (o["reason"], o["watch"], o["watch_level"], o["path"]) == ("WATCH", str(root / "dir"), 1, str(target))
    finally:
        subprocess.run(["umount", str(bind)], check=True)


def test_renames_into_over_and_out_of_watched_places_are_reported(daemon: RunningDaemon, root: Path) -> None:
    job = root / "outside" / unique("job")
    job.write_text("* * * * * root id\n")
    ino = job.stat().st_ino
    mover, _ = run("mv", str(job), str(root / "dir" / job.name))
    (o,) = events_of(daemon, "inode_rename", mover)
    assert (o["watch"], o["watch_side"], o["watch_level"], o["replaces"]) == (str(root / "dir"), "NEW", 1, False)
    assert (o["old_dir"], o["old_name"], o["new_dir"], o["new_name"], o["ino"]) == (
        "outside",
        job.name,
        "dir",
        job.name,
        ino,
    )
    # Moved away again: the file being moved lies in the watched directory.
    back, _ = run("mv", str(root / "dir" / job.name), str(job))
    (o,) = events_of(daemon, "inode_rename", back)
    assert (o["watch"], o["watch_side"], o["watch_level"], o["new_dir"]) == (str(root / "dir"), "OLD", 1, "outside")
    # A rename within the unwatched directory is filtered in the kernel.
    quiet, _ = run("mv", str(job), str(job) + ".old")

    # Replacing the watched file by a rename over it, as passwd does with /etc/shadow.
    watched_file, replacement = root / "file", root / "outside" / unique("new")
    replacement.write_text("replaced\n")
    replacer, _ = run("mv", str(replacement), str(watched_file))
    (o,) = events_of(daemon, "inode_rename", replacer)
    assert (o["watch"], o["watch_side"], o["watch_level"], o["replaces"]) == (str(watched_file), "NEW", 0, True)
    assert daemon.events(lambda e: e["hook"] == "inode_rename" and e["tgid"] == quiet) == []
    # The file now is a new inode; the daemon watches it from its next refresh on.
    time.sleep(REFRESH_WAIT)
    writer, _ = run("sh", "-c", f"echo x >> {watched_file}")
    (o,) = events_of(daemon, "file_open", writer)
    assert (o["reason"], o["watch"], o["watch_level"]) == ("WATCH", str(watched_file), 0)


def test_deleting_watched_files_and_names_is_reported(daemon: RunningDaemon, root: Path) -> None:
    in_dir = root / "dir" / unique("dropin")
    in_dir.write_text("x\n")
    history = root / "outside" / unique("home")
    history.mkdir()
    (history / WATCHED_NAME).write_text("history\n")
    remover, _ = run("rm", str(in_dir), str(history / WATCHED_NAME))
    first, second = events_of(daemon, "inode_unlink", remover, 2)
    assert (first["name"], first["watch"], first["watch_level"]) == (in_dir.name, str(root / "dir"), 1)
    assert (second["name"], second["watch"], second["watch_level"]) == (WATCHED_NAME, WATCHED_NAME, 255)
    assert first["running"] is False and second["running"] is False


# Places of the shipped watch that hold what root runs on its own occasion, written
# here in the guest's /etc (an overlay over the host's, its upper layer a tmpfs: the
# host's files are never touched) with unique names, removed at the end.
SHIPPED_RUN_BY_ROOT = ("/etc/update-motd.d", "/etc/apt/apt.conf.d", "/etc/systemd/user", "/etc/xdg/autostart")


def test_shipped_places_that_root_runs_from_are_watched(daemon: RunningDaemon, root: Path) -> None:
    """A message-of-the-day script (run by pam_motd at every login), an apt hook, a
    user unit for every user and a desktop autostart entry, dropped into the real /etc
    of the guest: each write and its deletion is reported with the shipped entry that
    matched. Also: a user's .zshenv, by its shipped name."""
    from krsid.watch import DEFAULT_NAMES, DEFAULT_PATHS

    assert set(SHIPPED_RUN_BY_ROOT) <= set(DEFAULT_PATHS) and ".zshenv" in DEFAULT_NAMES
    places = [Path(d) for d in SHIPPED_RUN_BY_ROOT if Path(d).is_dir()]
    assert places, f"none of {SHIPPED_RUN_BY_ROOT} is on this machine"
    dropped = [d / unique("krsid-test") for d in places]
    home = root / "outside" / unique("home")
    home.mkdir()
    dropped.append(home / ".zshenv")
    try:
        writer, _ = run("sh", "-c", 'for f; do echo "true" > "$f"; done', "sh", *map(str, dropped))
    finally:
        remover, _ = run("rm", "-f", *map(str, dropped))
    writes = events_of(daemon, "file_open", writer, len(dropped))
    expected = [("WATCH", str(d), 1, str(f)) for d, f in zip(places, dropped)] + [
        ("WATCH", ".zshenv", 255, str(dropped[-1]))
    ]
    assert [(o["reason"], o["watch"], o["watch_level"], o["path"]) for o in writes] == expected
    deletions = events_of(daemon, "inode_unlink", remover, len(dropped))
    assert [(o["name"], o["watch"]) for o in deletions] == [
        (f.name, w) for f, (_r, w, _l, _p) in zip(dropped, expected)
    ]


SECRET_OWNER = 64713  # owns the secrets tests' files; no other test uses it
SECRET_READER = 64714  # reads them in the deny test (not the owner); no other test uses it


@pytest.fixture
def homes() -> Iterator[Path]:
    """A directory for homes that other uids can reach (pytest's own are root's, 0700),
    on the guest's /tmp; removed at the end. Secrets are names: any filesystem will do."""
    d = Path(tempfile.mkdtemp(prefix="krsid-homes-", dir="/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d)


def home_with_a_key(homes: Path, key_mode: int) -> Path:
    """A home of SECRET_OWNER with an SSH key pair; returns the private key (a shipped
    secret name)."""
    ssh = homes / unique("home") / ".ssh"
    ssh.mkdir(parents=True)
    key = ssh / "id_ed25519"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (ssh / "id_ed25519.pub").write_text("ssh-ed25519 AAAA krsid-test\n")
    for path in (ssh.parent, ssh, key, ssh / "id_ed25519.pub"):
        os.chown(path, SECRET_OWNER, SECRET_OWNER)
    ssh.chmod(0o755)
    key.chmod(key_mode)
    return key


def test_reading_another_users_secret_is_reported_and_the_owners_read_is_not(
    daemon: RunningDaemon, root: Path, homes: Path, journal: Journal
) -> None:
    """watch.secrets: root reading a user's SSH private key (harvesting keys, T1552.004)
    is reported with the name that matched; the owner's own read (ssh with its key) and
    a read of the public key are not."""
    key = home_with_a_key(homes, 0o600)
    owner, _ = run(*as_uid(SECRET_OWNER, "cat", str(key)))
    public, _ = run("cat", f"{key}.pub")
    harvester, _ = run("cat", str(key))
    (o,) = events_of(daemon, "file_open", harvester)
    assert (o["reason"], o["watch"], o["watch_level"], o["path"]) == ("SECRET_READ", "id_ed25519", 255, str(key))
    assert (o["access"], o["uid"], o["action"]) == ("RDONLY", 0, "audit")
    # Same lane, in order: the owner's read and the public key's would have arrived.
    assert daemon.events(lambda e: e["hook"] == "file_open" and e["tgid"] in (owner, public)) == []
    (j,) = journal.wait_for(lambda e: True, "KRSID_HOOK=file_open", f"KRSID_TGID={harvester}")
    assert (j["KRSID_REASON"], j["KRSID_WATCH"], j["KRSID_PATH"]) == ("SECRET_READ", "id_ed25519", str(key))


def test_would_deny_then_deny_reading_another_users_secret(
    daemon: RunningDaemon, root: Path, homes: Path, policy: Reloader
) -> None:
    """A rule on file_open, scoped to a uid only this test uses and to the home: a
    readable key (mode 0644) read by that uid is reported, then refused."""
    key = home_with_a_key(homes, 0o644)
    home = str(key.parent.parent)

    def rule(action: str) -> dict[str, Any]:
        return {
            "name": f"secret-{action}",
            "hook": "file_open",
            "action": action,
            "match": {"uid": SECRET_READER, "path_prefix": home},
        }

    policy.apply(policy.with_rules(rule("would_deny")))
    reader, done = run(*as_uid(SECRET_READER, "cat", str(key)))
    assert done.stdout.startswith("-----BEGIN")
    (o,) = events_of(daemon, "file_open", reader)
    want = ("SECRET_READ", "would_deny", "secret-would_deny", "0", "id_ed25519")
    assert (o["reason"], o["action"], o["rule"], o["verdict"], o["watch"]) == want

    policy.apply(policy.with_rules(rule("deny")))
    reader, done = run(*as_uid(SECRET_READER, "cat", str(key)), ok=False)
    assert done.returncode != 0 and "Operation not permitted" in done.stderr, done
    (o,) = events_of(daemon, "file_open", reader)
    want = ("SECRET_READ", "deny", "secret-deny", "-EPERM", "id_ed25519")
    assert (o["reason"], o["action"], o["rule"], o["verdict"], o["watch"]) == want
    assert metric(daemon.scrape(), "krsid_denied_total", hook="file_open", rule="secret-deny") == 1


# A user's persistence places (the shipped watch.dirs), relative to a home.
def write_then_remove_first(dropped: list[Path], alike: list[Path], line: str) -> tuple[int, int, int]:
    """One process writes `line` into each of `dropped`, another into each of `alike`
    (their directories made first), a third removes dropped[0]: their pids. The
    removal's event comes after the look-alikes' writes would have, in the same lane."""
    for f in dropped + alike:
        f.parent.mkdir(parents=True, exist_ok=True)
    script = f'for f; do echo "{line}" > "$f"; done'
    writer, _ = run("sh", "-c", script, "sh", *map(str, dropped))
    quiet, _ = run("sh", "-c", script, "sh", *map(str, alike))
    remover, _ = run("rm", str(dropped[0]))
    return writer, quiet, remover


USER_UNITS, USER_DATA_UNITS = ".config/systemd/user", ".local/share/systemd/user"
AUTOSTART, USER_ENVIRONMENT = ".config/autostart", ".config/environment.d"
DIRS_USER = 64715  # writes into its own autostart directory in the deny test; no other test uses it


def test_a_users_units_and_autostart_entries_are_watched_by_directory_name(
    daemon: RunningDaemon, root: Path, journal: Journal
) -> None:
    """watch.dirs: a user unit, an autostart entry and a user-manager environment file
    written in a home (T1543.002, T1547.013) are reported with the entry that matched,
    at level 1, and their deletion too; a drop-in of a unit (foo.service.d/) and a link
    in a target's .wants/ at level 2; a prepared directory renamed into the place of
    ~/.config/autostart is reported at level 0. Places that only look alike are not:
    another .config directory, an autostart directory outside .config, a file three
    levels deep, and the packages' lib/systemd/user."""
    from krsid.watch import DEFAULT_DIRS

    places = {USER_UNITS: ".config/systemd/user", USER_DATA_UNITS: "share/systemd/user"}
    places |= {AUTOSTART: ".config/autostart", USER_ENVIRONMENT: ".config/environment.d"}
    assert set(places.values()) | set(USER_SSH_FILES) == set(DEFAULT_DIRS)
    home = root / "outside" / unique("home")
    dropped = [home / place / name for place, name in zip(places, ("x.service", "y.service", "x.desktop", "50-x.conf"))]
    two_below = [home / USER_UNITS / "dbus.service.d" / "override.conf"]
    two_below += [home / USER_UNITS / "default.target.wants" / "x.service"]
    alike = [home / ".config" / "other" / "x.desktop", home / "autostart" / "x.desktop"]
    alike += [home / USER_UNITS / "dbus.service.d" / "deeper" / "x.conf"]
    alike += [home / "lib" / "systemd" / "user" / "x.service"]
    writer, quiet, remover = write_then_remove_first(dropped + two_below, alike, "[Unit]")

    writes = events_of(daemon, "file_open", writer, len(dropped) + len(two_below))
    assert [(o["reason"], o["watch"], o["watch_level"], o["path"]) for o in writes] == [
        ("WATCH", entry, 1, str(f)) for entry, f in zip(places.values(), dropped)
    ] + [("WATCH", ".config/systemd/user", 2, str(f)) for f in two_below]
    assert {(o["access"], o["uid"], o["action"]) for o in writes} == {("WRONLY", 0, "audit")}
    assert all({"CREAT", "TRUNC"} <= set(o["flags"].split("|")) for o in writes), writes
    (o,) = events_of(daemon, "inode_unlink", remover)
    assert (o["name"], o["watch"], o["watch_level"]) == ("x.service", ".config/systemd/user", 1)
    # Same lane, in order: the look-alikes' writes would have arrived before the deletion.
    assert daemon.events(lambda e: e["hook"] == "file_open" and e["tgid"] == quiet) == []
    (j,) = journal.wait_for(
        lambda e: e["KRSID_PATH"] == str(dropped[2]), "KRSID_HOOK=file_open", f"KRSID_TGID={writer}"
    )
    assert (j["KRSID_REASON"], j["KRSID_WATCH"], j["KRSID_WATCH_LEVEL"]) == ("WATCH", ".config/autostart", "1")

    # A directory prepared elsewhere, then renamed into the place of ~/.config/autostart.
    other = root / "outside" / unique("home")
    (other / ".config").mkdir(parents=True)
    stage = other / "stage"
    stage.mkdir()
    (stage / "x.desktop").write_text("[Desktop Entry]\n")
    mover, _ = run("mv", str(stage), str(other / AUTOSTART))
    (o,) = events_of(daemon, "inode_rename", mover)
    assert (o["watch"], o["watch_side"], o["watch_level"]) == (".config/autostart", "NEW", 0)
    assert (o["old_dir"], o["old_name"], o["new_dir"], o["new_name"]) == (other.name, "stage", ".config", "autostart")


USER_SSH_FILES = (".ssh/rc", ".ssh/environment")


def test_a_users_ssh_rc_and_environment_are_watched_by_their_last_two_names(
    daemon: RunningDaemon, root: Path, journal: Journal
) -> None:
    """watch.dirs entries that end in a file: ~/.ssh/rc, which sshd runs at each login of
    the user, and ~/.ssh/environment, which it reads then (PermitUserEnvironment), in
    any home, at level 0. Files of those names elsewhere are not reported."""
    home = root / "outside" / unique("home")
    ssh = home / ".ssh"
    dropped = [ssh / "rc", ssh / "environment"]
    alike = [home / "rc", home / ".config" / "rc", home / ".ssh.bak" / "rc", ssh / "rc.bak"]
    writer, quiet, remover = write_then_remove_first(dropped, alike, "touch /tmp/x")

    writes = events_of(daemon, "file_open", writer, len(dropped))
    assert [(o["reason"], o["watch"], o["watch_level"], o["path"]) for o in writes] == [
        ("WATCH", entry, 0, str(f)) for entry, f in zip(USER_SSH_FILES, dropped)
    ]
    (o,) = events_of(daemon, "inode_unlink", remover)
    assert (o["name"], o["watch"], o["watch_level"]) == ("rc", ".ssh/rc", 0)
    # Same lane, in order: the look-alikes' writes would have arrived before the deletion.
    assert daemon.events(lambda e: e["hook"] == "file_open" and e["tgid"] == quiet) == []
    (j,) = journal.wait_for(
        lambda e: e["KRSID_PATH"] == str(dropped[1]), "KRSID_HOOK=file_open", f"KRSID_TGID={writer}"
    )
    assert (j["KRSID_REASON"], j["KRSID_WATCH"], j["KRSID_WATCH_LEVEL"]) == ("WATCH", ".ssh/environment", "0")


def test_would_deny_then_deny_an_autostart_entry(
    daemon: RunningDaemon, root: Path, homes: Path, policy: Reloader, hook_enabled: Callable[[str], None]
) -> None:
    """A rule on file_open, scoped to a uid only this test uses and to its home: the
    user's own autostart entry is reported with the watch entry, then refused (an
    empty file is left); the same rule on inode_create refuses a new entry before its
    name exists."""
    hook_enabled("inode_create")
    home = homes / unique("home")
    autostart = home / AUTOSTART
    autostart.mkdir(parents=True)
    for d in (home, home / ".config", autostart):
        os.chown(d, DIRS_USER, DIRS_USER)

    def rule(action: str) -> dict[str, Any]:
        return {
            "name": f"autostart-{action}",
            "hook": "file_open",
            "action": action,
            "match": {"uid": DIRS_USER, "path_prefix": str(home)},
        }

    policy.apply(policy.with_rules(rule("would_deny")))
    entry = autostart / "x.desktop"
    writer, _ = run(*as_uid(DIRS_USER, "sh", "-c", f"echo '[Desktop Entry]' > {entry}"))
    (o,) = events_of(daemon, "file_open", writer)
    want = ("WATCH", "would_deny", "autostart-would_deny", "0", ".config/autostart", 1)
    assert (o["reason"], o["action"], o["rule"], o["verdict"], o["watch"], o["watch_level"]) == want
    assert (o["uid"], o["path"]) == (DIRS_USER, str(entry))

    policy.apply(policy.with_rules(rule("deny")))
    entry = autostart / "y.desktop"
    writer, done = run(*as_uid(DIRS_USER, "sh", "-c", f"echo '[Desktop Entry]' > {entry}"), ok=False)
    assert done.returncode != 0 and "Operation not permitted" in done.stderr, done
    # O_CREAT made the name before file_open was checked: the entry exists, and
    # nothing was written into it.
    assert entry.read_text() == ""
    (o,) = events_of(daemon, "file_open", writer)
    want = ("WATCH", "deny", "autostart-deny", "-EPERM", ".config/autostart", 1)
    assert (o["reason"], o["action"], o["rule"], o["verdict"], o["watch"], o["watch_level"]) == want
    assert metric(daemon.scrape(), "krsid_denied_total", hook="file_open", rule="autostart-deny") == 1

    # The same rule on inode_create refuses a new entry before its name exists.
    created = {**rule("deny"), "name": "autostart-create-deny", "hook": "inode_create"}
    policy.apply(policy.with_rules(rule("deny"), created))
    entry = autostart / "z.desktop"
    writer, done = run(*as_uid(DIRS_USER, "sh", "-c", f"umask 002; echo '[Desktop Entry]' > {entry}"), ok=False)
    assert done.returncode != 0 and "Operation not permitted" in done.stderr, done
    assert not entry.exists()
    (o,) = events_of(daemon, "inode_create", writer)
    assert (o["action"], o["rule"], o["verdict"], o["uid"]) == ("deny", "autostart-create-deny", "-EPERM", DIRS_USER)
    assert (o["dir"], o["name"], o["mode"]) == ("autostart", "z.desktop", "RUSR|WUSR|RGRP|WGRP|ROTH")
    assert (o["watch"], o["watch_level"]) == (".config/autostart", 1)  # looked up for a rule's event
    st = autostart.stat()
    assert (o["dir_ino"], o["dev_major"], o["dev_minor"]) == (st.st_ino, os.major(st.st_dev), os.minor(st.st_dev))
    # The open was refused at the name: file_open never ran.
    assert daemon.events(lambda e: e["hook"] == "file_open" and e["tgid"] == writer) == []
    assert metric(daemon.scrape(), "krsid_denied_total", hook="inode_create", rule="autostart-create-deny") == 1


def test_kernel_hand_offs_under_proc_sys_are_reported_by_name(daemon: RunningDaemon, root: Path) -> None:
    """core_pattern and modprobe (programs the kernel runs as root) are watched by their
    shipped names: /proc/sys has no stable inodes. Each is written with the value it
    has, so the VM's kernel is left as it was; a read is not reported."""
    readers = []
    for name in ("core_pattern", "modprobe"):
        sysctl = Path("/proc/sys/kernel") / name
        value = sysctl.read_text()
        readers.append(run("cat", str(sysctl))[0])
        writer, _ = run("sh", "-c", 'printf "%s" "$1" > "$2"', "sh", value, str(sysctl))
        assert sysctl.read_text() == value
        (o,) = events_of(daemon, "file_open", writer)
        assert (o["reason"], o["watch"], o["watch_level"], o["path"]) == ("WATCH", name, 255, str(sysctl))
        assert (o["access"], o["flags"]) == ("WRONLY", "WRONLY|CREAT|TRUNC|LARGEFILE")
    # Same lane, in order: the reads came before the writes just seen.
    assert daemon.events(lambda e: e["hook"] == "file_open" and e["tgid"] in readers) == []


def test_clearing_or_editing_a_log_is_reported_and_appending_is_not(daemon: RunningDaemon, root: Path) -> None:
    """A `logs` entry (the session's logs/, like the shipped /var/log) reports what clears
    or edits a log: an O_TRUNC open of a file with data (truncate(2): the next test), a
    write open of one that can change its data in place (no O_APPEND, or read-write: a
    shared mapping writes anywhere), its deletion and its renames; not appends, new
    files, empty files truncated or opened, directories, chmod."""
    logs = root / "logs"
    log, empty = logs / unique("auth.log"), logs / unique("empty.log")
    log.write_text("Accepted publickey for root\n")
    empty.write_text("")
    quiet = [
        run("sh", "-c", f"echo x >> {log}")[0],  # logs are appended to all day
        run("sh", "-c", f"echo x > {logs / unique('new.log')}")[0],  # a new file: nothing cut
        run("sh", "-c", f": > {empty}")[0],  # an O_TRUNC open of an empty file: nothing cut
        run("sh", "-c", f": 1<> {empty}")[0],  # a read-write open of an empty file: nothing to edit
        run("mkdir", str(logs / unique("svc")))[0],  # LogsDirectory= of a service starting
        run("chmod", "0640", str(log))[0],  # logrotate's create mode
    ]
    # An editor or a utmp cleaner overwriting lines in place: O_WRONLY at an offset,
    # O_RDWR (a shell's <>), O_RDWR|O_APPEND (then a shared writable mapping).
    overwriter, _ = run("dd", "if=/dev/zero", f"of={log}", "bs=1", "count=4", "conv=notrunc", "status=none")
    (o,) = events_of(daemon, "file_open", overwriter)
    assert (o["reason"], o["watch"], o["watch_level"], o["path"]) == ("WATCH", str(logs), 1, str(log))
    assert (o["access"], o["flags"]) == ("WRONLY", "WRONLY|CREAT|LARGEFILE")
    reopener, _ = run("sh", "-c", f": 1<> {log}")
    (o,) = events_of(daemon, "file_open", reopener)
    assert (o["reason"], o["watch"], o["path"], o["access"]) == ("WATCH", str(logs), str(log), "RDWR")
    mapper, _ = run(PYTHON3, "-c", f"import os; os.open({str(log)!r}, os.O_RDWR | os.O_APPEND)")
    (o,) = events_of(daemon, "file_open", mapper)
    assert (o["reason"], o["path"], o["flags"]) == ("WATCH", str(log), "RDWR|APPEND|LARGEFILE")
    clearer, _ = run("sh", "-c", f": > {log}")
    (o,) = events_of(daemon, "file_open", clearer)
    assert (o["reason"], o["watch"], o["watch_level"], o["path"]) == ("WATCH", str(logs), 1, str(log))
    assert o["flags"] == "WRONLY|CREAT|TRUNC|LARGEFILE"

    mover, _ = run("mv", str(log), f"{log}.1")
    (o,) = events_of(daemon, "inode_rename", mover)
    assert (o["watch"], o["watch_side"], o["watch_level"], o["new_name"]) == (str(logs), "NEW", 1, log.name + ".1")
    remover, _ = run("rm", f"{log}.1")
    (o,) = events_of(daemon, "inode_unlink", remover)
    assert (o["name"], o["watch"], o["watch_level"]) == (log.name + ".1", str(logs), 1)
    # The quiet ones ran first; the events after them have arrived.
    watch_hooks = {"file_open", "inode_setattr", "inode_mkdir", "inode_rename", "inode_unlink"}
    assert daemon.events(lambda e: e["tgid"] in quiet and e["hook"] in watch_hooks) == []


def setfl_then_write(path: Path, flags: int, ok: bool = True) -> tuple[int, subprocess.CompletedProcess[str]]:
    return run(PYTHON3, "-c", SETFL_THEN_WRITE, str(path), hex(flags), ok=ok)


def test_taking_o_append_off_a_log_is_reported_by_file_fcntl(
    daemon: RunningDaemon, root: Path, journal: Journal, hook_enabled: Callable[[str], None]
) -> None:
    """A log opened for appending (file_open: quiet), then F_SETFL without O_APPEND
    and a write at offset 0: the edit in place no open shows. file_fcntl reports it
    with the flags before and after; toggling O_NONBLOCK, an empty log and a file
    outside the log directory are not reported."""
    hook_enabled("file_fcntl")
    logs = root / "logs"
    log, empty, outside = logs / unique("auth.log"), logs / unique("empty.log"), root / "outside" / unique("app.log")
    for f in (log, outside):
        f.write_text("Accepted publickey for root\n")
    empty.write_text("")
    quiet = [
        setfl_then_write(log, os.O_APPEND | os.O_NONBLOCK)[0],  # O_APPEND kept: still an append
        setfl_then_write(empty, 0)[0],  # nothing to overwrite
        setfl_then_write(outside, 0)[0],  # not below a log directory
    ]
    editor, _ = setfl_then_write(log, 0)
    assert log.read_text().startswith("XXXX"), "the write after F_SETFL lands in place"
    (o,) = events_of(daemon, "file_fcntl", editor)
    assert (o["cmd"], o["append"], o["flags"], o["new_flags"]) == (
        "SETFL",
        "REMOVED",
        "WRONLY|APPEND|LARGEFILE",
        "WRONLY|LARGEFILE",
    )
    st = log.stat()
    assert (o["dir"], o["file"], o["ino"], o["size"]) == ("logs", log.name, st.st_ino, st.st_size)
    assert (o["watch"], o["watch_level"], o["action"], o["comm"]) == (str(logs), 1, "audit", "python3")
    (j,) = journal.wait_for(lambda e: True, "KRSID_HOOK=file_fcntl", f"KRSID_TGID={editor}")
    assert (j["MESSAGE_ID"], j["KRSID_APPEND"], j["KRSID_NEW_FLAGS"]) == (
        message_id("file_fcntl"),
        "REMOVED",
        "WRONLY|LARGEFILE",
    )
    # The quiet ones ran first; the event after them has arrived (one lane).
    assert daemon.events(lambda e: e["tgid"] in quiet and e["hook"] in {"file_open", "file_fcntl"}) == []


def test_would_deny_then_deny_taking_o_append_off_a_log(
    daemon: RunningDaemon, root: Path, policy: Reloader, hook_enabled: Callable[[str], None]
) -> None:
    """A rule on file_fcntl scoped to this test's log directory: F_SETFL without
    O_APPEND is reported, then refused (EPERM); the log keeps its first bytes."""
    hook_enabled("file_fcntl")
    logs = root / "logs" / unique("app")
    logs.mkdir()
    log = logs / "app.log"
    log.write_text("Failed password for root\n")

    def rule(action: str) -> dict[str, Any]:
        return {
            "name": f"log-append-{action}",
            "hook": "file_fcntl",
            "action": action,
            "match": {"path_prefix": str(logs), "fields": {"append": "REMOVED"}},
        }

    policy.apply(policy.with_rules(rule("would_deny")))
    editor, done = setfl_then_write(log, 0)
    assert done.stdout == "" and log.read_text().startswith("XXXX")
    (o,) = events_of(daemon, "file_fcntl", editor)
    assert (o["action"], o["rule"], o["verdict"], o["append"]) == (
        "would_deny",
        "log-append-would_deny",
        "0",
        "REMOVED",
    )

    log.write_text("Failed password for root\n")
    policy.apply(policy.with_rules(rule("deny")))
    editor, done = setfl_then_write(log, 0)
    assert done.stdout == "fcntl-refused\n" and log.read_text().startswith("Failed")
    (o,) = events_of(daemon, "file_fcntl", editor)
    assert (o["action"], o["rule"], o["verdict"], o["watch"]) == (
        "deny",
        "log-append-deny",
        "-EPERM",
        str(root / "logs"),
    )
    assert metric(daemon.scrape(), "krsid_denied_total", hook="file_fcntl", rule="log-append-deny") == 1


def test_truncating_a_log_is_reported(daemon: RunningDaemon, root: Path, hook_enabled: Callable[[str], None]) -> None:
    """truncate(2) cutting data off a file below a `logs` entry: inode_setattr's
    WATCHED_TRUNCATE, with the old and new size."""
    hook_enabled("inode_setattr")
    logs = root / "logs"
    log = logs / unique("auth.log")
    log.write_text("Failed password for root\n")
    truncater, _ = run("truncate", "-s", "0", str(log))
    (o,) = events_of(daemon, "inode_setattr", truncater)
    assert (o["changes"], o["watch"], o["watch_level"], o["file"], o["dir"]) == (
        "TRUNCATE|WATCHED_TRUNCATE",
        str(logs),
        1,
        log.name,
        "logs",
    )
    assert (o["size"], o["old_size"]) == (0, len("Failed password for root\n"))
    assert "SIZE" in o["valid"].split("|") and "OPEN" not in o["valid"].split("|")


@pytest.fixture
def policy(daemon: RunningDaemon, root: Path) -> Iterator[Reloader]:
    with Reloader(daemon) as r:
        yield r


def test_would_deny_then_deny_renames_and_links_into_the_watched_directory(
    daemon: RunningDaemon, root: Path, policy: Reloader
) -> None:
    """Rules on the new hooks, scoped to the session's watched tmpfs (path_prefix)."""
    watched_dir = root / "dir"

    def rules(action: str) -> list[dict[str, Any]]:
        match = {"path_prefix": str(watched_dir)}
        return [
            {"name": f"rename-{action}", "hook": "inode_rename", "action": action, "match": match},
            {"name": f"link-{action}", "hook": "inode_link", "action": action, "match": {"path_prefix": str(root)}},
        ]

    policy.apply(policy.with_rules(*rules("would_deny")))
    a = root / "outside" / unique("a")
    a.write_text("a\n")
    mover, _ = run("mv", str(a), str(watched_dir / a.name))
    (o,) = events_of(daemon, "inode_rename", mover)
    want = ("would_deny", "rename-would_deny", "0", str(watched_dir))
    assert (o["action"], o["rule"], o["verdict"], o["watch"]) == want
    assert (watched_dir / a.name).exists()

    policy.apply(policy.with_rules(*rules("deny")))
    b = root / "outside" / unique("b")
    b.write_text("b\n")
    mover, done = run("mv", str(b), str(watched_dir / b.name), ok=False)
    assert done.returncode != 0 and "Operation not permitted" in done.stderr, done
    assert b.exists() and not (watched_dir / b.name).exists()
    # One rename call, or two where mv retries without RENAME_NOREPLACE: each denied.
    denied = events_of(daemon, "inode_rename", mover)
    assert denied and {(o["action"], o["rule"], o["verdict"], o["new_name"]) for o in denied} == {
        ("deny", "rename-deny", "-EPERM", b.name)
    }
    # A rename elsewhere on the same filesystem is not the rule's.
    run("mv", str(b), str(b) + ".moved")

    linker, done = run("ln", str(root / "file"), str(root / "outside" / unique("l")), ok=False)
    assert done.returncode != 0 and "Operation not permitted" in done.stderr, done
    (o,) = events_of(daemon, "inode_link", linker)
    assert (o["action"], o["rule"], o["verdict"], o["watch"]) == ("deny", "link-deny", "-EPERM", str(root / "file"))
    scrape = daemon.scrape()
    assert metric(scrape, "krsid_denied_total", hook="inode_rename", rule="rename-deny") == len(denied)
    assert metric(scrape, "krsid_denied_total", hook="inode_link", rule="link-deny") == 1
    assert metric(scrape, "krsid_would_deny_total", hook="inode_rename", rule="rename-would_deny") == 1


def test_a_permission_change_of_a_watched_file_is_reported(daemon: RunningDaemon, root: Path) -> None:
    """inode_setattr reports only special bits, owners and timestamps on any file; on a
    watched file every permission change (chmod 0666 /etc/shadow)."""
    if "inode_setattr" not in daemon.attached:
        pytest.skip("inode_setattr is not in this session's KRSID_TEST_HOOKS")
    watched = root / "dir" / unique("conf")
    watched.write_text("x\n")
    watched.chmod(0o600)
    plain = root / "outside" / unique("conf")
    plain.write_text("x\n")
    quiet, _ = run("chmod", "0666", str(plain))
    changer, _ = run("chmod", "0666", str(watched))
    (o,) = events_of(daemon, "inode_setattr", changer)
    assert (o["changes"], o["watch"], o["watch_level"]) == ("WATCHED_MODE", str(root / "dir"), 1)
    assert (o["old_mode"], o["mode"], o["file"], o["dir"]) == (
        "RUSR|WUSR",
        "RUSR|WUSR|RGRP|WGRP|ROTH|WOTH",
        watched.name,
        "dir",
    )
    assert daemon.events(lambda e: e["hook"] == "inode_setattr" and e["tgid"] == quiet) == []


STOMPED_EPOCH = 1262304000  # 2010-01-01 00:00:00 UTC


def test_explicit_times_on_a_watched_file_are_reported_where_others_are_not(
    daemon: RunningDaemon, root: Path, policy: Reloader
) -> None:
    """Without the option timestamps (the default: dpkg, tar and logrotate set explicit
    times on every file), timestomping a watched file is still reported (WATCHED_TIMES);
    the same on an unwatched file, and a plain touch of the watched one, are not."""
    if "inode_setattr" not in daemon.attached:
        pytest.skip("inode_setattr is not in this session's KRSID_TEST_HOOKS")
    cfg = yaml.safe_load(policy.original)
    cfg["hooks"]["inode_setattr"]["timestamps"] = False
    policy.apply(yaml.safe_dump(cfg))
    watched = root / "dir" / unique("job")
    watched.write_text("* * * * * root true\n")
    plain = root / "outside" / unique("job")
    plain.write_text("x\n")
    old_mtime = int(watched.stat().st_mtime)
    quiet, _ = run("touch", "-d", f"@{STOMPED_EPOCH}", str(plain))
    toucher, _ = run("touch", str(watched))
    stomper, _ = run("touch", "-d", f"@{STOMPED_EPOCH}", str(watched))
    (o,) = events_of(daemon, "inode_setattr", stomper)
    assert (o["changes"], o["watch"], o["watch_level"]) == ("TIMES_SET|WATCHED_TIMES", str(root / "dir"), 1)
    assert (o["mtime"], o["atime"], o["file"], o["dir"]) == (STOMPED_EPOCH, STOMPED_EPOCH, watched.name, "dir")
    assert o["old_mtime"] >= old_mtime and o["valid"] == "ATIME|MTIME|CTIME|ATIME_SET|MTIME_SET|TIMES_SET"
    quiet_ones = {quiet, toucher}
    assert daemon.events(lambda e: e["hook"] == "inode_setattr" and e["tgid"] in quiet_ones) == []


def test_symlinks_into_watched_places_are_reported_and_others_are_not(
    daemon: RunningDaemon, root: Path, hook_enabled: Callable[[str], None]
) -> None:
    """A symlink placed in a watched directory (how `systemctl enable` plants a unit) or
    under a watched name is reported with its name, directory and target text; a
    symlink elsewhere, even one pointing at a watched file, is not."""
    hook_enabled("inode_symlink")
    wants = root / "dir" / unique("multi-user.target.wants")
    wants.mkdir()
    unit = root / "outside" / unique("evil.service")
    unit.write_text("[Service]\nExecStart=/bin/true\n")
    planter, _ = run("ln", "-s", str(unit), str(wants / unit.name))
    namer, _ = run("ln", "-s", "../relative/target", str(root / "outside" / WATCHED_NAME))
    quiet, _ = run("ln", "-s", str(root / "file"), str(root / "outside" / unique("to-watched")))

    (o,) = events_of(daemon, "inode_symlink", planter)
    assert (o["dir"], o["name"], o["target"]) == (wants.name, unit.name, str(unit))
    assert (o["watch"], o["watch_level"], o["action"]) == (str(root / "dir"), 2, "audit")
    assert o["dir_ino"] == wants.stat().st_ino
    assert (o["dev_major"], o["dev_minor"]) == (os.major(wants.stat().st_dev), os.minor(wants.stat().st_dev))
    (o,) = events_of(daemon, "inode_symlink", namer)
    assert (o["dir"], o["name"], o["target"]) == ("outside", WATCHED_NAME, "../relative/target")
    assert (o["watch"], o["watch_level"]) == (WATCHED_NAME, 255)
    # Same lane, in order: by now the unwatched symlink's event would have arrived.
    assert daemon.events(lambda e: e["hook"] == "inode_symlink" and e["tgid"] == quiet) == []


def test_would_deny_then_deny_symlinks_into_the_watched_directory(
    daemon: RunningDaemon, root: Path, policy: Reloader, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled("inode_symlink")
    watched_dir = root / "dir"

    def rule(action: str) -> dict[str, Any]:
        return {
            "name": f"symlink-{action}",
            "hook": "inode_symlink",
            "action": action,
            "match": {"path_prefix": str(watched_dir)},
        }

    policy.apply(policy.with_rules(rule("would_deny")))
    first = watched_dir / unique("l")
    linker, _ = run("ln", "-s", "/bin/true", str(first))
    (o,) = events_of(daemon, "inode_symlink", linker)
    assert (o["action"], o["rule"], o["verdict"], o["name"]) == ("would_deny", "symlink-would_deny", "0", first.name)
    assert first.is_symlink()

    policy.apply(policy.with_rules(rule("deny")))
    second = watched_dir / unique("l")
    denied, done = run("ln", "-s", "/bin/true", str(second), ok=False)
    assert done.returncode != 0 and "Operation not permitted" in done.stderr, done
    assert not second.is_symlink()
    (o,) = events_of(daemon, "inode_symlink", denied)
    assert (o["action"], o["rule"], o["verdict"], o["name"]) == ("deny", "symlink-deny", "-EPERM", second.name)
    # Outside the rule's directory: allowed, and not reported (nothing watched there).
    elsewhere, _ = run("ln", "-s", "/bin/true", str(root / "outside" / unique("l")))
    assert daemon.events(lambda e: e["hook"] == "inode_symlink" and e["tgid"] == elsewhere) == []
    scrape = daemon.scrape()
    assert metric(scrape, "krsid_denied_total", hook="inode_symlink", rule="symlink-deny") == 1
    assert metric(scrape, "krsid_would_deny_total", hook="inode_symlink", rule="symlink-would_deny") == 1


# Python: set the umask (argv[2], octal), then make argv[1] with the mode argv[3]
# (octal) by the call given: the mode the kernel's hook sees is mode less umask.
MAKE_UNDER_UMASK = "import os, sys; os.umask(int(sys.argv[2], 8)); mode = int(sys.argv[3], 8); {call}"
MKDIR = MAKE_UNDER_UMASK.format(call="os.mkdir(sys.argv[1], mode)")
CREATE = MAKE_UNDER_UMASK.format(call="os.close(os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, mode))")


def make_under_umask(
    script: str, path: Path, mode: int, umask: int = 0o022, ok: bool = True
) -> tuple[int, subprocess.CompletedProcess[str]]:
    """Run MKDIR or CREATE on path in a process of its own (the events' tgid)."""
    return run(PYTHON3, "-c", script, str(path), f"{umask:o}", f"{mode:o}", ok=ok)


def make_dir(
    path: Path, mode: int, umask: int = 0o022, ok: bool = True
) -> tuple[int, subprocess.CompletedProcess[str]]:
    """mkdir(path, mode) under a given umask."""
    return make_under_umask(MKDIR, path, mode, umask, ok)


def test_directories_made_in_watched_places_are_reported_and_others_are_not(
    daemon: RunningDaemon, root: Path, hook_enabled: Callable[[str], None]
) -> None:
    """A directory made in a watched directory (a drop-in directory being staged) or
    under a watched name is reported with its name, parent, watch and the mode the
    kernel creates it with (after the umask); a directory made elsewhere is not."""
    hook_enabled("inode_mkdir")
    watched_dir = root / "dir"
    drop_in = watched_dir / unique("ssh.service.d")
    stager, _ = make_dir(drop_in, 0o777, umask=0o022)
    nest = root / "outside" / unique("home")
    nest.mkdir()
    namer, _ = make_dir(nest / WATCHED_NAME, 0o700)
    quiet, _ = make_dir(root / "outside" / unique("d"), 0o755)

    (o,) = events_of(daemon, "inode_mkdir", stager)
    assert (o["dir"], o["name"], o["mode"]) == ("dir", drop_in.name, "RUSR|WUSR|XUSR|RGRP|XGRP|ROTH|XOTH")
    assert (o["watch"], o["watch_level"], o["action"], o["comm"]) == (str(watched_dir), 1, "audit", "python3")
    st = watched_dir.stat()
    assert (o["dir_ino"], o["dev_major"], o["dev_minor"]) == (st.st_ino, os.major(st.st_dev), os.minor(st.st_dev))
    assert drop_in.is_dir()
    (o,) = events_of(daemon, "inode_mkdir", namer)
    assert (o["dir"], o["name"], o["mode"]) == (nest.name, WATCHED_NAME, "RUSR|WUSR|XUSR")
    assert (o["watch"], o["watch_level"]) == (WATCHED_NAME, 255)
    # Same lane, in order: by now the unwatched directory's event would have arrived.
    assert daemon.events(lambda e: e["hook"] == "inode_mkdir" and e["tgid"] == quiet) == []


def test_would_deny_then_deny_world_writable_directories_in_the_watched_directory(
    daemon: RunningDaemon, root: Path, policy: Reloader, hook_enabled: Callable[[str], None]
) -> None:
    """A rule on the mode the directory gets (fields.mode) and where (path_prefix)."""
    hook_enabled("inode_mkdir")
    watched_dir = root / "dir"

    def rule(action: str) -> dict[str, Any]:
        return {
            "name": f"mkdir-{action}",
            "hook": "inode_mkdir",
            "action": action,
            "match": {"path_prefix": str(watched_dir), "fields": {"mode": {"any": ["WOTH"]}}},
        }

    policy.apply(policy.with_rules(rule("would_deny")))
    first = watched_dir / unique("open")
    maker, _ = make_dir(first, 0o777, umask=0)
    (o,) = events_of(daemon, "inode_mkdir", maker)
    assert (o["action"], o["rule"], o["verdict"], o["name"]) == ("would_deny", "mkdir-would_deny", "0", first.name)
    assert o["mode"] == "RUSR|WUSR|XUSR|RGRP|WGRP|XGRP|ROTH|WOTH|XOTH"
    assert first.is_dir()

    policy.apply(policy.with_rules(rule("deny")))
    second = watched_dir / unique("open")
    denied, done = make_dir(second, 0o777, umask=0, ok=False)
    assert done.returncode != 0 and "Operation not permitted" in done.stderr, done
    assert not second.exists()
    (o,) = events_of(daemon, "inode_mkdir", denied)
    assert (o["action"], o["rule"], o["verdict"], o["name"]) == ("deny", "mkdir-deny", "-EPERM", second.name)
    # The same mode with the umask's usual bits: not world-writable, allowed; watched, so reported.
    third = watched_dir / unique("closed")
    allowed, _ = make_dir(third, 0o777, umask=0o022)
    (o,) = events_of(daemon, "inode_mkdir", allowed)
    assert (o["action"], o["rule"], o["watch"]) == ("audit", "", str(watched_dir))
    assert third.is_dir()
    # Outside the rule's directory: allowed, and not reported (nothing watched there).
    elsewhere, _ = make_dir(root / "outside" / unique("open"), 0o777, umask=0)
    assert daemon.events(lambda e: e["hook"] == "inode_mkdir" and e["tgid"] == elsewhere) == []
    scrape = daemon.scrape()
    assert metric(scrape, "krsid_denied_total", hook="inode_mkdir", rule="mkdir-deny") == 1
    assert metric(scrape, "krsid_would_deny_total", hook="inode_mkdir", rule="mkdir-would_deny") == 1


def create_file(path: Path, mode: int, umask: int = 0o022) -> int:
    """open(path, O_CREAT, mode) under a given umask; its pid."""
    return make_under_umask(CREATE, path, mode, umask)[0]


def test_files_created_in_watched_places_are_reported_with_the_option_watched(
    daemon: RunningDaemon, root: Path, policy: Reloader, hook_enabled: Callable[[str], None]
) -> None:
    """inode_create reports only what a rule matches unless its option watched is on
    (file_open reports the same open); with it, a file created in a watched directory
    or under a watched name is reported with the mode it gets; a file created
    elsewhere, or opened again, is not. A would_deny rule on the mode (setuid files
    made in the watched directory) names itself on its event; the file is made."""
    hook_enabled("inode_create")
    watched_dir = root / "dir"
    quiet = create_file(watched_dir / unique("job"), 0o644)
    assert events_of(daemon, "file_open", quiet)  # reported there, not by inode_create

    cfg = yaml.safe_load(policy.original)
    cfg["hooks"]["inode_create"] = {"watched": True}
    match = {"path_prefix": str(watched_dir), "fields": {"mode": {"any": ["SUID"]}}}
    rule = {"name": "create-setuid", "hook": "inode_create", "action": "would_deny", "match": match}
    cfg["policy"] = {"rules": [rule]}
    policy.apply(yaml.safe_dump(cfg))
    planted = watched_dir / unique("job")
    planter = create_file(planted, 0o4777, umask=0o022)
    assert planted.exists()
    reopener = create_file(planted, 0o644)  # exists: an open, not a creation
    elsewhere = create_file(root / "outside" / unique("f"), 0o644)
    nest = root / "outside" / unique("home")
    nest.mkdir()
    namer = create_file(nest / WATCHED_NAME, 0o600)

    (o,) = events_of(daemon, "inode_create", planter)
    assert (o["dir"], o["name"], o["mode"]) == ("dir", planted.name, "SUID|RUSR|WUSR|XUSR|RGRP|XGRP|ROTH|XOTH")
    assert (o["watch"], o["watch_level"], o["action"], o["rule"], o["verdict"], o["comm"]) == (
        str(watched_dir), 1, "would_deny", "create-setuid", "0", "python3"
    )  # fmt: skip
    st = watched_dir.stat()
    assert (o["dir_ino"], o["dev_major"], o["dev_minor"]) == (st.st_ino, os.major(st.st_dev), os.minor(st.st_dev))
    (o,) = events_of(daemon, "inode_create", namer)
    assert (o["dir"], o["name"], o["mode"], o["watch"], o["watch_level"], o["action"]) == (
        nest.name, WATCHED_NAME, "RUSR|WUSR", WATCHED_NAME, 255, "audit"
    )  # fmt: skip
    assert metric(daemon.scrape(), "krsid_would_deny_total", hook="inode_create", rule="create-setuid") == 1
    # One lane, in order: the others' events would have arrived before the last one.
    assert daemon.events(lambda e: e["hook"] == "inode_create" and e["tgid"] in {quiet, reopener, elsewhere}) == []


def test_device_nodes_and_special_files_in_watched_places_are_reported(
    daemon: RunningDaemon, root: Path, hook_enabled: Callable[[str], None]
) -> None:
    """A block device node and a /dev/mem node made anywhere are reported with their
    device numbers; the null node every container gets and a FIFO outside watched
    places are not; a FIFO in a watched directory is."""
    hook_enabled("inode_mknod")
    outside = root / "outside"
    disk, mem, null, fifo = (outside / unique(n) for n in ("sda", "mem", "null", "fifo"))
    disk_maker, _ = run("sh", "-c", f"umask 022; exec mknod {disk} b 7 0")
    mem_maker, _ = run("mknod", "-m", "0600", str(mem), "c", "1", "1")
    null_maker, _ = run("mknod", str(null), "c", "1", "3")
    fifo_maker, _ = run("mkfifo", str(fifo))
    planted = root / "dir" / unique("job")
    planter, _ = run("mkfifo", "-m", "0600", str(planted))

    (o,) = events_of(daemon, "inode_mknod", disk_maker)
    assert (o["kind"], o["rdev_major"], o["rdev_minor"], o["name"], o["dir"]) == ("BLK", 7, 0, disk.name, "outside")
    assert (o["mode"], o["watch"], o["watch_level"], o["kernel_thread"]) == ("RUSR|WUSR|RGRP|ROTH", "", 0, False)
    assert (o["action"], o["comm"]) == ("audit", "mknod")
    st = outside.stat()
    assert (o["dir_ino"], o["dev_major"], o["dev_minor"]) == (st.st_ino, os.major(st.st_dev), os.minor(st.st_dev))
    assert disk.is_block_device()
    (o,) = events_of(daemon, "inode_mknod", mem_maker)
    assert (o["kind"], o["rdev_major"], o["rdev_minor"], o["mode"]) == ("CHR", 1, 1, "RUSR|WUSR")
    (o,) = events_of(daemon, "inode_mknod", planter)
    assert (o["kind"], o["name"], o["watch"], o["watch_level"]) == ("FIFO", planted.name, str(root / "dir"), 1)
    assert (o["rdev_major"], o["rdev_minor"]) == (0, 0)
    # Same lane, in order: by now the null node's and the FIFO's events would have arrived.
    assert daemon.events(lambda e: e["hook"] == "inode_mknod" and e["tgid"] in (null_maker, fifo_maker)) == []
    assert null.is_char_device() and fifo.is_fifo()


def test_would_deny_then_deny_block_device_nodes(
    daemon: RunningDaemon, root: Path, policy: Reloader, hook_enabled: Callable[[str], None]
) -> None:
    """A rule on the file type (fields.kind) where (path_prefix) the node is made."""
    hook_enabled("inode_mknod")
    outside = root / "outside"

    def rule(action: str) -> dict[str, Any]:
        return {
            "name": f"mknod-{action}",
            "hook": "inode_mknod",
            "action": action,
            "match": {"path_prefix": str(outside), "fields": {"kind": "BLK"}},
        }

    policy.apply(policy.with_rules(rule("would_deny")))
    first = outside / unique("sda")
    maker, _ = run("mknod", str(first), "b", "7", "1")
    (o,) = events_of(daemon, "inode_mknod", maker)
    assert (o["action"], o["rule"], o["verdict"], o["name"]) == ("would_deny", "mknod-would_deny", "0", first.name)
    assert first.is_block_device()

    policy.apply(policy.with_rules(rule("deny")))
    second = outside / unique("sda")
    denied, done = run("mknod", str(second), "b", "7", "1", ok=False)
    assert done.returncode != 0 and "Operation not permitted" in done.stderr, done
    assert not second.exists()
    (o,) = events_of(daemon, "inode_mknod", denied)
    assert (o["action"], o["rule"], o["verdict"], o["kind"]) == ("deny", "mknod-deny", "-EPERM", "BLK")
    # Another kind there, and a block node elsewhere: allowed, as the rule says.
    fifo = outside / unique("fifo")
    run("mkfifo", str(fifo))
    assert fifo.is_fifo()
    elsewhere = root / "dir" / unique("sda")
    run("mknod", str(elsewhere), "b", "7", "1")
    assert elsewhere.is_block_device()
    scrape = daemon.scrape()
    assert metric(scrape, "krsid_denied_total", hook="inode_mknod", rule="mknod-deny") == 1
    assert metric(scrape, "krsid_would_deny_total", hook="inode_mknod", rule="mknod-would_deny") == 1


def test_directories_removed_from_watched_places_are_reported_and_others_are_not(
    daemon: RunningDaemon, root: Path, hook_enabled: Callable[[str], None]
) -> None:
    """rmdir of a directory below a watched directory, below a log directory (a
    deletion is what a log entry reports) or under a watched name is reported with
    the directory's identity; an rmdir the kernel then refuses (ENOTEMPTY) is reported
    too, since the hook runs first; an rmdir elsewhere is not."""
    hook_enabled("inode_rmdir")
    drop_in = root / "dir" / unique("ssh.service.d")
    log_dir = root / "logs" / unique("app")
    nest = root / "outside" / unique("home")
    named = nest / WATCHED_NAME
    elsewhere = root / "outside" / unique("d")
    for d in (drop_in, log_dir, named, elsewhere):
        d.mkdir(parents=True)
    st = drop_in.stat()
    (drop_in / "job").write_text("x\n")
    refused, done = run("rmdir", str(drop_in), ok=False)
    assert done.returncode != 0 and "Directory not empty" in done.stderr, done
    (drop_in / "job").unlink()
    remover, _ = run("rmdir", str(drop_in))
    log_remover, _ = run("rmdir", str(log_dir))
    name_remover, _ = run("rmdir", str(named))
    quiet, _ = run("rmdir", str(elsewhere))

    for pid in (refused, remover):
        (o,) = events_of(daemon, "inode_rmdir", pid)
        assert (o["dir"], o["name"], o["watch"], o["watch_level"]) == ("dir", drop_in.name, str(root / "dir"), 1)
        assert (o["ino"], o["dev_major"], o["dev_minor"]) == (st.st_ino, os.major(st.st_dev), os.minor(st.st_dev))
        assert (o["action"], o["comm"]) == ("audit", "rmdir")
    assert not drop_in.exists()
    (o,) = events_of(daemon, "inode_rmdir", log_remover)
    assert (o["dir"], o["name"], o["watch"], o["watch_level"]) == ("logs", log_dir.name, str(root / "logs"), 1)
    (o,) = events_of(daemon, "inode_rmdir", name_remover)
    assert (o["dir"], o["name"], o["watch"], o["watch_level"]) == (nest.name, WATCHED_NAME, WATCHED_NAME, 255)
    # Same lane, in order: by now the unwatched directory's event would have arrived.
    assert daemon.events(lambda e: e["hook"] == "inode_rmdir" and e["tgid"] == quiet) == []


def test_would_deny_then_deny_removing_directories_in_the_watched_directory(
    daemon: RunningDaemon, root: Path, policy: Reloader, hook_enabled: Callable[[str], None]
) -> None:
    """A rule on where (path_prefix): the directory being removed and those above it."""
    hook_enabled("inode_rmdir")
    watched_dir = root / "dir"

    def rule(action: str) -> dict[str, Any]:
        return {
            "name": f"rmdir-{action}",
            "hook": "inode_rmdir",
            "action": action,
            "match": {"path_prefix": str(watched_dir)},
        }

    first, second, elsewhere = watched_dir / unique("a"), watched_dir / unique("b"), root / "outside" / unique("c")
    for d in (first, second, elsewhere):
        d.mkdir()
    policy.apply(policy.with_rules(rule("would_deny")))
    remover, _ = run("rmdir", str(first))
    (o,) = events_of(daemon, "inode_rmdir", remover)
    assert (o["action"], o["rule"], o["verdict"], o["name"]) == ("would_deny", "rmdir-would_deny", "0", first.name)
    assert not first.exists()

    policy.apply(policy.with_rules(rule("deny")))
    denied, done = run("rmdir", str(second), ok=False)
    assert done.returncode != 0 and "Operation not permitted" in done.stderr, done
    assert second.is_dir()
    (o,) = events_of(daemon, "inode_rmdir", denied)
    assert (o["action"], o["rule"], o["verdict"], o["watch"]) == ("deny", "rmdir-deny", "-EPERM", str(watched_dir))
    # Outside the rule's directory: allowed, and not reported (nothing watched there).
    allowed, _ = run("rmdir", str(elsewhere))
    assert not elsewhere.exists()
    assert daemon.events(lambda e: e["hook"] == "inode_rmdir" and e["tgid"] == allowed) == []
    scrape = daemon.scrape()
    assert metric(scrape, "krsid_denied_total", hook="inode_rmdir", rule="rmdir-deny") == 1
    assert metric(scrape, "krsid_would_deny_total", hook="inode_rmdir", rule="rmdir-would_deny") == 1
