"""k-diffusion's samplers as a test reference, without its package __init__ (which imports its training stack:
wandb, clip, kornia, ...). Only `k_diffusion.sampling` and the `utils` it imports are loaded."""
import importlib
import importlib.util
import sys
import types

import pytest


def k_sampling():
    """k_diffusion.sampling, or a skip naming the test extra where k-diffusion is not installed."""
    if "k_diffusion.sampling" in sys.modules:
        return sys.modules["k_diffusion.sampling"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or importlib.util.find_spec("torchsde") is None:
        pytest.skip("k-diffusion is a test reference: pip install -e '.[test]'")
    if "k_diffusion" not in sys.modules:
        pkg = types.ModuleType("k_diffusion")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["k_diffusion"] = pkg
    return importlib.import_module("k_diffusion.sampling")
