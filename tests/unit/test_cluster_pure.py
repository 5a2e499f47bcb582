"""The sweep's pure parts: inputs by content, the digest, the order, the precision rule."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from testbed.errors import ConfigError
from testbed.experiment.inputs import addressed, hashes_needed, input_paths, materialise
from testbed.experiment.plan import Plan
from testbed.experiment.precision import Precision, more_repetitions
from testbed.experiment.spec import load_experiment
from tests.conftest import ROOT

TRACE = "\n".join(str(t) for t in range(1, 200, 3)) + "\n"


def write(tmp_path: Path, text: str, trace: str = TRACE) -> Path:
    (tmp_path / "up.trace").write_text(trace)
    p = tmp_path / "exp.yaml"
    p.write_text(f"topology: {ROOT / 'topologies' / 'p2p.yaml'}\n" + text)
    return p


def test_inputs_travel_by_content_and_come_back_as_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = {"topology": {"links": [{"uplink": {"trace": str(tmp_path / "up.trace")}}]},
           "stream": {"video": "builtin:document", "roi": {"regions": None}}}  # fmt: skip
    (tmp_path / "up.trace").write_text(TRACE)
    paths = input_paths(job)
    assert paths == [str(tmp_path / "up.trace")]  # builtin: and None name no file
    sha = hashlib.sha256(TRACE.encode()).hexdigest()
    sent = addressed(job, {paths[0]: sha})
    ref = sent["topology"]["links"][0]["uplink"]["trace"]
    assert ref == f"cas:{sha}/up.trace" and str(tmp_path) not in str(sent)
    assert hashes_needed(sent) == [sha]
    monkeypatch.setenv("RTC_TESTBED_INPUT_CACHE", str(tmp_path / "cache"))
    back = materialise(sent, {sha: TRACE.encode()})
    got = Path(back["topology"]["links"][0]["uplink"]["trace"])
    assert got.read_text() == TRACE and got.parent.name == sha and got.name == "up.trace"
    other = addressed(job, {paths[0]: "0" * 64})
    with pytest.raises(ValueError, match="do not match their hash"):
        materialise(other, {"0" * 64: TRACE.encode()})


def test_digest_covers_the_topology_and_every_input_file(tmp_path: Path) -> None:
    p = write(tmp_path, "set: {uplink.rate_mbps: null, uplink.trace: up.trace}\n")
    a = load_experiment(p)
    assert list(a.inputs) == [str(tmp_path / "up.trace")]
    assert load_experiment(p).digest == a.digest
    write(tmp_path, "set: {uplink.rate_mbps: null, uplink.trace: up.trace}\n", TRACE + "400\n")
    assert load_experiment(p).digest != a.digest


def test_shuffle_is_seeded_and_grid_order_is_kept(tmp_path: Path) -> None:
    exp = load_experiment(
        write(tmp_path, "grid: {stream.bitrate_mbps: [1, 2, 3, 4]}\nrepetitions: 2\n")
    )
    grid = [c.cell_id for _, c in Plan(exp, set()).initial("grid", 0)]
    assert grid == [c.cell_id for c in exp.cells]
    one = [c.cell_id for _, c in Plan(exp, set()).initial("shuffle", 7)]
    assert one == [c.cell_id for _, c in Plan(exp, set()).initial("shuffle", 7)]
    assert one != grid and sorted(one) == sorted(grid)
    assert one != [c.cell_id for _, c in Plan(exp, set()).initial("shuffle", 8)]
    done = {grid[0], grid[3]}
    assert len(Plan(exp, done).initial("shuffle", 7)) == 6


def test_precision_adds_repetitions_only_where_the_interval_is_wide() -> None:
    p = Precision("p95", ci_ms=2.0)
    assert more_repetitions([50.0, 50.4], p, 2, 10)[0] == 0  # deterministic: stops
    add, (lo, hi, _) = more_repetitions([50.0, 80.0, 62.0], p, 3, 10)
    assert hi - lo > 2 and 1 <= add <= 7  # noisy: more, at most up to the cap
    assert more_repetitions([50.0, 80.0, 62.0], p, 10, 10)[0] == 0  # at repetitions_max
    pct = Precision("p95", ci_pct=5.0)
    assert more_repetitions([100.0, 103.0], pct, 2, 10)[0] == 0
    assert more_repetitions([100.0, 130.0], pct, 2, 10)[0] >= 1


def test_precision_plan_refines_a_configuration_once_its_cells_settle(tmp_path: Path) -> None:
    exp = load_experiment(write(tmp_path, "grid: {uplink.loss_pct: [0, 10]}\nrepetitions: 2\n"
                                "repetitions_max: 5\nprecision: {metric: p95, ci_ms: 2}\n"))  # fmt: skip
    plan = Plan(exp, set())
    todo = plan.initial("grid", 0)
    stats = {c.cell_id: v for (_, c), v in zip(todo, [40.0, 40.2, 40.0, 90.0], strict=True)}
    for config, cell in todo[:3]:
        plan.settled(config, cell.cell_id, True)
    assert plan.refine(0, lambda ids: [stats[i] for i in ids]) == []  # met
    assert plan.refine(1, lambda ids: [stats[i] for i in ids]) == []  # one cell still pending
    plan.settled(*todo[3][0:1], todo[3][1].cell_id, True)
    more = plan.refine(1, lambda ids: [stats[i] for i in ids])
    assert 1 <= len(more) <= 3 and all(c.params["repetition"] >= 2 for _, c in more)
    assert Plan(exp, {c.cell_id for _, c in [*todo, *more]}).scheduled[1] == 2 + len(more)


@pytest.mark.parametrize(("text", "key"), [
    ("precision: {metric: p42, ci_ms: 2}\nrepetitions: 2\n", "precision.metric"),
    ("precision: {metric: p95}\nrepetitions: 2\n", "precision"),
    ("precision: {ci_ms: -1}\nrepetitions: 2\n", "precision.ci_ms"),
    ("precision: {ci_ms: 2}\n", "repetitions"),
    ("repetitions: 3\nrepetitions_max: 2\n", "repetitions_max"),
])  # fmt: skip
def test_bad_precision_is_one_line_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_experiment(write(tmp_path, text))
    assert e.value.key == key, str(e.value)


def test_report_warns_when_a_configuration_ran_on_different_kinds_of_hosts(tmp_path: Path) -> None:
    import json

    from testbed.analysis.load import mixed_hosts

    def cell(cid: str, rep: int, loss: int, kernel: str) -> None:
        (tmp_path / "cells" / cid).mkdir(parents=True)
        host = {"name": f"h-{kernel}", "kernel": kernel, "machine": "x86_64", "cpus": 2,
                "backend": "emu", "testbed_revision": "abc"}  # fmt: skip
        (tmp_path / "cells" / cid / "cell.json").write_text(json.dumps(
            {"params": {"uplink.loss_pct": loss, "repetition": rep}, "host": host}))  # fmt: skip

    cell("a", 0, 0, "6.1")
    cell("b", 1, 0, "6.1")
    cell("c", 0, 5, "6.1")
    assert mixed_hosts(tmp_path) == []
    cell("d", 1, 5, "6.18")
    (warning,) = mixed_hosts(tmp_path)
    assert '"uplink.loss_pct": 5' in warning and "h-6.1" in warning and "kernel 6.18" in warning


def _tar(files: dict[str, bytes]) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_a_cell_that_comes_back_is_written_whole_and_once(tmp_path: Path) -> None:
    import tarfile

    from testbed.errors import TestbedError
    from testbed.experiment.runner import write_cell

    final = tmp_path / "cells" / "abc"
    final.parent.mkdir()
    write_cell(final, _tar({"./cell.json": b'{"a": 1}', "./frames.parquet": b"x"}))
    assert (final / "cell.json").read_bytes() == b'{"a": 1}'
    write_cell(final, _tar({"./cell.json": b'{"a": 2}'}))  # a second copy (run twice): dropped
    assert (final / "cell.json").read_bytes() == b'{"a": 1}'
    other = tmp_path / "cells" / "def"
    with pytest.raises(TestbedError, match=r"without its cell\.json"):
        write_cell(other, _tar({"./frames.parquet": b"x"}))
    with pytest.raises(tarfile.TarError):  # a member outside the cell's folder
        write_cell(other, _tar({"../evil": b"x", "./cell.json": b"{}"}))
    assert sorted(p.name for p in (tmp_path / "cells").iterdir()) == ["abc"]
    assert not (tmp_path / "evil").exists()


def test_without_tarfiles_data_filter_the_same_members_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Debian 12's own Python (3.11.2) has no tarfile data filter: the check by hand refuses
    what it would (found running `make run` in the testbed's image)."""
    import tarfile

    from testbed.errors import TestbedError
    from testbed.experiment.runner import write_cell

    monkeypatch.delattr(tarfile, "data_filter")
    good = tmp_path / "cells" / "abc"
    good.parent.mkdir()
    write_cell(good, _tar({"./cell.json": b"{}", "./sender/info.json": b"{}"}))
    assert (good / "sender" / "info.json").exists()
    with pytest.raises(TestbedError, match="not a plain file inside its folder"):
        write_cell(tmp_path / "cells" / "def", _tar({"../evil": b"x", "./cell.json": b"{}"}))
    assert not (tmp_path / "evil").exists() and not (tmp_path / "cells" / "def").exists()


def test_a_failed_cells_files_are_kept_aside_per_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed cell's folder (captures over the limit dropped) comes back as RESULTS/failed/
    CELL-N with failure.txt; never among the cells."""
    from testbed.experiment import cell
    from testbed.experiment.runner import keep_failed_cell
    from testbed.experiment.worker import _pack

    monkeypatch.setattr(cell, "KEEP_MAX_BYTES", 100)
    staged = tmp_path / "work" / ".tmp-abc-1"
    (staged / "sessions" / "s").mkdir(parents=True)
    (staged / "sessions" / "s" / "sender.stderr").write_text("boom\n")
    (staged / "sessions" / "s" / "sender.pcap").write_bytes(b"x" * 101)
    aside = cell.failed_folder(tmp_path / "work" / "abc")
    cell.keep_failed(staged, aside, "cell abc: sender: no 'done' within 151 s")
    assert not staged.exists()
    assert not (aside / "sessions" / "s" / "sender.pcap").exists()
    out = tmp_path / "results"
    out.mkdir()
    first = keep_failed_cell(out, "abc", _pack(aside))
    second = keep_failed_cell(out, "abc", _pack(aside))
    assert first == out / "failed" / "abc-1" and second == out / "failed" / "abc-2"
    assert (first / "sessions" / "s" / "sender.stderr").read_text() == "boom\n"
    assert "no 'done'" in (first / "failure.txt").read_text()
    assert keep_failed_cell(out, "def", None) is None and not (out / "cells").exists()
