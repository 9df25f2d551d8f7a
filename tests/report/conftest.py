"""A small complete study shared by the report tests (built once per session; tests copy it before changing it)."""

from __future__ import annotations

import pytest
from study_fixture import make_study


@pytest.fixture(scope="session")
def small_study(session_mktemp):
    """Path of the study directory written by `study_fixture.make_study` (treat as read-only)."""
    return make_study(session_mktemp("small_study"))
