"""The architecture holds: stages import only earlier stages; modules stay small."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = [
    sys.executable,
    "-c",
    "from importlinter.cli import lint_imports_command; lint_imports_command()",
]


def lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*LINT, "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )


def test_the_import_layers_contract_is_kept():
    result = lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "9 kept, 0 broken" in result.stdout  # the stages, and inside eight


STAGES = "radcap stages import only from earlier stages"


@pytest.mark.parametrize(
    "module, line, contract",
    [
        ("radcap/core/text.py", "import radcap.cli", STAGES),  # the base to the top
        ("radcap/data/manifest.py", "from radcap.features import cache", STAGES),
        ("radcap/training/train.py", "from radcap.decoding import search", STAGES),
        ("radcap/core/files.py", "import radcap.core.config", "inside radcap.core"),
    ],
)
def test_the_contract_fails_on_a_later_stage_imported_early(
    tmp_path, module, line, contract
):
    shutil.copytree(REPO / "radcap", tmp_path / "radcap")
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    path = tmp_path / module
    path.write_text(path.read_text() + f"\n{line}\n")
    result = lint(tmp_path)
    assert result.returncode != 0
    assert f"{contract} BROKEN" in result.stdout


def test_modules_and_functions_stay_small():
    long_modules, long_functions = [], []
    for path in sorted((REPO / "radcap").rglob("*.py")):
        source = path.read_text()
        if len(source.splitlines()) > 400:
            long_modules.append(path.name)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > 80:
                    long_functions.append(f"{path.name}:{node.name}")
    assert long_modules == [] and long_functions == []


def test_run_folder_file_names_are_spelled_once():
    names = ["best.keras", "config.json", "vocab.json", "history.csv"]
    names += ["training.json", "metrics.json", "report.md", "comparison.md"]
    names += ["MODEL_CARD.md"]
    spelled = {name: [] for name in names}
    for path in sorted((REPO / "radcap").rglob("*.py")):
        source = path.read_text()
        for name in names:
            if f'"{name}"' in source:
                spelled[name].append(path.name)
    # config.json is named by the config module (the base), the rest by runs;
    # runs also reads the config.json inside a .keras archive.
    owner = {n: ["runs.py"] for n in names}
    owner["config.json"] = ["config.py", "runs.py"]
    assert spelled == owner
