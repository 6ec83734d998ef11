"""The former path of :mod:`mhpo_verl.cpu_backend.hf_rollout`, kept because users type it
(``VERL_USE_EXTERNAL_MODULES=mhpo_verl.demo.hf_rollout``). Importing it registers the ``hf`` rollout backend.
"""

from mhpo_verl.cpu_backend.hf_rollout import *  # noqa: F403
from mhpo_verl.cpu_backend.hf_rollout import __all__  # noqa: F401
