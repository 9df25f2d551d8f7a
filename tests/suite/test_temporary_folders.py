"""The suite's own disk hygiene (tests/conftest.py): what a passed test or module wrote goes, a failure's stays."""

from __future__ import annotations

from pathlib import Path

pytest_plugins = ["pytester"]

TESTS = Path(__file__).resolve().parents[1]

MODULE_THAT_FAILS = '''
import pytest

@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kept_module")
    (folder / "data").write_text("x")
    return folder

def test_passes(shared, tmp_path):
    (tmp_path / "own").write_text("y")

def test_fails(shared, tmp_path):
    (tmp_path / "own").write_text("y")
    assert False
'''

MODULE_THAT_PASSES = '''
import pytest

@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dropped_module")
    (folder / "data").write_text("x")
    return folder

def test_uses_both(shared, lasting, tmp_path):
    (tmp_path / "own").write_text("y")
'''

# A session-scoped fixture (made in the first module that passes, used again by a later one).
SESSION_FIXTURE = '''

@pytest.fixture(scope="session")
def lasting(session_mktemp):
    folder = session_mktemp("lasting")
    (folder / "data").write_text("z")
    return folder
'''

MODULE_THAT_NEEDS_THE_SESSION_FOLDER = '''
def test_session_folder_outlives_the_module_that_made_it(lasting):
    assert (lasting / "data").read_text() == "z"
'''


def run_with(pytester, conftest: str):
    pytester.makeconftest(conftest + SESSION_FIXTURE)
    pytester.makeini("[pytest]\ntmp_path_retention_policy = failed\n")
    pytester.makepyfile(test_a_fails=MODULE_THAT_FAILS, test_b_passes=MODULE_THAT_PASSES,
                        test_c_later=MODULE_THAT_NEEDS_THE_SESSION_FOLDER)
    base = pytester.path / "basetemp"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--basetemp={base}")
    result.assert_outcomes(passed=3, failed=1)
    return {p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()}


def test_passed_tests_and_modules_leave_nothing_failed_ones_keep_their_folders(pytester):
    left = run_with(pytester, (TESTS / "conftest.py").read_text())
    # The failed module keeps its shared folder and the failed test its own; nothing of what passed stays,
    # except the session folder (still in use by a later module when the first one ended).
    assert "kept_module0/data" in left and any(name.startswith("test_fails") for name in left)
    assert not any(name.startswith(("dropped_module", "test_passes", "test_uses_both")) for name in left)
    assert [name for name in left if name.startswith("session/")] == [
        next(name for name in left if name.startswith("session/lasting-"))]
