"""Shared fixtures: the devices to test on and a seeded generator."""

import numpy as np
import pytest

from helpers import available_devices


@pytest.fixture(params=available_devices())
def device(request) -> str:
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
