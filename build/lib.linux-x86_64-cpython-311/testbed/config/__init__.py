"""Topology and link specifications (frozen dataclasses, strict YAML) and the trace files links
follow. Pure data: building them into kernel state is testbed.net's job."""

from testbed.config.schedule import GilbertElliottSpec, ScheduleSpec, Segment
from testbed.config.topology import (
    BACKENDS,
    DEFAULT_QUEUE_PACKETS,
    ContainerSpec,
    LinkDef,
    LinkSpec,
    Override,
    TopologySpec,
    apply_overrides,
    load_topology,
    parse_link_spec,
    parse_set,
    parse_topology,
    read_topology_file,
    topology_from_dict,
    validate_run_name,
)
from testbed.yamlio import read_yaml

__all__ = [
    "BACKENDS",
    "DEFAULT_QUEUE_PACKETS",
    "ContainerSpec",
    "GilbertElliottSpec",
    "LinkDef",
    "LinkSpec",
    "Override",
    "ScheduleSpec",
    "Segment",
    "TopologySpec",
    "apply_overrides",
    "load_topology",
    "parse_link_spec",
    "parse_set",
    "parse_topology",
    "read_topology_file",
    "read_yaml",
    "topology_from_dict",
    "validate_run_name",
]
