"""nfebench models: pretrained diffusion models behind one interface (`load_model`, `list_models`)."""
from .base import (DiffusionModel, Reference, identity_options, list_models, load_model, model_options,
                   register_model)

from . import gmm2d  # noqa: E402,F401  (registers)
from . import digits, digits_cd, digits_oracle  # noqa: E402,F401  (registers)
from . import digits_fm  # noqa: E402,F401  (registers)
from . import flow_map  # noqa: E402,F401  (registers the exact flow maps of the models above)
from . import hub  # noqa: E402,F401  (registers the hf: scheme; diffusers is imported only when one loads)

__all__ = ["DiffusionModel", "Reference", "identity_options", "list_models", "load_model", "model_options",
           "register_model"]
