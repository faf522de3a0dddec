"""Name -> component registries with one uniform signature per kind.

Registering a name twice fails; asking for an unknown name fails with the list of known ones.
Three registries exist: algorithms, rewards and data sources. Built-in algorithms live in the
top-level ``algorithms/`` package (one file each) and are imported on first lookup, so importing
``rlzoo`` stays cheap. A user's own algorithm is found by naming its module or ``.py`` file in the
config's ``plugins`` list, or directly as ``path/to/file.py:name`` / ``package.module:name``.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
from pathlib import Path
from typing import Callable, Generic, TypeVar

from rlzoo.errors import RegistryError, reason

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of components of one kind."""

    def __init__(self, kind: str, *builtins: str) -> None:
        """``builtins``: modules whose import registers the built-in components; a package stands
        for every module in it."""
        self.kind = kind
        self._items: dict[str, T] = {}
        self._builtins = builtins
        self._builtins_loaded = not builtins

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@ALGORITHMS.register("grpo")``. A duplicate name raises."""

        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise RegistryError(f"{self.kind} '{name}' is already registered")
            self._items[name] = obj
            return obj

        return deco

    def _load_builtins(self) -> None:
        if self._builtins_loaded:
            return
        self._builtins_loaded = True
        for name in self._builtins:
            package = importlib.import_module(name)
            for info in pkgutil.iter_modules(getattr(package, "__path__", [])):
                if not info.name.startswith("_"):
                    importlib.import_module(f"{name}.{info.name}")

    def get(self, name: str) -> T:
        """The component called ``name``; ``module:name`` or ``file.py:name`` imports the module first
        and takes ``name`` from the registry, or else from the module itself (a plain function,
        e.g. a TRL reward function, needs no decorator)."""
        module, spec = None, ""
        if ":" in name:
            spec, _, name = name.rpartition(":")
            module = load_plugin(spec)
        self._load_builtins()
        if name not in self._items:
            if module is not None and hasattr(module, name):
                return getattr(module, name)
            known = ", ".join(sorted(self._items)) or "(none)"
            where = f" in {spec}" if module is not None else ""
            raise RegistryError(f"unknown {self.kind} '{name}'{where}; known: {known}")
        return self._items[name]

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._items)


def load_plugin(spec: str):
    """Import a user's module (``pkg.mod``) or file (``path/to/file.py``) so it can register; the module.

    A file may import the files beside it (its folder joins the end of ``sys.path``).

    A plugin that fails to import is one line naming the file and line of the error."""
    if spec.endswith(".py"):
        path = Path(spec).expanduser().resolve()
        if not path.is_file():
            raise RegistryError(f"plugin file not found: {spec}")
        module_name = f"rlzoo_plugin_{path.stem}_{abs(hash(str(path)))}"
        if module_name in sys.modules:
            return sys.modules[module_name]
        if str(path.parent) not in sys.path:
            sys.path.append(str(path.parent))  # its siblings import as in a script; installed packages come first
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as e:  # noqa: BLE001 - the user's file: one line, file and line
            del sys.modules[module_name]
            raise RegistryError(f"plugin {spec}: {_plugin_error(e, path)}") from None
        return module
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as e:
        if e.name and spec.startswith(e.name):
            raise RegistryError(f"plugin module not found: {spec} ({e})") from None
        raise RegistryError(f"plugin {spec}: {_plugin_error(e, None)}") from None
    except Exception as e:  # noqa: BLE001
        raise RegistryError(f"plugin {spec}: {_plugin_error(e, None)}") from None


def _plugin_error(e: BaseException, path: Path | None) -> str:
    """``SyntaxError: invalid syntax (my.py:3)``: the error and the innermost place in the plugin."""
    import traceback

    if isinstance(e, SyntaxError):
        return f"SyntaxError: {e.msg} ({Path(e.filename or '?').name}:{e.lineno})"
    frames = traceback.extract_tb(e.__traceback__)
    mine = [f for f in frames if path is None or Path(f.filename).resolve() == path] or frames
    place = f" ({Path(mine[-1].filename).name}:{mine[-1].lineno})" if mine else ""
    message = reason(e) if str(e).strip() else ""
    return f"{type(e).__name__}: {message}{place}"


ALGORITHMS: Registry = Registry("algorithm", "rlzoo.algorithms")
REWARDS: Registry = Registry("reward", "rlzoo.rewards", "rlzoo.reward_models.reward")
DATA_SOURCES: Registry = Registry("data source", "rlzoo.runtime.sources")

register_algorithm = ALGORITHMS.register
register_reward = REWARDS.register
register_data_source = DATA_SOURCES.register
