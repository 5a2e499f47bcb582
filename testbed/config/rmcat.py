"""RFC 8867's test cases as a catalogue, and an experiment's `rmcat:` key. Pure.

  rmcat:
    case: "5.1"                  # which case: the verdict's criteria come from it
    variant: schedule            # how capacity varies: schedule | cross_traffic (a label)
    bottleneck: path.uplink      # link.direction the flows share [each session's own path]
    not_applicable: {aiortc: "no priority between peer connections"}   # stack -> why
    criteria: {convergence_max_s: 20, tcp_mbps: {min: 0.5}}   # thresholds over the case's

Each case's criteria are written from the RFCs' expected behaviour (docs/rmcat.md says why each
threshold is what it is). A number overrides a criterion of the case; {min: x} or {max: x} adds
one on any metric the analysis computes (METRICS). Checked before anything starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from testbed import validate
from testbed.config.topology import TopologySpec
from testbed.errors import ConfigError

# What testbed.analysis.rmcat computes; "flow": one value per media flow, "cell": one per cell.
METRICS: dict[str, tuple[str, str]] = {
    "frame_delay_p50_ms": ("flow", "frame one-way delay (first packet sent -> frame complete), median"),
    "frame_delay_p95_ms": ("flow", "... 95th percentile"),
    "packet_delay_p50_ms": ("flow", "media packet one-way delay (sender's wire -> receiver's wire), median"),
    "packet_delay_p95_ms": ("flow", "... 95th percentile"),
    "rate_mbps": ("flow", "mean send rate on the wire while active (media, RTX, FEC, audio)"),
    "share": ("flow", "its rate over its fair share of the available capacity, mean over seconds"),
    "oscillations_per_min": ("flow", "swings of the 500 ms rate between the watermarks (0.5x and 1.1x its fair share)"),
    "convergence_max_s": ("flow", "the longest time to converge after a capacity change, join, leave, pause or resume (inf: never)"),
    "starved_share": ("flow", "share of its active seconds below 150 kbps (RFC 8867's lowest media rate)"),
    "loss_before_repair_pct": ("flow", "media originals lost on the wire"),
    "loss_after_repair_pct": ("flow", "media packets that never arrived, original or retransmission"),
    "feedback_overhead_pct": ("flow", "RTCP bytes (receiver -> sender) over the media bytes"),
    "audio_delay_p95_ms": ("flow", "audio packets' one-way delay, 95th percentile"),
    "utilisation": ("cell", "the flows' summed rate over the available capacity, mean over seconds"),
    "jain_min": ("cell", "the lowest Jain's index over the phases with several flows (each after 10 s)"),
    "queue_delay_p95_ms": ("cell", "queueing delay at the bottleneck from its link log, 95th percentile"),
    "spare_taken": ("cell", "the other flows' rate while one pauses over their rate before (5.8)"),
    "tcp_mbps": ("cell", "the TCP flows' mean goodput while they run"),
    "tcp_share": ("cell", "their goodput over the capacity"),
    "ecn_capable_pct": ("cell", "media packets at the bottleneck marked ECN-capable (6.2)"),
}  # fmt: skip


@dataclass(frozen=True)
class Criterion:
    metric: str
    op: str  # "<=" or ">="
    threshold: float
    why: str = ""

    def holds(self, value: float) -> bool:
        return value <= self.threshold if self.op == "<=" else value >= self.threshold

    def words(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"


@dataclass(frozen=True)
class Case:
    case: str
    title: str
    expected: str  # the RFC's expected behaviour, in our words
    criteria: tuple[Criterion, ...]
    key: str  # the metric the scorecard shows

    def criterion(self, metric: str) -> Criterion | None:
        return next((c for c in self.criteria if c.metric == metric), None)


_QUEUE = Criterion("queue_delay_p95_ms", "<=", 100.0,
                   "RFC 8836: keep queueing delay low; 100 ms is a third of the 300 ms queue")  # fmt: skip
_CONVERGE = Criterion("convergence_max_s", "<=", 15.0,
                      "converge within 15 s of each change (RFC 8868 convergence time)")  # fmt: skip
_USE = Criterion("utilisation", ">=", 0.6, "use at least 60% of what is available")
_FAIR = Criterion("jain_min", ">=", 0.8, "share fairly: Jain's index >= 0.8 in every phase")
_REPAIRED = Criterion("loss_after_repair_pct", "<=", 1.0, "at most 1% of media never arrives")
_FED = Criterion("starved_share", "<=", 0.1, "no flow below 150 kbps for more than 10% of its time")

# fmt: off
CASES: dict[str, Case] = {c.case: c for c in (
    Case("5.1", "variable available capacity, one flow",
         "detects the limit after each step, converges, no oscillation around it, low delay",
         (_CONVERGE, Criterion("oscillations_per_min", "<=", 2.0, "no repeated overshoot"),
          _USE, _QUEUE, _REPAIRED), "convergence_max_s"),
    Case("5.2", "variable available capacity, two flows",
         "both back off when capacity drops, ramp up again and share it",
         (_CONVERGE, _USE, _FAIR, _QUEUE, _REPAIRED), "jain_min"),
    Case("5.3", "congested feedback link, a flow each way",
         "each flow follows its own direction's capacity although its feedback is congested",
         (_CONVERGE, _USE, _QUEUE, _REPAIRED), "convergence_max_s"),
    Case("5.4", "three flows of the same controller joining",
         "a fair share for each, the third too", (replace(_CONVERGE, threshold=20.0), _FAIR, _USE,
                                                 _QUEUE), "jain_min"),
    Case("5.5", "RTT fairness, five flows of 10-150 ms one way",
         "a fair share regardless of the round-trip time", (_FAIR, _USE, _QUEUE), "jain_min"),
    Case("5.6", "a media flow against a long TCP flow",
         "the media flow is not starved and does not starve TCP",
         (_FED, Criterion("share", ">=", 0.2, "the media keeps a fifth of what it could use "
                          "alone (a third of a fair share against one TCP flow), not its floor"),
          Criterion("tcp_share", ">=", 0.25, "TCP keeps at least a quarter of the link")),
         "starved_share"),
    Case("5.7", "two media flows against short TCP flows",
         "no starvation, recovery after each burst of downloads", (_FED, _FAIR, _USE),
         "utilisation"),
    Case("5.8", "a flow pauses and resumes",
         "the others take the spare capacity, and share fairly again after the resume",
         (Criterion("spare_taken", ">=", 1.2, "the others' rate rises by at least 20%"),
          replace(_CONVERGE, threshold=20.0), _FAIR), "spare_taken"),
    Case("6.1", "media flows with priorities",
         "flow 1 (priority 2) gets about twice the others' rate",
         (_FAIR,), "jain_min"),
    Case("6.2", "explicit congestion notification",
         "marks replace losses: the controller reacts to CE marks, little loss",
         (_CONVERGE, _USE, _QUEUE, Criterion("loss_before_repair_pct", "<=", 0.5,
                                             "with ECN the AQM marks instead of dropping")),
         "loss_before_repair_pct"),
    Case("6.3", "three flows over three bottlenecks",
         "every flow gets a share of each bottleneck it crosses, none starved",
         (_FED, _USE, _QUEUE), "starved_share"),
)}
# fmt: on

VARIANTS = ("schedule", "cross_traffic")
RMCAT_KEYS = ("case", "variant", "bottleneck", "not_applicable", "criteria")
STACKS = ("aiortc", "chromium")


@dataclass(frozen=True)
class RmcatSpec:
    case: Case  # with the experiment's criteria applied
    variant: str = ""  # how capacity varies, where the case varies it
    bottleneck: str | None = None  # "link.direction"; None: each session's own path
    not_applicable: tuple[tuple[str, str], ...] = ()  # (stack, why)

    def na_reason(self, stacks: set[str]) -> str | None:
        for stack, why in self.not_applicable:
            if stack in stacks:
                return f"{stack}: {why}"
        return None


def _criteria(case: Case, raw: Any, src: str) -> Case:
    given = validate.mapping(raw, src, "rmcat.criteria", "{convergence_max_s: 20}")
    out = list(case.criteria)
    for metric, value in given.items():
        key = f"rmcat.criteria.{metric}"
        if metric not in METRICS:
            raise ConfigError(src, key, f"no such metric; valid: {', '.join(METRICS)}")
        if isinstance(value, Mapping):
            if len(value) != 1 or next(iter(value)) not in ("min", "max"):
                raise ConfigError(src, key, "valid: a number (the case's threshold) or "
                                  "{min: x} / {max: x}")  # fmt: skip
            ((bound, x),) = value.items()
            thr = validate.number(x, src, f"{key}.{bound}", -1e12, 1e12)
            out = [c for c in out if c.metric != metric]
            out.append(Criterion(metric, ">=" if bound == "min" else "<=", thr, "the experiment's"))
            continue
        known = case.criterion(metric)
        if known is None:
            raise ConfigError(src, key, f"case {case.case} has no criterion on it (its criteria: "
                              f"{', '.join(c.metric for c in case.criteria)}); add one with "
                              "{min: x} or {max: x}")  # fmt: skip
        thr = validate.number(value, src, key, -1e12, 1e12)
        out = [replace(c, threshold=thr, why=f"{c.why} (the experiment's threshold)")
               if c.metric == metric else c for c in out]  # fmt: skip
    return replace(case, criteria=tuple(out))


def parse_rmcat(raw: Any, src: str) -> RmcatSpec | None:
    if raw is None:
        return None
    d = validate.strict_mapping(raw, RMCAT_KEYS, src, "rmcat", '{case: "5.1"}')
    name = str(d.get("case", ""))
    if name not in CASES:
        raise ConfigError(src, "rmcat.case", f"{d.get('case')!r} is unknown; valid: "
                          f"{', '.join(CASES)} (quote it: \"5.1\")")  # fmt: skip
    case = _criteria(CASES[name], d["criteria"], src) if "criteria" in d else CASES[name]
    variant = (
        validate.choice(d["variant"], VARIANTS, src, "rmcat.variant") if "variant" in d else ""
    )
    neck = d.get("bottleneck")
    if neck is not None and (not isinstance(neck, str) or neck.count(".") != 1
                             or neck.split(".")[1] not in ("uplink", "downlink")):  # fmt: skip
        raise ConfigError(src, "rmcat.bottleneck", f"{neck!r}: valid: LINK.uplink or LINK.downlink")
    na = validate.mapping(d.get("not_applicable") or {}, src, "rmcat.not_applicable",
                          '{aiortc: "why"}')  # fmt: skip
    for stack, why in na.items():
        validate.choice(stack, STACKS, src, "rmcat.not_applicable")
        if not isinstance(why, str) or not why:
            raise ConfigError(src, f"rmcat.not_applicable.{stack}", "say why, in words")
    return RmcatSpec(case, variant, neck, tuple((str(k), str(v)) for k, v in na.items()))


def check_timeline(rmcat: RmcatSpec, topo: TopologySpec, duration_s: float, src: str) -> None:
    """Everything the case times happens within the test: schedule changes, sessions, flows;
    the bottleneck names a link of the topology."""
    links = {lk.name: lk for lk in topo.links}
    if rmcat.bottleneck is not None and rmcat.bottleneck.split(".")[0] not in links:
        raise ConfigError(src, "rmcat.bottleneck", f"{rmcat.bottleneck!r}: no such link; valid: "
                          f"{', '.join(links)}")  # fmt: skip
    for lk in topo.links:
        for direction in ("uplink", "downlink"):
            sched = getattr(lk, direction).schedule
            if sched is None:
                continue
            *changes, last = sched.ends_ns
            if sched.at_end == "loop" and last / 1e9 < duration_s:
                raise ConfigError(src, f"{lk.name}.{direction}.schedule", f"loops at {last / 1e9:g} "
                                  f"s, within the test's {duration_s:g} s; an RFC schedule holds "
                                  "its last segment: at_end: hold")  # fmt: skip
            late = [t / 1e9 for t in changes if t / 1e9 >= duration_s]
            if late:
                raise ConfigError(src, f"{lk.name}.{direction}.schedule",
                                  f"changes at {late[0]:g} s, beyond the test's {duration_s:g} s "
                                  "(stream.duration_s); end the schedule within it")  # fmt: skip
    for s in topo.sessions:
        if s.start_s >= duration_s:
            raise ConfigError(src, f"sessions.{s.name}.start_s", f"{s.start_s:g} s: the test "
                              f"ends at {duration_s:g} s (stream.duration_s)")  # fmt: skip
        end = s.stop_s if s.stop_s is not None else s.start_s + duration_s
        if end > duration_s:
            raise ConfigError(src, f"sessions.{s.name}.stop_s", f"it streams until {end:g} s, after "
                              f"the test's {duration_s:g} s: give it stop_s: {duration_s:g}")  # fmt: skip
    for f in topo.cross_traffic:
        if f.start_s >= duration_s:
            raise ConfigError(src, f"cross_traffic.{f.name}.start_s", f"{f.start_s:g} s: the "
                              f"test ends at {duration_s:g} s (stream.duration_s)")  # fmt: skip
