"""The kernel matrix on a kernel krsid refuses (5.10: no BPF atomics): the README
table says "refused" rather than pass/fail of tests that cannot run there, and the
VM plugin keeps exactly the refusal tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vm import matrix_plugin, matrix_table

ROOT = Path(__file__).resolve().parents[2]


def run(passed: bool) -> dict[str, object]:
    return {
        "series": "5.10",
        "kernel": "5.10.0-32-amd64",
        "suite": "bullseye",
        "package_version": "5.10.223-1",
        "headers": "btf",
        "passed": passed,
        "vm_seconds": 75.0,
        "counts": {"passed": 2} if passed else {"failed": 1, "passed": 1},
        "facts": {"unsupported": "kernel 5.10.0-32-amd64 has no BPF atomic fetch-and-add (Linux 5.12 or newer)"},
    }


def test_a_refused_kernel_row_says_so() -> None:
    row = matrix_table.row(run(True))
    assert "refused at start (exit 3)" in row and "**refused as documented**" in row, row
    assert "**pass**" not in row


def test_a_refused_kernel_whose_refusal_test_failed_is_a_failure() -> None:
    assert "**FAIL**" in matrix_table.row(run(False))


def test_the_refusal_tests_exist_in_test_matrix() -> None:
    """A renamed test would silently leave nothing to run on 5.10."""
    text = (ROOT / "tests" / "vm" / "test_matrix.py").read_text()
    for nodeid in matrix_plugin.ON_A_REFUSED_KERNEL:
        path, name = nodeid.split("::")
        assert path == "tests/vm/test_matrix.py"
        assert f"def {name}(" in text, name


def test_only_the_refusal_tests_are_kept_on_a_refused_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    class Item:
        def __init__(self, nodeid: str) -> None:
            self.nodeid = nodeid

    deselected: list[object] = []

    class Hook:
        @staticmethod
        def pytest_deselected(items: list[object]) -> None:
            deselected.extend(items)

    class Config:
        hook = Hook()

    monkeypatch.setattr(matrix_plugin, "kernel_refusal", lambda: "kernel 5.10 has no BPF atomics")
    monkeypatch.setattr(matrix_plugin, "kernel_lsm_hooks", lambda: set())
    recorder = matrix_plugin._Recorder(Path("/nonexistent/out.json"))
    items = [Item(n) for n in (*matrix_plugin.ON_A_REFUSED_KERNEL, "tests/vm/test_e2e.py::test_x")]
    recorder.pytest_collection_modifyitems(Config(), items)  # type: ignore[arg-type]
    assert [i.nodeid for i in items] == list(matrix_plugin.ON_A_REFUSED_KERNEL)
    assert [i.nodeid for i in deselected] == ["tests/vm/test_e2e.py::test_x"]  # type: ignore[attr-defined]
    assert matrix_plugin.FACTS.pop("unsupported") == "kernel 5.10 has no BPF atomics"
