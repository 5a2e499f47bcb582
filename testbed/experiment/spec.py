"""Experiment files: a base topology + overrides + a grid; every combination x repetition is a cell.

Every cell's full configuration is built and validated before anything runs, so a bad value in
the last cell of a grid fails at once, with one line naming the file and the key.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from testbed.config import (
    Override,
    TopologySpec,
    apply_overrides,
    parse_topology,
    read_topology_file,
    read_yaml,
)
from testbed.config.rmcat import RmcatSpec, check_timeline, parse_rmcat
from testbed.config.traffic import check_malformed_targets
from testbed.errors import ConfigError
from testbed.experiment.inputs import file_sha256, input_paths
from testbed.experiment.precision import Precision, parse_precision
from testbed.rtc.spec import StreamSpec, parse_stream, session_streams, set_key

EXPERIMENT_KEYS = ("name", "topology", "set", "stream", "grid", "repetitions", "seed", "max_cells",
                   "precision", "repetitions_max", "rmcat")  # fmt: skip
DEFAULT_MAX_CELLS = 1000


@dataclass(frozen=True)
class Cell:
    """One run: its grid values (params), resolved topology and stream, and a stable id."""

    cell_id: str
    params: dict[str, Any]
    topology: TopologySpec
    stream: StreamSpec
    seed: int


@dataclass(frozen=True)
class Config:
    """One combination of grid values, resolved; its repetitions are its cells."""

    values: dict[str, Any]
    topology: TopologySpec
    stream: StreamSpec


@dataclass(frozen=True)
class Experiment:
    """cells: the first `repetitions` of every configuration; with `precision`, more
    repetitions of a configuration (up to repetitions_max) come from cell()."""

    name: str
    source: str
    text: str
    topology_path: str
    topology_text: str
    configs: tuple[Config, ...]
    repetitions: int
    grid: dict[str, list[Any]]
    seed: int
    inputs: dict[str, str]  # every input file the cells name -> its sha256
    precision: Precision | None = None
    repetitions_max: int = 0
    rmcat: RmcatSpec | None = None  # an RFC 8867 case (testbed.config.rmcat)

    def only(self, wanted: Mapping[str, Any]) -> Experiment:
        """The configurations whose grid values match every key = value of `wanted` (a key
        inside a grid over whole mappings: stream.abr matches grid `stream: [{abr: ...}]`)."""
        return replace(self, configs=tuple(c for c in self.configs
                                           if all(_grid_value(c.values, k) == v
                                                  for k, v in wanted.items())))  # fmt: skip

    def cell(self, config: int, repetition: int) -> Cell:
        c = self.configs[config]
        params = {**c.values, "repetition": repetition}
        cell_seed = int(_cell_id({**params, "seed": self.seed}), 16) % (2**31)
        return Cell(_cell_id(params), params, c.topology, c.stream, seed=cell_seed)

    @property
    def cells(self) -> tuple[Cell, ...]:
        return tuple(self.cell(i, rep) for i in range(len(self.configs))
                     for rep in range(self.repetitions))  # fmt: skip

    @property
    def digest(self) -> str:
        """Covers the experiment file, its topology file and what every input file holds."""
        h = hashlib.sha256(self.text.encode())
        h.update(b"\0topology\0" + self.topology_text.encode())
        for path, sha in sorted(self.inputs.items()):
            h.update(f"\0input\0{Path(path).name}\0{sha}".encode())
        return h.hexdigest()[:16]


def _grid_value(values: Mapping[str, Any], key: str) -> Any:
    if key in values:
        return values[key]
    head, _, rest = key.partition(".")
    inner = values.get(head)
    return inner.get(rest) if isinstance(inner, Mapping) and rest else None


def _cell_id(params: Mapping[str, Any]) -> str:
    canonical = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha1(canonical.encode()).hexdigest()[:12]


def _beside(value: Any, exp_dir: Path) -> Any:
    """A relative file path in an experiment file: beside the file if it is there, else from
    where testbed runs (the rule `topology:` follows), so the file runs from any directory."""
    if not isinstance(value, str) or value.startswith("builtin:") or Path(value).is_absolute():
        return value
    beside = exp_dir / value
    return str(beside.resolve()) if beside.exists() else value


def _file_value(key: str, value: Any, exp_dir: Path) -> Any:
    """Topology keys that name files (a link's trace)."""
    return _beside(value, exp_dir) if key.split(".")[-1] == "trace" else value


def _stream_files(data: dict[str, Any], exp_dir: Path) -> dict[str, Any]:
    """Stream keys that name files: video, roi.regions, roi.weights, abr_params.curve."""
    if "video" in data:
        data["video"] = _beside(data["video"], exp_dir)
    params = data.get("abr_params")
    if isinstance(params, Mapping) and "curve" in params:
        data["abr_params"] = {**params, "curve": _beside(params["curve"], exp_dir)}
    roi = data.get("roi")
    if isinstance(roi, Mapping):
        data["roi"] = {k: _beside(v, exp_dir) if k in ("regions", "weights") else v
                       for k, v in roi.items()}  # fmt: skip
    return data


def load_experiment(path: str | Path, max_cells: int | None = None) -> Experiment:
    src = str(path)
    raw = read_yaml(path)
    if not isinstance(raw, Mapping):
        raise ConfigError(src, "", "expected a mapping with keys: " + ", ".join(EXPERIMENT_KEYS))
    for key in raw:
        if key not in EXPERIMENT_KEYS:
            raise ConfigError(src, str(key), f"unknown key; valid: {', '.join(EXPERIMENT_KEYS)}")
    name = raw.get("name", Path(src).stem)
    if not isinstance(name, str) or not name:
        raise ConfigError(src, "name", f"{name!r}: expected a non-empty string")
    topo_ref = raw.get("topology")
    if not isinstance(topo_ref, str):
        raise ConfigError(src, "topology", "expected the path of a topology file")
    exp_dir = Path(src).resolve().parent
    topo_path = Path(_beside(topo_ref, exp_dir)).resolve()
    base_raw = read_topology_file(topo_path)
    sets = raw.get("set") or {}
    stream = raw.get("stream") or {}
    grid = raw.get("grid") or {}
    for key, value in (("set", sets), ("stream", stream), ("grid", grid)):
        if not isinstance(value, Mapping):
            raise ConfigError(src, key, "expected a mapping of keys to values")
    repetitions = raw.get("repetitions", 1)
    if isinstance(repetitions, bool) or not isinstance(repetitions, int) or repetitions < 1:
        raise ConfigError(src, "repetitions", f"{repetitions!r}: valid: a whole number >= 1")
    seed = raw.get("seed", 1)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(src, "seed", f"{seed!r}: valid: a whole number >= 0")
    limit = max_cells or raw.get("max_cells", DEFAULT_MAX_CELLS)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(src, f"grid.{key}", "expected a non-empty list of values")
    n_cells = repetitions
    for values in grid.values():
        n_cells *= len(values)
    if n_cells > limit:
        raise ConfigError(src, "grid", f"{n_cells} cells is more than the limit of {limit}; "
                          "pass --yes (or raise max_cells) to run them all")  # fmt: skip
    precision = parse_precision(raw.get("precision"), src)
    reps_max = raw.get("repetitions_max", repetitions if precision is None else 10 * repetitions)
    if isinstance(reps_max, bool) or not isinstance(reps_max, int) or reps_max < repetitions:
        raise ConfigError(src, "repetitions_max",
                          f"{reps_max!r}: valid: a whole number >= repetitions ({repetitions})")  # fmt: skip
    if precision is not None and repetitions < 2:
        raise ConfigError(src, "repetitions", "with precision: valid: >= 2 (an interval needs "
                          "two repetitions to start from)")  # fmt: skip
    rmcat = parse_rmcat(raw.get("rmcat"), src)
    keys = list(grid)
    configs: list[Config] = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        values = dict(zip(keys, combo, strict=True))
        stream_data = dict(stream)
        overrides: list[Override] = [(k, _file_value(k, v, exp_dir)) for k, v in sets.items()]
        for key, value in values.items():
            if (
                key == "stream"
            ):  # a grid over whole sets of stream keys (a controller and its params)
                if not isinstance(value, Mapping):
                    raise ConfigError(src, "grid.stream", f"{value!r}: valid: mappings of stream "
                                      "keys, e.g. [{abr: gcc}, {abr: cap, abr_params: {cap_mbps: 1}}]")  # fmt: skip
                stream_data.update(value)
            elif key == "set":  # a grid over sets of topology keys that change together
                if not isinstance(value, Mapping):
                    raise ConfigError(src, "grid.set", f"{value!r}: valid: mappings of topology "
                                      "keys, e.g. [{uplink.delay_ms: 50, downlink.delay_ms: 50}]")  # fmt: skip
                overrides.extend(
                    (str(k), _file_value(str(k), v, exp_dir)) for k, v in value.items()
                )
            elif key.startswith("stream."):
                set_key(stream_data, key.removeprefix("stream."), value)
            else:
                overrides.append((key, _file_value(key, value, exp_dir)))
        stream_data = _stream_files(stream_data, exp_dir)
        try:
            topo = parse_topology(apply_overrides(base_raw, overrides), str(topo_path),
                                  topo_path.resolve().parent)  # fmt: skip
            spec = parse_stream(stream_data, src)
            session_streams(topo, spec)  # each session's stream, when the topology has them
            for role in ("sender", "receiver") if not topo.sessions else ():
                if getattr(spec, role) not in topo.hosts:
                    raise ConfigError(src, f"stream.{role}", f"{getattr(spec, role)!r} is not a "
                                      f"host of {topo_path.name}; valid: {', '.join(topo.hosts)}")  # fmt: skip
            check_malformed_targets(
                topo.cross_traffic, (spec.sender, spec.receiver), str(topo_path)
            )
            if rmcat is not None:
                check_timeline(rmcat, topo, spec.duration_s, src)
        except ConfigError as e:
            where = f"grid {values}" if values else "set/stream"
            key = f"grid.{e.key}" if e.key in values or f"stream.{e.key}" in values else e.key
            raise ConfigError(src, key, f"{e.message} (in {where})") from None
        configs.append(Config(values, topo, spec))
    files = {f for c in configs for f in input_paths({"t": c.topology.to_dict(),
                                                      "s": c.stream.to_dict()})}  # fmt: skip
    return Experiment(
        name=name, source=src, text=Path(src).read_text(), topology_path=str(topo_path),
        topology_text=topo_path.read_text(), configs=tuple(configs), repetitions=repetitions,
        grid=dict(grid), seed=seed, inputs={f: file_sha256(f) for f in sorted(files)},
        precision=precision, repetitions_max=reps_max, rmcat=rmcat,
    )  # fmt: skip
