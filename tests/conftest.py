"""Shared by every test folder: no secret held by one test leaks into the next."""

from __future__ import annotations

import pytest

from sigmaloop import secret


@pytest.fixture(autouse=True)
def _forget_secrets():
    yield
    secret.forget()
