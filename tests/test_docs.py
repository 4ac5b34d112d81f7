"""The documentation's own contract, checked without building it (CI builds it with
``sphinx-build -W``): the API reference lists every public name, every public docstring has its
formula, parameters and example, no file points outside the repository, and the version is written
once.

The container image carries no ``docs/`` and no ``CHANGELOG.md`` (``.dockerignore``): the tests that
read them skip there.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import os
import re
from pathlib import Path

import pytest

import gpuact
import gpuact.backward
import gpuact.layers
import gpuact.registry

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
needs_docs = pytest.mark.skipif(not (DOCS / "conf.py").is_file(), reason="no docs/ here (the container image)")

LAYERS = [
    getattr(gpuact.layers, name) for name in gpuact.layers.__all__ if inspect.isclass(getattr(gpuact.layers, name))
]


def _autosummary_entries(page: Path) -> set[str]:
    """The names listed in a reference page's ``.. autosummary::`` blocks."""
    names, inside = set(), False
    for line in page.read_text().splitlines():
        if line.startswith(".. autosummary::"):
            inside = True
        elif inside and line.strip() and not line.startswith(" "):
            inside = False
        elif inside and line.startswith("   ") and not line.strip().startswith(":"):
            names.add(line.strip())
    return names


@needs_docs
def test_the_reference_lists_every_public_name():
    reference = DOCS / "reference"
    assert _autosummary_entries(reference / "activations.rst") == set(gpuact.activations.__all__)
    assert _autosummary_entries(reference / "backward.rst") == set(gpuact.backward.__all__)
    assert _autosummary_entries(reference / "layers.rst") == set(gpuact.layers.__all__)
    assert _autosummary_entries(reference / "registry.rst") == {"get", "serialize", "deserialize"}


@needs_docs
def test_the_benchmarks_page_shows_the_newest_committed_plot():
    # bench/results/README.md's tables reach the page by themselves (docs/_ext/mdtable.py); the plot
    # is named there, so a new committed run must name its PNG (bench-<device>-<YYYYMMDD-HHMM>.png)
    plots = sorted((ROOT / "bench" / "results").glob("bench-*.png"), key=lambda p: p.stem.rsplit("-", 2)[-2:])
    if not plots:
        pytest.skip("no committed benchmark plot")
    assert plots[-1].name in (DOCS / "benchmarks.rst").read_text()


def _public_docs():
    for name in gpuact.activations.__all__:
        yield f"gpuact.{name}", getattr(gpuact, name), True
        yield f"gpuact.backward.{name}", getattr(gpuact.backward, name), True
    for cls in LAYERS:
        # Activation applies the function it is given: its formula is that function's
        yield f"gpuact.layers.{cls.__name__}", cls, cls is not gpuact.layers.Activation
    yield "gpuact.layers.deserialize", gpuact.layers.deserialize, False
    for name in ("get", "serialize", "deserialize"):
        yield f"gpuact.{name}", getattr(gpuact.registry, name), False


@pytest.mark.parametrize("name,obj,has_formula", list(_public_docs()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_public_docstring_has_its_formula_parameters_and_an_example(name, obj, has_formula):
    doc = inspect.getdoc(obj) or ""
    assert "\nParameters\n----------\n" in doc, f"{name}: no numpydoc Parameters section"
    assert "\nExamples\n--------\n" in doc and ">>> " in doc, f"{name}: no Examples section"
    if has_formula:
        assert ".. math::" in doc, f"{name}: no formula"
    if not inspect.isclass(obj):
        assert "\nReturns\n-------\n" in doc, f"{name}: no Returns section"
    documented = set()
    for line in doc.split("\nParameters\n----------\n", 1)[1].split("\n\n")[0].splitlines():
        if line and not line.startswith(" "):
            documented.update(n.strip() for n in line.split(":")[0].split(","))
    missing = set(inspect.signature(obj).parameters) - documented
    assert not missing, f"{name}: parameters not documented: {sorted(missing)}"


def test_every_public_function_is_annotated():
    for name, obj, _ in _public_docs():
        if inspect.isclass(obj):
            obj = obj.__init__
        hints = inspect.get_annotations(obj)
        assert "return" in hints, name
        missing = [p for p in inspect.signature(obj).parameters if p not in hints and p != "self"]
        assert not missing, f"{name}: {missing} without annotations"


def test_the_package_is_typed():
    assert (ROOT / "gpuact" / "py.typed").is_file()


# A reference to the brief the project started from, outside the repository (spelled in two
# pieces so that this file does not match itself).
_BRIEF, _FOLDER = "SP" + "EC", "shar" + "ed/"
OUTSIDE = re.compile(rf"{_BRIEF}\b|\.\./{_FOLDER}|{_FOLDER}{_BRIEF}")
TEXT_SUFFIXES = {".py", ".md", ".sh", ".toml", ".cc", ".cuh", ".cu", ".h", ".rst", ".txt", ".cfg", ".ini"}
SKIPPED_DIRS = {
    ".git",
    ".venv",
    ".ci-venv",
    ".ci-work",
    "_build",
    "generated",
    "__pycache__",
    ".pytest_cache",
    ".hypothesis",
    ".benchmarks",
    "build",
    "dist",
    ".whl",
    ".ruff_cache",
    ".mypy_cache",
}


def _text_files():
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and not d.endswith(".egg-info")]
        for name in files:
            path = Path(folder, name)
            if path.suffix in TEXT_SUFFIXES or name in ("Dockerfile", "run"):
                yield path


def test_no_file_refers_outside_the_repository():
    hits = [
        f"{path.relative_to(ROOT)}:{i}"
        for path in _text_files()
        for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not hits, hits


def test_the_version_is_written_once():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^dynamic = \["version"\]', pyproject, re.M)
    assert not re.search(r"^version\s*=", pyproject, re.M)
    assert '[tool.hatch.version]\npath = "gpuact/__init__.py"' in pyproject
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]\d+|rc\d+|\.dev\d+)?", gpuact.__version__)


@pytest.mark.skipif(not (ROOT / "CHANGELOG.md").is_file(), reason="no CHANGELOG.md here (the container image)")
def test_the_changelog_has_this_version():
    assert f"## [{gpuact.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


def test_the_installed_metadata_agrees():
    try:
        installed = importlib.metadata.version("gpuact")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("gpuact is not installed here, only imported from the tree")
    assert installed == gpuact.__version__
