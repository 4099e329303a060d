"""The committed notebooks: no outputs, a `parameters` cell first, no hidden logic.

The notebooks themselves run under nbval (`--nbval-lax`, `notebooks` is in
testpaths); these tests check the files as they are committed.
"""

import ast
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
EXPECTED = (
    "01_download_data.ipynb",
    "02_extract_features.ipynb",
    "03_train.ipynb",
    "04_evaluate.ipynb",
)
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
UPPER = re.compile(r"^[A-Z][A-Z0-9_]*$")
DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


def read(path: Path):
    return nbformat.read(path, as_version=4)


def code_cells(notebook):
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def python_source(source: str) -> str:
    """The cell's source with IPython `%magic` and `!shell` lines made `pass`."""
    lines = []
    for line in source.splitlines():
        stripped = line.lstrip()
        if stripped.startswith(("%", "!")):
            line = line[: len(line) - len(stripped)] + "pass"
        lines.append(line)
    return "\n".join(lines)


def test_the_four_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == list(EXPECTED)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs_or_execution_counts(path):
    notebook = read(path)
    nbformat.validate(notebook)
    dirty = [
        i
        for i, cell in enumerate(notebook.cells)
        if cell.cell_type == "code"
        and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, (
        f"{path.name}: cells {dirty} hold outputs or execution counts; clear them "
        "before committing (e.g. `jupyter nbconvert --clear-output --inplace`)."
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_starts_with_a_title_and_a_parameters_cell(path):
    notebook = read(path)
    first = notebook.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    assert "Reads" in first.source and "Writes" in first.source
    cell = code_cells(notebook)[0]
    assert "parameters" in cell.metadata.get("tags", []), (
        f"{path.name}: the first code cell must be tagged `parameters` (papermill)."
    )
    tree = ast.parse(cell.source)
    assert tree.body, f"{path.name}: the parameters cell is empty."
    for node in tree.body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, (
            f"{path.name}: the parameters cell holds only `NAME = literal` lines."
        )
        target = node.targets[0]
        assert isinstance(target, ast.Name) and UPPER.match(target.id), (
            f"{path.name}: parameter names are UPPER_CASE, got {ast.unparse(target)}."
        )
        try:
            ast.literal_eval(node.value)  # a literal, so papermill can replace it
        except ValueError:
            pytest.fail(f"{path.name}: {target.id} is not a literal value.")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_function_or_class_definitions(path):
    for i, cell in enumerate(code_cells(read(path))):
        tree = ast.parse(python_source(cell.source))
        defined = [
            type(node).__name__
            for node in ast.walk(tree)
            if isinstance(node, DEFINITIONS)
        ]
        assert not defined, (
            f"{path.name}, code cell {i}: {defined}. Notebooks only call radcap; "
            "put the logic in the library."
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_runs_in_the_working_folder_and_ends_with_asserts(path):
    cells = code_cells(read(path))
    source = "\n".join(cell.source for cell in cells)
    # Tests and CI point RADCAP_WORKDIR at a temporary folder; workdir() reads it.
    assert "WORKDIR = workdir(WORKDIR, drive=DRIVE, preset=PRESET)" in source
    last = ast.parse(python_source(cells[-1].source))
    assert any(isinstance(node, ast.Assert) for node in ast.walk(last)), (
        f"{path.name}: the last code cell should assert on what the notebook wrote."
    )
