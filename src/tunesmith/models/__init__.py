"""Models: the ``model:`` config section (config.py), loading by hub id or folder (loading.py), the
embedded default SmolLM2-135M-Instruct (embedded.py), tiny test models (tiny.py), the NF4 settings
QLoRA trains and merges with (quantization.py).

Importing this package loads no torch: ``tunesmith.config`` imports ``models.config`` and every
command reads a config first. Import the loading functions from ``tunesmith.models.loading``.
"""

from tunesmith.models.config import EMBEDDED_DEFAULT, ModelConfig

__all__ = ["EMBEDDED_DEFAULT", "ModelConfig"]
