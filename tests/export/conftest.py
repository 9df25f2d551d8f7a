"""Fixtures for the export tests; the helpers they use live in export_support (a module name of its own:
every test folder's conftest is imported as ``conftest``, so ``from conftest import`` finds whichever came last)."""

from __future__ import annotations

from pathlib import Path

import pytest
from export_support import build_tiny_cdlm, write_run_dir


@pytest.fixture(scope="session")
def fake_run(session_mktemp) -> Path:
    return write_run_dir(session_mktemp("run") / "run_ct", build_tiny_cdlm())


@pytest.fixture(scope="session")
def exported(fake_run, session_mktemp):
    """One export of the fake run (SavedModel + the three TFLite models), shared by the export tests."""
    from mvi_tf.export import export_run

    out_base = session_mktemp("saved_models")
    return export_run(fake_run, out_base=out_base)
