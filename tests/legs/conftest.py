"""Fixtures shared by the legs' tests: the operator's call-start webhook (a real HTTP server)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from utils import Operator

OPERATOR_SECRET = "operator-secret"


@pytest.fixture(scope="module")
def operator() -> Iterator[Operator]:
    op = Operator(OPERATOR_SECRET)
    yield op
    op.close()
