"""The ledger's promises without the kernel: who owns a run, and a broken ledger is an error."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from testbed.errors import LedgerError
from testbed.net.ledger import Ledger, process_start_ticks


def test_a_run_is_live_while_its_owner_runs(tmp_path: Path) -> None:
    ledger = Ledger("r1", root=tmp_path)
    assert ledger.live() is None  # nobody claimed it
    ledger.claim()
    assert ledger.live() is not None and "is running" in str(ledger.live())


def test_a_run_whose_owner_is_gone_is_not_live(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    ledger = Ledger("r2", root=tmp_path)
    ledger.dir.mkdir(parents=True)
    ledger.owner_path.write_text(json.dumps({"pid": gone.pid, "start_ticks": 1, "detached": False}))
    assert ledger.live() is None


def test_a_detached_topology_is_live_while_up_and_its_processes_run(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        ledger = Ledger("r3", root=tmp_path)
        ledger.dir.mkdir(parents=True)
        ledger.owner_path.write_text(json.dumps({"pid": 1, "start_ticks": 0, "detached": True}))
        ledger.record("process", pid=sleeper.pid, start_ticks=process_start_ticks(sleeper.pid))
        assert ledger.live() is None  # not up yet: a build that died half-way
        (ledger.dir / "state.json").write_text("{}")
        assert "is up" in str(ledger.live())
        sleeper.kill()
        sleeper.wait()
        assert ledger.live() is None  # its processes died: what is left is debris
    finally:
        sleeper.kill()


@pytest.mark.parametrize("text", ["{not json", '{"run": "x"}', '{"entries": 3}', ""])
def test_a_corrupt_ledger_is_an_error_that_names_the_file(tmp_path: Path, text: str) -> None:
    ledger = Ledger("r4", root=tmp_path)
    ledger.dir.mkdir(parents=True)
    ledger.path.write_text(text)
    with pytest.raises(LedgerError) as e:
        ledger.entries()
    assert str(ledger.path) in str(e.value) and "nothing was removed" in str(e.value)
    with pytest.raises(LedgerError):
        ledger.undo()
    assert ledger.path.exists()  # kept for whoever repairs it


def test_a_kind_nobody_registered_is_an_error_and_its_entry_is_kept(tmp_path: Path) -> None:
    """The ledger learns how to undo a kind from the module that makes it (register_undo);
    an entry it cannot undo is never dropped as if it were removed."""
    from testbed.net.ledger import register_undo

    ledger = Ledger("tkind", root=tmp_path)
    ledger.claim(False)
    ledger.record("gadget", name="g1")
    with pytest.raises(LedgerError, match="no way to undo a 'gadget' entry"):
        ledger.undo()
    assert [e["kind"] for e in ledger.entries()] == ["gadget"]
    undone: list[str] = []
    register_undo("gadget", lambda entry: undone.append(entry["name"]) is None)
    assert ledger.undo() == 1 and undone == ["g1"]
