"""The module paths of radcap 0.3 still import, warn, and give the moved modules."""

import ast
import importlib
import sys
import warnings
from pathlib import Path

import pytest

import radcap.core.config
import radcap.features
import radcap.features.cache
from radcap._moved import MOVED

RADCAP = Path(__file__).resolve().parents[1] / "radcap"
FEATURES = {path.stem for path in (RADCAP / "features").glob("*.py")}


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_an_old_path_imports_the_moved_module_with_a_warning(monkeypatch, old, new):
    monkeypatch.delitem(sys.modules, old, raising=False)
    message = f"^{old} moved to {new}; the old path goes in radcap 0.5.$"
    with pytest.warns(DeprecationWarning, match=message.replace(".", r"\.")) as got:
        module = importlib.import_module(old)
    assert len(got) == 1
    assert module is importlib.import_module(new)  # so patching one patches both
    assert module.__name__ == module.__spec__.name == new
    assert sys.modules[old] is module


def test_names_import_from_an_old_path(monkeypatch):
    monkeypatch.delitem(sys.modules, "radcap.config", raising=False)
    with pytest.warns(
        DeprecationWarning, match="radcap.config moved to radcap.core"
    ) as got:
        from radcap.config import preset
    assert preset is radcap.core.config.preset
    assert [w.filename for w in got] == [__file__]  # the warning names the importer


def test_the_names_of_the_old_features_module_import_from_the_package(monkeypatch):
    monkeypatch.delattr(radcap.features, "extract", raising=False)
    message = r"^radcap\.features\.extract moved to radcap\.features\.cache\.extract;"
    with pytest.warns(DeprecationWarning, match=message) as got:
        from radcap.features import extract
    assert extract is radcap.features.cache.extract and len(got) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from radcap.features import backbone, splits  # its modules: no warning
    assert backbone.__name__ == "radcap.features.backbone"
    assert splits.__name__ == "radcap.features.splits"
    with pytest.raises(ImportError, match="cannot import name 'no_such_name'"):
        from radcap.features import no_such_name  # noqa: F401


def _old_imports(path: Path) -> list[str]:
    old = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            old += [alias.name for alias in node.names if alias.name in MOVED]
        elif isinstance(node, ast.ImportFrom) and node.module in MOVED:
            old.append(node.module)
        elif isinstance(node, ast.ImportFrom) and node.module == "radcap":
            names = [f"radcap.{alias.name}" for alias in node.names]
            old += [name for name in names if name in MOVED]
        elif isinstance(node, ast.ImportFrom) and node.module == "radcap.features":
            names = [alias.name for alias in node.names]
            old += [f"radcap.features.{n}" for n in names if n not in FEATURES]
    return [f"{path.relative_to(RADCAP.parent)}: {name}" for name in old]


def test_radcap_itself_imports_no_old_path():
    modules = sorted(RADCAP.rglob("*.py"))
    assert len(modules) > 40
    assert [line for path in modules for line in _old_imports(path)] == []
