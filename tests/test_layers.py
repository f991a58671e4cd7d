"""Imports flow one way (docs/architecture.md): the API process never loads the consumer loop,
a worker process never loads the web stack, and no module of imgstream imports itself back
through others, not even under ``TYPE_CHECKING`` or inside a function; and no module grows
past what a reader takes in at once (``MAX_MODULE_LINES``)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import imgstream

PACKAGE = Path(imgstream.__file__).parent
WEB_STACK = ("fastapi", "starlette", "uvicorn")
WORKER_SIDE = (
    "imgstream.worker",
    "imgstream.worker_process",
    "imgstream.janitor",
    "imgstream.telemetry",
    "imgstream.supervisor",
)


def loaded_by(*modules: str) -> set[str]:
    """Every module a fresh interpreter holds after importing ``modules`` (and nothing else)."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return set(json.loads(out))


def top_level(name: str) -> str:
    return name.split(".")[0]


def test_the_api_process_does_not_load_the_worker_side() -> None:
    loaded = loaded_by("imgstream.api", "imgstream.ops_api", "imgstream.http_server")
    assert "fastapi" in loaded  # the probe does see what an import pulls in
    assert sorted(loaded & set(WORKER_SIDE)) == []


def test_the_api_process_does_not_load_numpy() -> None:
    """numpy comes with the luma decoder (``imgstream.luma`` loads it on first use), which only
    a worker runs: the API reads headers and would carry ~10 MiB for nothing."""
    assert "numpy" not in loaded_by("imgstream.api", "imgstream.ops_api", "imgstream.http_server")


def test_a_worker_process_does_not_load_the_web_stack() -> None:
    loaded = loaded_by("imgstream.supervisor", "imgstream.worker_process")
    assert {"imgstream.worker", "imgstream.janitor"} <= loaded
    assert sorted({top_level(name) for name in loaded} & set(WEB_STACK)) == []


def imports_of(path: Path) -> set[str]:
    """The imgstream modules that ``path`` imports anywhere in its text."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "imgstream":
                found.update(f"imgstream.{alias.name}" for alias in node.names)
            elif node.module.startswith("imgstream."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("imgstream."))
    return found


def module_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[name] = imports_of(path)
    return {
        name: {dep for dep in deps if dep in graph and dep != name} for name, deps in graph.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One path per cycle found by a depth-first walk (empty when the graph is acyclic)."""
    found: list[list[str]] = []
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> None:
        if name in path:
            found.append([*path[path.index(name) :], name])
            return
        if name in done:
            return
        path.append(name)
        for dep in sorted(graph[name]):
            visit(dep)
        path.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)
    return found


LAYERS: dict[str, tuple[int, str]] = {
    "model": (
        0,
        "config settings_backends settings_http setting_values limits output steps operations"
        " lifecycle jobs deliveries keys redis_health"
        " transforms imaging image_errors decoding encoding luma tiny placeholder api_models"
        " webhooks batches content malloc_arenas",
    ),
    "store": (
        1,
        "connection queue queue_layout producer group_upkeep deadletters storage s3_storage"
        " job_counters heartbeats runtime deployment"
        " webhook_queue batch_queue cache",
    ),
    "observe": (2, "fleet_snapshot prometheus logs"),
    "worker": (
        3,
        "processing outages held_entries worker worker_process janitor telemetry supervisor"
        " processes webhook_sender",
    ),
    "http": (
        3,
        "errors services api ops_api auth ratelimit http_server assets"
        " upload_form job_changes sse intake idempotency upload_refusals result_download middleware"
        " middleware.api_keys middleware.body_limit middleware.cors middleware.head"
        " middleware.http_metrics middleware.json_errors middleware.rate_limit"
        " middleware.request_limits middleware.security_headers"
        " batch_intake batch_api batch_archive",
    ),
    "cli": (4, "cli commands client submit launcher redis_server stats_view __main__"),
}
"""docs/architecture.md's layers: a module imports from its own layer or from lower ones;
``worker`` and ``http`` stand side by side and never import each other."""


def layer_of() -> dict[str, str]:
    return {
        f"imgstream.{module}": layer
        for layer, (_, modules) in LAYERS.items()
        for module in modules.split()
    }


def test_every_module_has_a_layer() -> None:
    assert sorted(set(module_graph()) - set(layer_of()) - {"imgstream"}) == []


def test_imports_go_down_the_layers() -> None:
    layers = layer_of()
    wrong = []
    for module, deps in sorted(module_graph().items()):
        if module not in layers:
            continue
        here = layers[module]
        for dep in sorted(deps):
            there = layers[dep]
            if there != here and LAYERS[there][0] >= LAYERS[here][0]:
                wrong.append(f"{module} ({here}) imports {dep} ({there})")
    assert wrong == []


def test_the_cycle_finder_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_module_imports_itself_back() -> None:
    graph = module_graph()
    assert graph.get("imgstream.api")
    assert cycles(graph) == []


MAX_MODULE_LINES = 400
"""A module over this is split along its seams (docs/architecture.md), not allowed to grow."""


def test_no_module_is_over_the_line_limit() -> None:
    sizes = {
        str(path.relative_to(PACKAGE)): len(path.read_text().splitlines())
        for path in sorted(PACKAGE.rglob("*.py"))
    }
    assert sizes["api.py"] > 0  # the walk does see the package
    over = {name: lines for name, lines in sizes.items() if lines > MAX_MODULE_LINES}
    assert over == {}
