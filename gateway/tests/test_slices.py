"""The gateway's vertical slices: a slice (one folder per resource) imports its own modules and the
shared kit (common/, upstream/ and the top-level modules: errors, auth, deps, readcache, ...), never
another slice; the shared kit imports no slice. Routes build no protobuf messages (the slice's
convert.py or upstream/ does). Read from the source with ast, nothing imported."""

from __future__ import annotations

import ast
from pathlib import Path

import modelforge_gateway

PACKAGE = Path(modelforge_gateway.__file__).parent
# Folders that are shared kit, not slices (console serves static files).
SHARED_FOLDERS = {"common", "upstream", "console"}
# The application factory assembles the slices: the one module allowed to import them all.
ASSEMBLERS = {"main.py"}


def slices() -> set[str]:
    folders = (p for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    return {p.name for p in folders if p.name not in SHARED_FOLDERS}


def package_of(path: Path) -> str:
    return ".".join(("modelforge_gateway", *path.relative_to(PACKAGE).parent.parts))


def imported_modules(path: Path, package: str) -> list[str]:
    """Every modelforge_gateway module the file (in `package`) imports, absolute or relative."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append(module)
            # `from modelforge_gateway import hub` imports the slice itself.
            found += [f"{module}.{alias.name}" for alias in node.names]
    return [m for m in found if m == "modelforge_gateway" or m.startswith("modelforge_gateway.")]


def slice_of(module: str, known: set[str]) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in known else None


def cross_slice_imports() -> list[str]:
    known = slices()
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.as_posix() in ASSEMBLERS:
            continue
        own = relative.parts[0] if len(relative.parts) > 1 and relative.parts[0] in known else None
        for module in imported_modules(path, package_of(path)):
            target = slice_of(module, known)
            if target is not None and target != own:
                where = f"slice {own}" if own else "shared kit"
                problems.append(f"{relative} ({where}) imports {module}")
    return problems


def test_the_gateway_has_its_slices() -> None:
    expected = {"training", "jobs", "events", "models", "datasets", "playground", "hub", "compare", "system"}
    assert expected | {"finetune", "openai"} <= slices()
    for name in slices() - {"openai"}:
        assert (PACKAGE / name / "routes.py").exists(), name


def test_no_slice_imports_another() -> None:
    assert cross_slice_imports() == []


def test_the_check_sees_a_cross_slice_import(tmp_path: Path) -> None:
    # Every spelling must resolve to its slice, or the test above could pass on anything.
    source = tmp_path / "probe.py"
    source.write_text(
        "import modelforge_gateway.training.routes\n"
        "from modelforge_gateway.models.routes import router\n"
        "from modelforge_gateway import hub\n"
        "from ..playground import convert\n"
        "from .models import JobResponse\n"
    )
    modules = imported_modules(source, "modelforge_gateway.jobs")
    assert {slice_of(m, slices()) for m in modules} - {None} == {"training", "models", "hub", "playground", "jobs"}


def route_modules() -> list[Path]:
    """The modules of the slices that declare routes (an APIRouter)."""
    known = slices()
    return [
        path
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] in known and "APIRouter(" in path.read_text()
    ]


def protobuf_builds(path: Path) -> list[str]:
    """Every `<x>_pb2.<Message>(...)` call in the file, as `line: x_pb2.Message`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        f"{node.lineno}: {node.func.value.id}.{node.func.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id.endswith("_pb2")
        and node.func.attr[:1].isupper()
    ]


def test_routes_build_no_protobufs() -> None:
    modules = route_modules()
    assert {p.relative_to(PACKAGE).as_posix() for p in modules} >= {"models/routes.py", "openai/serving.py"}
    found = {p.relative_to(PACKAGE).as_posix(): protobuf_builds(p) for p in modules}
    assert {name: builds for name, builds in found.items() if builds} == {}


def test_the_check_sees_a_protobuf_build(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text(
        "from modelforge.v1 import hardware_pb2\n"
        "async def f(hardware, rpc):\n"
        "    return await hardware.GetHardware(hardware_pb2.GetHardwareRequest(), **rpc.read)\n"
        "status = hardware_pb2.GPU_KIND_NONE if hardware_pb2 else None\n"
    )
    assert protobuf_builds(source) == ["3: hardware_pb2.GetHardwareRequest"]
