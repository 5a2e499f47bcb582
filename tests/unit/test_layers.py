"""Layers point one way. The order is written once, here: a folder may import only the folders
before it (and itself). Every import counts, lazy ones inside functions too, so neither an
upward import nor a cycle between folders can come back unnoticed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "testbed"

LAYERS = [
    "base",  # testbed/*.py: errors, files, validate, yamlio, procstat, versions, seqnum, plugins
    "config",  # topology and link specs, trace files (pure data)
    "models",  # pure models: analytic latency, windowed loss
    "net",  # namespaces, the ledger, Network, the Shaper protocol the backends implement
    "shaping",  # the link backends (emu, netem, user-mode-linux) and which one this machine has
    "abr",  # bitrate controllers (pure) and per-frame feedback
    "fec",  # FEC codec, planner, sender and receiver halves (pure)
    "roi",  # context-aware encoding: scorers, QP maps, the roi source, quality; scenes
    "viewer",  # the AI viewer: intake, question files, judges, accuracy
    "rtc",  # stream spec, Stack protocol, endpoint record, sources, session, frame table; stacks
    "analysis",  # results folders -> tables, model comparison, plots
    "experiment",  # grids of cells, the runner
    "bench",  # benchmarks
    "cli",  # the `testbed` command
]


def folder_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "testbed":
        raise ValueError(module)
    if len(parts) == 1 or (ROOT / f"{parts[1]}.py").exists():
        return "base"
    return parts[1]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every testbed import in the file, lazy ones included."""
    tree = ast.parse(path.read_text(), str(path))
    here = module_name(path).split(".")
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("testbed")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_pkg else here[:-1]
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.startswith("testbed"):
                out.append((node.lineno, name))
    return out


def all_edges() -> list[tuple[str, int, str, str]]:
    edges = []
    for path in sorted(ROOT.rglob("*.py")):
        src = folder_of(module_name(path))
        for line, target in imports(path):
            edges.append((str(path.relative_to(ROOT.parent)), line, src, folder_of(target)))
    return edges


def test_every_folder_has_a_layer() -> None:
    folders = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders <= set(LAYERS), f"give {sorted(folders - set(LAYERS))} a place in LAYERS"


def test_imports_only_point_down() -> None:
    bad = [
        f"{where}:{line}: {src} imports {dst} (a layer above it)"
        for where, line, src, dst in all_edges()
        if LAYERS.index(dst) > LAYERS.index(src)
    ]
    assert not bad, "\n".join(bad)


def test_only_the_aiortc_stack_imports_aiortc() -> None:
    stack = ROOT / "rtc" / "aiortc"
    bad = []
    for path in ROOT.rglob("*.py"):
        if stack in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            bad += [f"{path}:{node.lineno}" for n in names if n.split(".")[0] == "aiortc"]
    assert not bad, bad


@pytest.mark.parametrize(
    ("module", "folder"),
    [("testbed", "base"), ("testbed.errors", "base"), ("testbed.rtc.aiortc.compat", "rtc"),
     ("testbed.config.traces", "config")],
)  # fmt: skip
def test_folder_of(module: str, folder: str) -> None:
    assert folder_of(module) == folder


def module_edges() -> dict[str, set[str]]:
    """File-level imports: module -> the testbed modules it imports (lazy ones and those under
    TYPE_CHECKING included; `from pkg import mod` points at mod, `from mod import name` at mod)."""
    paths = {module_name(p): p for p in ROOT.rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in paths}
    for mod, path in paths.items():
        here = mod.split(".")
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = here if is_pkg else here[:-1]
                    pkg = pkg[: len(pkg) - (node.level - 1)]
                    base = ".".join(pkg + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base
                           for a in node.names]  # fmt: skip
            for t in targets:
                r = resolve(t) if t.startswith("testbed") else None
                if r is not None and r != mod:
                    graph[mod].add(r)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_between_files() -> None:
    """A module that reaches back into its user (the ledger importing the container hosts that
    use it, a spec importing what it validates) makes a cycle; none may come back."""
    assert cycles(module_edges()) == []


def test_the_cycle_finder_finds_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


MAX_PARAMETERS = 8


def _wide_functions() -> list[str]:
    """Functions taking more than MAX_PARAMETERS parameters (self aside), outside the two
    places where each parameter is a user's knob: click commands (one per option) and the ABR
    controllers' constructors (their abr_params, by name)."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("cli/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            a = node.args
            names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
            count = len(names) - (names[:1] in (["self"], ["cls"]))
            if count > MAX_PARAMETERS and not (rel.startswith("abr/") and node.name == "__init__"):
                found.append(f"{rel}:{node.lineno} {node.name} ({count})")
    return found


def test_no_function_takes_more_than_eight_parameters() -> None:
    assert _wide_functions() == [], "take a small object instead (e.g. RunOptions, LoopIo)"
