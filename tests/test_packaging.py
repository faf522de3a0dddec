"""The package's shape: what is installed, what importing costs, and no import cycles."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_top_level_algorithms_package_and_builtins_under_rlzoo(tmp_path):
    # from another folder (so the repository is not on sys.path): only rlzoo is installed
    code = ("import importlib.util, rlzoo.algorithms.grpo as g; "
            "print(importlib.util.find_spec('algorithms') is None, g.__name__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "rlzoo.algorithms.grpo"]


def test_pyproject_lists_every_package_of_the_tree():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(project["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "rlzoo").rglob("__init__.py")}
    assert found | {"rlzoo.algorithms"} == listed
    assert project["package-dir"] == {"rlzoo.algorithms": "algorithms"}


def test_importing_the_core_and_the_config_is_light():
    code = ("import sys, rlzoo, rlzoo.config, rlzoo.errors, rlzoo.interface, rlzoo.registry; "
            "print(sorted(m for m in ('torch', 'transformers', 'accelerate', 'sympy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _module_imports(path: Path) -> set[str]:
    """rlzoo modules that ``path`` imports, at the top or inside a function (a lazy import that
    closes a cycle is still a cycle in the design); imports under ``if TYPE_CHECKING`` excluded."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for n in ast.walk(node)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)  # "from a import b" may name a module
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.split(".")[0] == "rlzoo"}


def test_no_import_cycles():
    modules = {}
    for path in [*(ROOT / "rlzoo").rglob("*.py"), *(ROOT / "algorithms").glob("*.py")]:
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[0] == "algorithms":
            parts = ["rlzoo", *parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = _module_imports(path)

    def deps(name: str) -> set[str]:
        return {m for m in modules.get(name, ()) if m in modules} - {name, "rlzoo"}

    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(deps(name)):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, path + [dep])
        state[name] = 2

    for name in sorted(modules):
        if name not in state:
            visit(name, [name])


# The layers of the library, lowest first (docs/interface.md, "The house"): a module imports from
# its own layer and the layers below it, never from one above (the package itself, whose lazy
# ``rlzoo.verify`` is a convenience for users, stands above them all).
LAYERS = [
    ("core", ["rlzoo.errors", "rlzoo.config", "rlzoo.interface", "rlzoo.registry", "rlzoo.functional", "rlzoo.losses",
              "rlzoo.sandbox"]),
    ("algorithms and tasks", ["rlzoo.algorithms", "rlzoo.data"]),
    ("runtime", ["rlzoo.runtime"]),
    ("scoring", ["rlzoo.rewards", "rlzoo.reward_models"]),
    ("running", ["rlzoo.run", "rlzoo.train", "rlzoo.cli", "rlzoo.__main__"]),
]


def _layer(module: str) -> int | None:
    for level, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    return None


def _modules() -> dict[str, Path]:
    out = {}
    for path in [*(ROOT / "rlzoo").rglob("*.py"), *(ROOT / "algorithms").glob("*.py")]:
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[0] == "algorithms":
            parts = ["rlzoo", *parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def test_every_module_has_a_layer_and_imports_no_layer_above_its_own():
    modules = _modules()
    unplaced = sorted(m for m in modules if m != "rlzoo" and _layer(m) is None)
    assert not unplaced, f"modules in no layer: {unplaced}"
    upward = []
    for name, path in sorted(modules.items()):
        if name == "rlzoo":
            continue
        for dep in sorted(_module_imports(path)):
            if dep in modules and dep != "rlzoo" and _layer(dep) > _layer(name):
                upward.append(f"{name} ({LAYERS[_layer(name)][0]}) imports {dep} ({LAYERS[_layer(dep)][0]})")
    assert not upward, "imports from a layer above:\n" + "\n".join(upward)
