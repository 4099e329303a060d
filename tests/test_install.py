"""Installing radcap: the TensorFlow already there stays; the wheel is complete.

`tools/install_radcap.py` pins the TensorFlow stack found in the environment
(the notebooks run it in a clone). The check runs pip offline against a
local package folder that offers a newer TensorFlow and Keras (99.0) and
asks pip to upgrade everything it can: without the pins pip would take
them, with them it installs radcap alone.

Without a clone, the notebooks' setup cell installs from `RADCAP_REPO`, an
uploaded wheel or zip, with the same pins in one shell line; it runs here
in IPython with its shell commands recorded instead of run.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import types
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

from radcap import __version__

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "install_radcap.py"


def installer():
    spec = importlib.util.spec_from_file_location("install_radcap", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pip_env() -> dict:
    """The environment without this machine's pip settings: offline, plain."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def fake_wheel(folder: Path, name: str, release: str) -> None:
    """A wheel of `name` `release` that holds only its metadata."""
    info = f"{name}-{release}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {release}\n"
    wheel = "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    with zipfile.ZipFile(folder / f"{name}-{release}-py3-none-any.whl", "w") as whl:
        whl.writestr(f"{info}/METADATA", metadata)
        whl.writestr(f"{info}/WHEEL", wheel)
        whl.writestr(f"{info}/RECORD", "")


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A copy of the repository's package files (pip builds write into it)."""
    folder = tmp_path_factory.mktemp("clone")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, folder)
    for name in ("radcap", "tools"):
        shutil.copytree(
            REPO / name, folder / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    return folder


def installs(report: Path) -> dict[str, str]:
    items = json.loads(report.read_text())["install"]
    return {i["metadata"]["name"]: i["metadata"]["version"] for i in items}


def test_the_pins_are_the_tensorflow_stack_installed_here():
    pins = installer().pins()
    assert f"tensorflow=={version('tensorflow')}" in pins
    assert f"keras=={version('keras')}" in pins
    names = {pin.split("==")[0].lower().replace("_", "-") for pin in pins}
    assert all(
        n.startswith(("tensorflow", "tf-", "tensorboard")) or n == "keras"
        for n in names
    ), names
    assert "numpy" not in names and "radcap" not in names


def test_installing_radcap_leaves_tensorflow_as_it_is(clone, tmp_path):
    offer = tmp_path / "offer"
    offer.mkdir()
    fake_wheel(offer, "tensorflow", "99.0")
    fake_wheel(offer, "keras", "99.0")
    pip = ["--dry-run", "--no-index", "--no-build-isolation", "-q"]
    pip += ["--find-links", str(offer), "--upgrade", "--upgrade-strategy", "eager"]

    unpinned = tmp_path / "unpinned.json"
    command = [sys.executable, "-m", "pip", "install", "-e", str(clone), *pip]
    done = subprocess.run(
        [*command, "--report", str(unpinned)],
        env=pip_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    # The offer tempts pip: alone, it would replace both.
    assert installs(unpinned) == {
        "radcap": __version__,
        "tensorflow": "99.0",
        "keras": "99.0",
    }

    pinned = tmp_path / "pinned.json"
    script = [sys.executable, str(clone / "tools" / "install_radcap.py")]
    done = subprocess.run(
        [*script, *pip, "--report", str(pinned)],
        env=pip_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert installs(pinned) == {"radcap": __version__}
    assert "Keeping as installed: " in done.stdout
    assert f"tensorflow=={version('tensorflow')}" in done.stdout


def test_the_wheel_holds_every_radcap_module_and_the_command(clone, tmp_path):
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index"]
    command += ["--no-build-isolation", "-q", "-w", str(tmp_path), str(clone)]
    done = subprocess.run(command, env=pip_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("radcap-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    modules = sorted(n for n in names if n.endswith(".py"))
    expected = sorted(
        p.relative_to(REPO).as_posix() for p in (REPO / "radcap").rglob("*.py")
    )
    assert modules == expected
    assert "radcap = radcap.cli:main" in scripts


# --- the notebooks' setup cell ---------------------------------------------------


def setup_cell() -> str:
    """The setup cell, the same in every notebook, under 10 lines."""
    import nbformat

    sources = {
        nbformat.read(path, as_version=4).cells[4].source
        for path in sorted((REPO / "notebooks").glob("*.ipynb"))
    }
    assert len(sources) == 1, "the setup cells differ"
    (source,) = sources
    assert len(source.splitlines()) < 10
    assert "from radcap._install import setup" in source
    return source


def test_the_installer_is_also_the_module_radcap_install():
    assert (REPO / "radcap" / "_install.py").resolve() == SCRIPT.resolve()


def plant_clone(folder: Path) -> Path:
    """A clone, as far as the setup cell can tell: radcap/ with the installer."""
    (folder / "radcap").mkdir(parents=True)
    (folder / "radcap" / "__init__.py").write_text("")
    shutil.copy(SCRIPT, folder / "radcap" / "_install.py")
    (folder / "pyproject.toml").write_text("")
    return folder


def plant_wheel(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("radcap/__init__.py", "")
        wheel.write(SCRIPT, "radcap/_install.py")
    return path


@pytest.fixture
def run_setup(tmp_path, monkeypatch):
    """`run_setup(**parameters)`: the setup cell run in IPython while radcap is
    not installed, with `root` standing in for `/`; returns the shell commands
    it ran, the pip commands (`[constraints, *command]`) and the error.
    """
    import glob
    import importlib.util

    from IPython.core.interactiveshell import InteractiveShell

    root = tmp_path / "root"
    real_glob, real_find_spec = glob.glob, importlib.util.find_spec
    for name in [n for n in sys.modules if n.split(".")[0] == "radcap"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))

    def fake_glob(pattern):  # the cell's absolute places lie under `root`
        if pattern[:1] == "/" and not pattern.startswith(str(tmp_path)):
            pattern = f"{root}{pattern}"
        return real_glob(pattern)

    monkeypatch.setattr(glob, "glob", fake_glob)

    def find_spec(name, *args):  # only a radcap planted under tmp_path counts
        spec = real_find_spec(name, *args)
        origin = os.path.abspath(spec.origin) if spec and spec.origin else ""
        if name == "radcap" and str(tmp_path) not in origin:
            return None
        return spec

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    pip = []

    def fake_run(command, **kwargs):
        if "list" in command:
            listed = "keras==3.5.0\nnumpy==1.26.4\ntensorflow==2.17.0\n"
            return subprocess.CompletedProcess(command, 0, stdout=listed)
        constraints = Path(command[command.index("-c") + 1]).read_text()
        pip.append([constraints, *command[command.index("-c") + 2 :]])
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    shell = InteractiveShell.instance()
    ran = []

    def system(command):
        ran.append(shell.var_expand(command))
        if "git clone" in ran[-1]:
            plant_clone(root / "tmp/radcap")

    monkeypatch.setattr(shell, "system", system)

    def run(**parameters):
        ran.clear()
        pip.clear()
        defaults = {"RADCAP_REPO": None, "RADCAP_SOURCE": None, "DRIVE": None}
        shell.user_ns.update({**defaults, **parameters})
        result = shell.run_cell(setup_cell())
        return ran, pip, result.error_in_exec

    yield run
    InteractiveShell.clear_instance()


def test_the_setup_cell_installs_the_first_source_found_with_the_pins(
    run_setup, tmp_path, monkeypatch
):
    root = tmp_path / "root"
    work = tmp_path / "work"
    url = "https://example.org/radcap.git"
    mine = plant_wheel(tmp_path / "mine/radcap-0.3.0-py3-none-any.whl")
    wheel = "radcap-0.3.0-py3-none-any.whl"
    kaggle = plant_wheel(root / f"kaggle/input/radcap-wheel/dist/{wheel}")
    plant_wheel(root / f"kaggle/input/radcap-wheel/{wheel}")
    plant_wheel(work / "notebooks" / wheel)
    plant_clone(work)
    monkeypatch.chdir(work / "notebooks")

    # 1. The clone the notebook sits in, editable; nothing is cloned.
    ran, pip, error = run_setup(RADCAP_REPO=url, RADCAP_SOURCE=str(mine))
    assert error is None and ran == []
    assert pip == [["keras==3.5.0\ntensorflow==2.17.0\n", "-e", str(work), "-q"]]
    assert sys.path[0] == str(work)  # importable without a restart
    # 2. RADCAP_REPO, cloned into /tmp/radcap.
    shutil.rmtree(work / "radcap")
    ran, pip, error = run_setup(RADCAP_REPO=url, RADCAP_SOURCE=str(mine))
    assert error is None
    assert ran == [f"git clone -q --depth 1 {url} /tmp/radcap"]
    assert pip[0][1:] == ["-e", str(root / "tmp/radcap"), "-q"]
    # 3. RADCAP_SOURCE.
    shutil.rmtree(root / "tmp")
    (_, pip, error) = run_setup(RADCAP_SOURCE=str(mine))
    assert error is None and pip[0][1:] == [str(mine), "-q"]
    assert not any(path.endswith(".whl") for path in sys.path)
    # 4. A wheel in the current folder.
    (_, pip, error) = run_setup()
    assert error is None and pip[0][1:] == [str(work / "notebooks" / wheel), "-q"]
    (work / "notebooks" / wheel).unlink()
    # 5. On Google Drive, mounted by the cell in Colab unless DRIVE = False.
    colab, drive = types.ModuleType("google.colab"), types.ModuleType("drive")
    colab.drive = drive
    drive.mount = lambda path: plant_wheel(root / path[1:] / "MyDrive" / wheel)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    (_, pip, error) = run_setup(DRIVE=False)
    assert error is None and pip[0][1:] == [str(kaggle.parents[1] / wheel), "-q"]
    (_, pip, error) = run_setup()
    drive_wheel = root / "content/drive/MyDrive" / wheel
    assert error is None and pip[0][1:] == [str(drive_wheel), "-q"]
    drive_wheel.unlink()
    monkeypatch.delitem(sys.modules, "google.colab")
    # 6. In a Kaggle input, at either depth.
    for found in (kaggle.parents[1] / wheel, kaggle):
        (_, pip, error) = run_setup()
        assert error is None and pip[0][1:] == [str(found), "-q"]
        found.unlink()
    # Nothing at all: one line that says the ways.
    ran, pip, error = run_setup()
    assert ran == [] and pip == []
    assert isinstance(error, ModuleNotFoundError)
    assert str(error) == (
        "No radcap to install: open this notebook in a clone, set RADCAP_REPO, or "
        "add a radcap*.whl (see Setup above)."
    )


# --- what each install brings ----------------------------------------------------

# Import names that are not their distribution's name.
DISTRIBUTION = {"PIL": "pillow", "skimage": "scikit-image"}
# Imported only where the runtime has it: `google.colab` in Colab.
RUNTIME = {"google"}
# The modules of a feature whose packages come with an extra, not with radcap.
FEATURE_EXTRA = {"radcap/serving/app_page.py": "app"}


def requirement_name(requirement: str) -> str:
    """`pydicom` of `pydicom>=3.0`, `portalocker` of `portalocker[win32]>=4.4; ...`."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement.strip())[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def project() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


# What runs later than the import, or may fail: an import inside is optional.
GUARDS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.Try)


def third_party_imports(path: Path) -> tuple[set[str], set[str]]:
    """(top-level, all) third-party packages that the module at `path` imports.

    Top level: run when the module is imported, i.e. not inside a function or
    a `try:` (which guards an optional package).
    """
    tree = ast.parse(path.read_text())
    inner = {
        id(node)
        for guard in ast.walk(tree)
        if isinstance(guard, GUARDS)
        for node in ast.walk(guard)
        if node is not guard
    }
    top, every = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        else:
            continue
        roots = {n.split(".")[0] for n in names} - set(sys.stdlib_module_names)
        roots.discard("radcap")
        every |= roots
        if id(node) not in inner:
            top |= roots
    return top, every


def test_a_plain_install_brings_no_test_only_package():
    meta = project()
    base = {requirement_name(r) for r in meta["dependencies"]}
    extras = {
        extra: {requirement_name(r) for r in requirements}
        for extra, requirements in meta["optional-dependencies"].items()
    }
    # portalocker: in radcap on Windows, in the test extra for its tests here.
    assert base & extras["test"] == {"portalocker"}
    assert {"pytest", "nbval", "selenium", "streamlit", "pydicom"} <= extras["test"]
    # The suite runs the app's and the DICOM tests, and the Windows lock path.
    assert extras["app"] | extras["dicom"] | {"portalocker"} <= extras["test"]
    (windows,) = [r for r in meta["dependencies"] if "portalocker" in r]
    assert windows.endswith("; sys_platform == 'win32'")
    # requirements.txt is radcap itself: what pyproject.toml lists, no more.
    lines = (REPO / "requirements.txt").read_text().splitlines()
    assert [line for line in lines if line and not line.startswith("#")] == ["-e ."]


def test_every_package_radcap_imports_comes_with_its_install():
    meta = project()
    base = {requirement_name(r) for r in meta["dependencies"]}
    extras = {
        extra: {requirement_name(r) for r in requirements}
        for extra, requirements in meta["optional-dependencies"].items()
    }
    everything = base.union(*extras.values())
    missing = []
    for path in sorted((REPO / "radcap").rglob("*.py")):
        module = path.relative_to(REPO).as_posix()
        top, every = third_party_imports(path)
        feature = extras.get(FEATURE_EXTRA.get(module), set())
        for name in sorted(every - RUNTIME):
            package = DISTRIBUTION.get(name, name).lower()
            if name in top and package not in base | feature:
                missing.append(f"{module} imports {name} when imported")
            elif package not in everything:
                missing.append(f"{module} imports {name}, in no install")
    assert missing == []
    # The check sees what it is for: streamlit at the top of the app's page
    # only, pydicom in a function, the Windows lock package in one.
    assert "streamlit" in third_party_imports(REPO / "radcap/serving/app_page.py")[0]
    top, every = third_party_imports(REPO / "radcap/data/dicom.py")
    assert "pydicom" in every - top
    top, every = third_party_imports(REPO / "radcap/core/portable.py")
    assert "portalocker" in every - top


def pip_commands(text: str) -> list[str]:
    """The `pip install` commands of a shell text, `-q` left out."""
    commands = re.split(r"&&|\n", text)
    commands = [c.strip().replace(" -q", "") for c in commands]
    return [c for c in commands if c.startswith("pip install")]


def test_ci_installs_as_the_readme_says():
    readme = (REPO / "README.md").read_text()
    quickstart = readme[readme.index("## Quickstart") :].split("\n## ")[0]
    install, tests = re.findall(r"```bash\n(.*?)```", quickstart, re.DOTALL)[:2]
    assert install.startswith("python3 -m venv .venv") and "radcap demo" in install
    assert pip_commands(install) == ["pip install -e ."]
    assert pip_commands(tests) == ['pip install -e ".[test]"']
    assert tests.strip().endswith("pytest")
    ci = (REPO / ".ci" / "run").read_text()
    assert "python3 -m venv .venv" in ci
    assert pip_commands(ci) == pip_commands(install) + pip_commands(tests)
    assert ci.strip().endswith("\npytest")
