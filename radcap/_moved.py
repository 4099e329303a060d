"""The module paths of radcap 0.3, kept working until 0.5 with a warning each.

radcap's flat modules moved into a package per stage. An old path imports the
module at its new path (the same module object, so patching one patches the
other) and warns once, naming the new path. Nothing is imported until an old
path is.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

REMOVED_IN = "0.5"

MOVED = {
    "radcap.files": "radcap.core.files",
    "radcap.locks": "radcap.core.locks",
    "radcap.versions": "radcap.core.versions",
    "radcap.config": "radcap.core.config",
    "radcap.text": "radcap.core.text",
    "radcap.workspace": "radcap.core.workspace",
    "radcap.devices": "radcap.core.devices",
    "radcap.dicom": "radcap.data.dicom",
    "radcap.images": "radcap.data.images",
    "radcap.backbone": "radcap.features.backbone",
    # radcap.features is now the package; its old names: see `forward_to`.
    "radcap.splits": "radcap.features.splits",
    "radcap.familiarity": "radcap.features.familiarity",
    "radcap.layers": "radcap.models.layers",
    "radcap.transformer": "radcap.models.transformer",
    "radcap.model": "radcap.models.merge",
    "radcap.runs": "radcap.models.runs",
    "radcap.generate": "radcap.decoding.search",
    "radcap.compiled": "radcap.decoding.compiled",
    "radcap.captioner": "radcap.decoding.captioner",
    "radcap.batches": "radcap.training.batches",
    "radcap.callbacks": "radcap.training.callbacks",
    "radcap.train": "radcap.training.train",
    "radcap.resume": "radcap.training.resume",
    "radcap.export": "radcap.serving.export",
    "radcap.server": "radcap.serving.server",
    "radcap.app": "radcap.serving.app",
    "radcap.app_page": "radcap.serving.app_page",
}


def _warn(old: str, new: str) -> None:
    # stacklevel 3 points past this function and its caller; the warnings
    # module skips the import system's own frames, so it names the importer.
    warnings.warn(
        f"{old} moved to {new}; the old path goes in radcap {REMOVED_IN}.",
        DeprecationWarning,
        stacklevel=3,
    )


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path and loads it as the module at its new path."""

    def __init__(self):
        self._specs = {}  # old path -> the spec of the module at its new path

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        module = importlib.import_module(MOVED[spec.name])
        self._specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module):
        # The import system has just set the old path's spec on the module:
        # give it back its own, so it still knows where it lives.
        old = module.__spec__.name
        module.__spec__ = self._specs.pop(old)
        _warn(old, MOVED[old])


def forward_to(package: str, module: str):
    """A package's `__getattr__` that hands out `module`'s names, with a warning.

    For an old module whose name is now a package (`radcap.features`): its
    names, as in `from radcap.features import extract`, still resolve.

    Args:
        package: The package's name, `__name__` in its `__init__`.
        module: The module the package's old names now live in.

    Returns:
        The function to assign to the package's `__getattr__`.
    """

    def __getattr__(name: str):
        if name.startswith("_") or importlib.util.find_spec(f"{package}.{name}"):
            # a dunder probe, or a submodule, which the import system loads
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        target = importlib.import_module(module)
        if not hasattr(target, name):
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        _warn(f"{package}.{name}", f"{module}.{name}")
        # Kept on the package: `from ... import` looks a name up twice.
        setattr(sys.modules[package], name, getattr(target, name))
        return getattr(target, name)

    return __getattr__


# First in line: an editable install's own finder answers for radcap.* names
# too, and must not be asked about an old path.
if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
    sys.meta_path.insert(0, _Alias())
