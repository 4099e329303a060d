"""The committed notebooks: a demo run's outputs, a `parameters` cell first, thin.

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
    "05_search.ipynb",
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


def test_the_five_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == list(EXPECTED)


def outputs(cell, mime: str) -> list:
    return [o for o in cell.outputs if mime in o.get("data", {})]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_with_the_outputs_of_one_demo_run(path):
    notebook = read(path)
    nbformat.validate(notebook)
    cells = code_cells(notebook)
    # Run top to bottom once, as `python tools/run_notebooks.py` runs it.
    counts = [cell.execution_count for cell in cells]
    ran = [count for count in counts if count is not None]
    assert ran == list(range(1, len(ran) + 1)) and counts[0] == 1, (
        f"{path.name}: execution counts {counts}; regenerate the outputs with "
        "`python tools/run_notebooks.py`."
    )
    errors = [o for cell in cells for o in cell.outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: committed with an error output"
    # At least one figure, and no widget that GitHub cannot show.
    assert any(outputs(cell, "image/png") for cell in cells), path.name
    widget = "application/vnd.jupyter.widget-view+json"
    assert not any(outputs(cell, widget) for cell in cells), path.name


def test_notebook_04_shows_sample_captions_beside_their_images():
    cells = code_cells(read(NOTEBOOK_DIR / "04_evaluate.ipynb"))
    (samples,) = [cell for cell in cells if "plots.show_samples(" in cell.source]
    assert outputs(samples, "image/png")
    (table,) = [cell for cell in cells if "metrics_table" in cell.source]
    assert "BLEU-4" in "".join(o["data"].get("text/plain", "") for o in table.outputs)


def test_the_notebooks_stay_small_enough_to_read_on_github():
    total = sum(path.stat().st_size for path in NOTEBOOKS)
    assert total < 4_000_000, f"{total / 1e6:.1f} MB of notebooks"


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


def test_notebook_05_shows_recall_beside_its_baselines_and_the_images_found():
    cells = code_cells(read(NOTEBOOK_DIR / "05_search.ipynb"))
    (table,) = [cell for cell in cells if "ranking_table(" in cell.source]
    text = "".join(o.get("data", {}).get("text/plain", "") for o in table.outputs)
    for row in ("dual encoder", "random", "nearest_neighbour", "likelihood"):
        assert row in text, row
    for query in ("search_text(", "search_image("):
        (cell,) = [cell for cell in cells if query in cell.source]
        assert outputs(cell, "image/png"), query
