"""Where every test finds its data, and the closing line that names the optional groups that did not run.

Three kinds of data, all reached through the ``data_files`` fixture (never through a path written in a test):

- ``data_files.reference(name)``: the R reference data sets the statistics are pinned to, shipped in
  ``tests/data/reference/`` (see its README.md for each file's source and licence).
- ``data_files.small_real(name)``: the 3-slice dcmqi CT with its liver DICOM-SEG, shipped in
  ``tests/data/real/`` (BSD-3-Clause, see its README.md).
- ``data_files.optional_real(name)``: larger public scans that do not ship with mvi-tf (the TCIA HCC-TACE-Seg
  series), read from the folder given by ``--real-data DIR`` or the ``MVI_TF_REAL_DATA`` environment variable,
  by default ``<repo>/../shared/data/real``. ``none`` switches the group off on purpose.

A test whose data cannot be found skips, with a reason tagged ``[group]``. Data that ships with the repository
(reference and small real data) fails instead when ``CI=true``, naming what is missing; the optional series skips
at its default place even on CI (a clone elsewhere has no ``../shared``), and fails when a folder named
explicitly lacks it. Any skip whose reason has the
form ``[group] ...; to run it: ...`` is counted in the one line printed at the end of the run.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REFERENCE_DIR = TESTS / "data" / "reference"
SMALL_REAL_DIR = TESTS / "data" / "real"
DEFAULT_REAL_DATA = TESTS.parent.parent / "shared" / "data" / "real"
REAL_DATA_ENV = "MVI_TF_REAL_DATA"
OFF = "none"
OPTIONAL_GROUP = "real-tcia"
HOW_TO_ENABLE = f"set {REAL_DATA_ENV}=DIR or pass --real-data DIR (DIR holding hcc-tace-seg-hcc048-pv/)"
_CLOSING_LINE = pytest.StashKey[str]()
_TAGGED = re.compile(r"\[(?P<group>[\w-]+)\] .*; to run it: (?P<how>.+)$")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--real-data", default=None, metavar="DIR",
        help=f"folder of the optional real scans (default: ${REAL_DATA_ENV}, else {DEFAULT_REAL_DATA}; "
             f"'{OFF}' skips them, even with CI=true)",
    )


def on_ci() -> bool:
    """True when the ``CI`` environment variable says the run is a CI run (``true``, ``1`` or ``yes``)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@dataclass(frozen=True)
class DataFiles:
    """Resolves a test's data file or folder, or skips (fails on CI) naming what is missing.

    Parameters
    ----------
    real_data : Path or None
        Folder of the optional real scans; None when the group is switched off with ``none``.
    explicit : bool
        True when ``--real-data`` or ``MVI_TF_REAL_DATA`` named the folder (then a missing folder is an error).
    """

    real_data: Path | None
    explicit: bool

    def reference(self, name: str) -> Path:
        """Path of ``tests/data/reference/<name>``, an R reference data set that ships with mvi-tf."""
        return _shipped(REFERENCE_DIR / name, "reference", "R reference data set")

    def small_real(self, name: str) -> Path:
        """Path of ``tests/data/real/<name>``, the small real CT case that ships with mvi-tf."""
        return _shipped(SMALL_REAL_DIR / name, "real-small", "small real CT case")

    def optional_real(self, name: str) -> Path:
        """Path of ``<real data folder>/<name>``, a larger real scan that does not ship with mvi-tf."""
        if self.real_data is None:
            pytest.skip(f"[{OPTIONAL_GROUP}] real scan {name} switched off ({REAL_DATA_ENV}={OFF}); "
                        f"to run it: {HOW_TO_ENABLE}")
        path = self.real_data / name
        if path.exists():
            return path
        missing = f"real scan {name} not found at {path}"
        if self.explicit:
            pytest.fail(f"{missing}, the folder named by --real-data / {REAL_DATA_ENV}", pytrace=False)
        # Optional data at the default place: skipped even with CI=true (a clone elsewhere has no ../shared), and
        # listed in the closing line of the run; only data that ships with the repository fails when missing.
        pytest.skip(f"[{OPTIONAL_GROUP}] {missing}; to run it: {HOW_TO_ENABLE}")


def _shipped(path: Path, group: str, what: str) -> Path:
    if path.exists():
        return path
    relative = path.relative_to(TESTS.parent)
    if on_ci():
        pytest.fail(f"{what} missing: {relative} (it ships with the repository; CI=true does not skip it)",
                    pytrace=False)
    pytest.skip(f"[{group}] {what} missing: {relative}; to run it: restore {relative.parent}/ from git")


@pytest.fixture(scope="session")
def data_files(pytestconfig: pytest.Config) -> DataFiles:
    """The one way a test reaches data it does not generate itself (see the module docstring)."""
    setting = pytestconfig.getoption("--real-data") or os.environ.get(REAL_DATA_ENV) or None
    if setting is not None and setting.strip().lower() == OFF:
        return DataFiles(real_data=None, explicit=True)
    folder = Path(setting).expanduser() if setting else DEFAULT_REAL_DATA
    return DataFiles(real_data=folder.resolve(), explicit=setting is not None)


@pytest.fixture(scope="module", autouse=True)
def _release_keras_state():
    """After each test module, drop the models and graphs Keras keeps globally: every test runs in one process
    (two with ``-n 2``), which otherwise keeps every module's models to the end of the run."""
    yield
    import sys

    if "keras" in sys.modules:  # modules that never imported Keras have nothing to free
        import gc

        sys.modules["keras"].backend.clear_session()
        gc.collect()


_MODULE_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Remember on the test's module whether any of its tests failed (setup, call or teardown)."""
    report = yield
    module = item.getparent(pytest.Module)
    if report.failed and module is not None:
        module.stash[_MODULE_FAILED] = True
    return report


SESSION_FOLDERS = "session"


@pytest.fixture(scope="session")
def session_mktemp(tmp_path_factory: pytest.TempPathFactory):
    """``session_mktemp(name)`` makes a new folder that lives to the end of the run, for session-scoped fixtures
    (``tmp_path_factory.mktemp`` would make it among the folders of the module that first used the fixture)."""
    import tempfile

    root = tmp_path_factory.getbasetemp() / SESSION_FOLDERS
    root.mkdir(exist_ok=True)
    return lambda name: Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))


@pytest.fixture(scope="module", autouse=True)
def _remove_module_folders(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """After each test module, delete the temporary folders its module-scoped fixtures made, unless one of its
    tests failed (then they stay for inspection, like a failed test's ``tmp_path``). Session-scoped fixtures make
    theirs with ``session_mktemp``, whose folder this leaves alone.

    A whole run otherwise keeps every module's cohorts, records and checkpoints until it ends (about 20 GB);
    passed tests' own ``tmp_path`` folders go at their teardown (``tmp_path_retention_policy = failed``).
    """
    base = tmp_path_factory.getbasetemp()
    (base / SESSION_FOLDERS).mkdir(exist_ok=True)
    before = set(base.iterdir())
    yield
    if request.node.stash.get(_MODULE_FAILED, False):
        return
    import shutil

    for folder in set(base.iterdir()) - before:
        shutil.rmtree(folder, ignore_errors=True)


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Work out the closing line: the groups whose tests skipped, how many, and how to run them."""
    if not any(terminalreporter.stats.get(key) for key in ("passed", "failed", "skipped", "error")):
        return  # nothing ran (--collect-only, an empty selection): nothing to say
    counts: Counter[str] = Counter()
    how: dict[str, str] = {}
    for report in terminalreporter.stats.get("skipped", []):
        match = _TAGGED.search(_skip_reason(report))
        if match:
            counts[match["group"]] += 1
            how[match["group"]] = match["how"]
    groups = "; ".join(f"{g} ({n} test{'s' * (n > 1)}; to run it: {how[g]})" for g, n in sorted(counts.items()))
    config.stash[_CLOSING_LINE] = f"test groups not run: {groups}" if counts else (
        "test groups not run: none")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Print the closing line after pytest's own summary, so that it is the last line of the run."""
    line = config.stash.get(_CLOSING_LINE, None)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if line is not None and reporter is not None:
        reporter.write_line(line)
