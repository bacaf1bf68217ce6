"""Imaginem library: the steps and what they stand on (see the README's code layout).

Nothing here parses a command line; `beam_pipeline` is the application. Runs name this
package as a Beam plugin, so a worker imports it before it unpickles any step.
"""

import importlib.machinery
import sys
import types

# Beam's RunInference module imports its GPU model manager whenever it can, and that
# imports torch: 2 s and 200 MB more in every worker process, and a slower exit, for
# an option (`use_model_manager`) this project never sets. torch is installed only to
# export EfficientNet-Lite0 to ONNX once. An empty stand-in keeps torch out.
_MODEL_MANAGER = "apache_beam.ml.inference.model_manager"
if _MODEL_MANAGER not in sys.modules:
    _stand_in = types.ModuleType(_MODEL_MANAGER)
    _stand_in.__spec__ = importlib.machinery.ModuleSpec(_MODEL_MANAGER, None)
    _stand_in.ModelManager = None
    sys.modules[_MODEL_MANAGER] = _stand_in
