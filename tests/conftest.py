"""Shared fixtures: one model for the whole test session (loading takes ~2 s warm, ~20 s cold)."""

import pytest


@pytest.fixture(scope="session")
def model():
    from course_utils import load_model

    return load_model(device="cpu")
