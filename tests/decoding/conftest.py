"""Fixtures for the decoding tests: the embedded model, loaded once per session (never downloads)."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest


@pytest.fixture(scope="session")
def model():
    """The embedded SmolLM2-135M-Instruct (about 10-40 s the first time in a process)."""
    from decoding import load_model

    return load_model()
