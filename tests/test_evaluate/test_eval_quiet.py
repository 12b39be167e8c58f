"""Loading the tuned adapter for evaluation prints none of the third-party noise a user cannot act on."""

from __future__ import annotations

import warnings

from support.adapters import make_adapter

from tunesmith.config import build_config
from tunesmith.evaluate.run import load_tuned
from tunesmith.models.loading import load_model


def test_loading_the_tuned_adapter_warns_nothing_deprecated(tmp_path, tiny_model_dir):
    cfg = build_config({"name": "r", "output_dir": str(tmp_path), "model": {"name_or_path": str(tiny_model_dir)}})
    make_adapter(tiny_model_dir, cfg.run_dir / "adapter", r=4)
    base = load_model(cfg.model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tuned = load_tuned(cfg, base)
    assert hasattr(tuned, "peft_config")  # the adapter really is attached
    assert not [w for w in caught if "is deprecated" in str(w.message)], [str(w.message) for w in caught]
