"""The field reference (README) and the journald catalog are generated: they must match."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from krsid import docs
from krsid.catalog import load_catalog
from tests.support.records import PROGRAMS

ROOT = PROGRAMS.parent
CATALOG = load_catalog(PROGRAMS)
FIX = "run `krsid docs --write` (or `.venv/bin/python -m krsid docs --write`) and commit"


def test_readme_field_reference_matches_the_yaml() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert docs.update_readme(readme, docs.field_reference(CATALOG)) == readme, FIX


def test_shipped_journal_catalog_matches_the_yaml() -> None:
    assert (ROOT / "systemd" / "krsid.catalog").read_text(encoding="utf-8") == docs.journal_catalog(CATALOG), FIX


def test_reference_names_every_field_and_option() -> None:
    ref = docs.field_reference(CATALOG)
    for spec in CATALOG:
        assert f"MESSAGE_ID `{spec.message_id}`" in ref
        for f in spec.fields:
            if f.kind != "hidden":
                assert f"`{f.journal_name}`" in ref, f.name
                assert f.doc, f"{spec.sidecar}: field {f.name} has no doc"
        for o in spec.options:
            assert f"`hooks.{spec.fallback_for or spec.name}.{o.name}`" in ref  # a fallback's: set on its hook
            assert o.doc, f"{spec.sidecar}: option {o.name} has no doc"


@pytest.mark.skipif(not shutil.which("journalctl"), reason="journalctl not installed")
def test_journalctl_accepts_the_catalog(tmp_path: Path) -> None:
    """journalctl --update-catalog compiles it; --list-catalog then knows every MESSAGE_ID."""
    cat_dir = tmp_path / "usr" / "lib" / "systemd" / "catalog"
    cat_dir.mkdir(parents=True)
    shutil.copy(ROOT / "systemd" / "krsid.catalog", cat_dir / "krsid.catalog")
    (tmp_path / "var" / "lib" / "systemd" / "catalog").mkdir(parents=True)
    up = subprocess.run(["journalctl", f"--root={tmp_path}", "--update-catalog"], capture_output=True, text=True)
    assert up.returncode == 0, up.stderr
    listed = subprocess.run(["journalctl", f"--root={tmp_path}", "--list-catalog"], capture_output=True, text=True)
    for spec in CATALOG:
        assert spec.message_id in listed.stdout, listed.stdout + listed.stderr
