"""The house's layers (README, "Layout"): every import of every module, read with ``ast`` (imports
inside functions included), checked against the rooms' order, and the module graph checked for
cycles. A new arrow against the layers fails here, naming the file and the line."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sevi", "coating", "ray_jobs", "tools")

# Rooms from the bottom up; a room may import rooms below it and itself. regressor and fit are
# siblings: neither imports the other (the pipeline joins them).
SEVI_RANK = {"runtime": 0, "io": 1, "physics": 2, "camera": 3, "regressor": 4, "fit": 4, "pipeline": 5,
             "evaluation": 6, "cli": 7}
COATING_RANK = {"optics": 0, "line": 1, "models": 2, "recommend": 3, "cli": 4}
# What coating takes from sevi: the plumbing rooms only (and its command line the error policy).
SEVI_PLUMBING = ("sevi.runtime", "sevi.io")
COMMANDS = ("sevi.cli", "coating.cli")
POLICY = "sevi.cli.policy"
# The one tool that may put the repository on sys.path: it runs on a bare copy of the repository
# on the GPU machine, where the package is not installed (README, "GPU check").
SYS_PATH_ALLOWED = {"tools/gpu_check.py"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


MODULES = modules()


def imports(name: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported project module) for every import in the file, at any depth."""
    out = []
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # "from pkg import module" names a module; "from module import name" the module itself
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names]
        else:
            continue
        for t in targets:
            if t.split(".")[0] in PACKAGES:
                out.append((node.lineno, t))
    return out


def room(module: str) -> tuple[str, str | None]:
    parts = module.split(".")
    return parts[0], parts[1] if len(parts) > 2 or (len(parts) == 2 and module in MODULES and
                                                      MODULES[module].name == "__init__.py") else None


def violation(src: str, dst: str) -> str | None:
    """Why the import src -> dst breaks the layers, or None."""
    pkg, r = room(src)
    dpkg, dr = room(dst)
    is_command = src.startswith(COMMANDS) or pkg in ("ray_jobs", "tools")
    if dpkg == "tools" and src != "tools":
        return "nothing imports a tool: shared code lives in the library rooms"
    if not is_command and (dpkg == "ray_jobs" or dst.startswith(COMMANDS)):
        return "a library never imports ray_jobs/ or a command"
    if pkg in ("ray_jobs", "tools") and dst.startswith(COMMANDS) and dst != POLICY and not dst.startswith(POLICY):
        return "entry points use the command policy, not another command"
    if pkg == "sevi" and dpkg == "coating":
        return "sevi never imports coating"
    if pkg == "sevi" and dpkg == "sevi" and r and dr:
        if r == "cli":
            return None
        if SEVI_RANK[dr] > SEVI_RANK[r] or (SEVI_RANK[dr] == SEVI_RANK[r] and dr != r):
            return f"sevi.{r} may not import sevi.{dr} (rooms: {', '.join(SEVI_RANK)}, bottom up)"
    if pkg == "coating" and dpkg == "sevi":
        if dst.startswith(SEVI_PLUMBING) or (r == "cli" and dst.startswith(POLICY)):
            return None
        return f"coating takes only sevi's plumbing ({', '.join(SEVI_PLUMBING)}), not {dst}"
    if pkg == "coating" and dpkg == "coating" and r and dr and r != "cli":
        if COATING_RANK[dr] > COATING_RANK[r]:
            return f"coating.{r} may not import coating.{dr} (rooms: {', '.join(COATING_RANK)}, bottom up)"
    return None


def test_every_import_follows_the_layers():
    bad = []
    for name, path in MODULES.items():
        for line, dst in imports(name, path):
            why = violation(name, dst)
            if why:
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {dst}: {why}")
    assert not bad, "\n".join(bad)


def test_the_module_graph_has_no_cycle():
    graph = {name: {d for _, d in imports(name, path) if d in MODULES and d != name and
                    MODULES[d].name != "__init__.py"} for name, path in MODULES.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(n, stack):
        state[n] = 1
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack + [d])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_tool_edits_sys_path():
    bad = []
    for path in sorted((ROOT / "tools").glob("*.py")):
        rel = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name) \
                    and node.value.id == "sys" and rel not in SYS_PATH_ALLOWED:
                bad.append(f"{rel}:{node.lineno}")
    assert not bad, "tools that edit sys.path (install the package instead): " + ", ".join(bad)


def test_the_checker_sees_a_wrong_arrow():
    """The rules themselves: an arrow against the layers is caught (so the tests above can fail)."""
    assert violation("sevi.physics.forward", "sevi.camera.frames")
    assert violation("sevi.fit.count_fit", "sevi.regressor.model")
    assert violation("sevi.camera.centroid_file", "ray_jobs.frames_job")
    assert violation("sevi.regressor.training", "sevi.cli.train")
    assert violation("coating.models.fitting", "sevi.physics.prior")
    assert violation("coating.optics.colour", "coating.models.mlp")
    assert violation("tools.gpu_check", "tools.bench_train")
    assert violation("sevi.cli.frames", "ray_jobs.frames_job") is None
    assert violation("coating.cli.main", "sevi.cli.policy") is None
    assert violation("sevi.pipeline.image_answer", "sevi.fit.fit_images") is None
