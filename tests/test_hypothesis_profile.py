"""The property tests replay the same cases on every run (conftest.py's profile)."""

import os

import pytest
from hypothesis import settings


@pytest.mark.skipif(os.environ.get("NUMBACNN_HYPOTHESIS_PROFILE", "numbacnn") != "numbacnn",
                    reason="another hypothesis profile was asked for")
def test_the_fixed_profile_is_loaded_and_inherited_by_the_modules_settings():
    import test_functional
    import test_parity_layers
    import test_parity_ops

    assert settings.default.derandomize and settings.default.database is None
    for module in (test_functional, test_parity_layers, test_parity_ops):
        # each module's own settings(max_examples=...) keeps the fixed seed and no database
        assert module.SETTINGS.derandomize, module.__name__
        assert module.SETTINGS.database is None, module.__name__
