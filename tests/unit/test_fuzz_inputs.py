"""Every input parser, fuzzed: a bad file is a TestbedError naming it (one line, exit 2 at the
CLI), never a traceback. Inputs: random text, and valid files cut, spliced and mangled."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testbed import errors
from testbed.config import load_topology
from testbed.config.traces import read_link_trace
from testbed.experiment.spec import load_experiment
from testbed.roi.regions import load_regions
from testbed.shaping.linklog import read_link_log
from testbed.viewer.questions import load_questions
from tests.conftest import ROOT

TRIES = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
LINK_LOG = (
    "# rtc-testbed link log v1\n"
    '# {"run": "tb", "link": "path", "direction": "uplink", "start_mono_ns": 1}\n'
    "seq\tarrival_ns\tbytes\tevent\tlink_exit_ns\tsched_ns\tactual_ns\n"
    "0\t10\t1200\tdeliver\t20\t30\t31\n1\t11\t1200\tdrop_loss\t\t\t\n"
)
VALID: dict[str, tuple[str, str, Callable[[Path], Any]]] = {
    "topology": ((ROOT / "topologies" / "p2p.yaml").read_text(), "t.yaml", load_topology),
    "experiment": ((ROOT / "experiments" / "quick.yaml").read_text().replace(
        "../topologies/p2p.yaml", str(ROOT / "topologies" / "p2p.yaml")), "e.yaml",
        lambda p: load_experiment(p)),
    "mahimahi": ((ROOT / "topologies" / "traces" / "const-5.trace").read_text()[:400], "x.trace",
                 lambda p: read_link_trace(p)),
    "opennetlab": ((ROOT / "topologies" / "traces" / "opennetlab" / "4G_700kbps.json").read_text(),
                   "o.json", lambda p: read_link_trace(p)),
    "link log": (LINK_LOG, "link-path-uplink.log", read_link_log),
    "questions": ("id,question,answer\nq1,what is written?,hello\n", "q.csv", load_questions),
    "regions": ((ROOT / "experiments" / "roi" / "scene-640x360.regions.json").read_text(), "r.json",
                lambda p: load_regions(str(p), 640, 360)),
}  # fmt: skip


def _check(kind: str, text: str) -> None:
    _, name, load = VALID[kind]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_text(text, errors="surrogateescape")
        try:
            load(path)
        except errors.TestbedError as e:
            assert "\n" not in str(e).strip(), f"{kind}: a multi-line error: {e}"


def mangled(kind: str) -> st.SearchStrategy[str]:
    text = VALID[kind][0]
    cut = st.integers(0, len(text)).map(lambda i: text[:i])
    splice = st.tuples(st.integers(0, len(text)), st.integers(0, 40), st.text(max_size=12)).map(
        lambda t: text[: t[0]] + t[2] + text[t[0] + t[1] :]
    )
    return st.one_of(cut, splice, st.text(max_size=200))


KINDS = sorted(VALID)


@TRIES
@given(st.sampled_from(KINDS).flatmap(lambda k: st.tuples(st.just(k), mangled(k))))
def test_a_bad_input_file_is_a_testbed_error(case: tuple[str, str]) -> None:
    _check(*case)


def test_the_valid_files_load() -> None:
    for kind in KINDS:
        _check(kind, VALID[kind][0])
