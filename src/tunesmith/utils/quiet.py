"""Third-party messages a user cannot act on, silenced one by one where they arise (never all warnings).

* transformers' FutureWarning that ``is_gradient_checkpointing`` is deprecated: peft reads that
  property when it wraps a model (peft's business, not the user's).
* bitsandbytes' "Failed to load CPU gemm_4bit_forward from kernels-community" (and the ``kernels``
  package's note about that same download): peft imports bitsandbytes when it is installed, and
  bitsandbytes then tries to fetch an optional CPU kernel from the Hub; plain 4-bit CPU code runs
  instead.
"""

from __future__ import annotations

import contextlib
import logging
import warnings

# (logger, start of the message) pairs dropped while the model is loaded and wrapped
_NOISY_LOG_RECORDS = (
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community"),
    ("kernels._internals.hf_hub", "Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes'"),
)


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


@contextlib.contextmanager
def model_loading_noise_silenced():
    """While loading and wrapping the model: drop the messages listed in this module's docstring."""
    filters = [(logging.getLogger(name), _DropMessage(prefix)) for name, prefix in _NOISY_LOG_RECORDS]
    for logger, f in filters:
        logger.addFilter(f)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                                    category=FutureWarning, module=r"transformers\.modeling_utils")
            yield
    finally:
        for logger, f in filters:
            logger.removeFilter(f)


@contextlib.contextmanager
def quiet_loggers(*names: str):
    """Raise ``names`` to WARNING for the duration (their INFO chatter hidden, their warnings kept)."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
