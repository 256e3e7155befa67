"""Optional modules of the test environment."""
import importlib
import os

import pytest


def require(module: str):
    """``module`` imported, or the calling test (module) skipped when it is
    not installed. Under CI (the ``CI`` environment variable set), whose
    test environment installs every optional module, a missing one is a
    failure instead of a silent skip."""
    if os.environ.get('CI'):
        try:
            return importlib.import_module(module)
        except ImportError as error:
            pytest.fail(
                f'CI is set but {module} does not import: {error}',
                pytrace=False)
    return pytest.importorskip(module)
