"""The former path of :mod:`mhpo_verl.cpu_backend.platform`, kept because users type it
(``VERL_USE_EXTERNAL_MODULES=mhpo_verl.platform_cpu``, ``from mhpo_verl import platform_cpu``).

Importing it imports the CPU platform, which registers itself and, under ``VERL_PLATFORM=cpu``, enables itself.
"""

from mhpo_verl.cpu_backend.platform import *  # noqa: F403
from mhpo_verl.cpu_backend.platform import __all__  # noqa: F401
