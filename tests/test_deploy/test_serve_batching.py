"""The batching engine alone: requests that join a running batch mid-decode get the answers they get alone."""

from __future__ import annotations

import threading
import time

import torch

from tunesmith.deploy.server.continuous_batching import BatchEngine, GenRequest
from tunesmith.deploy.server.registry import BASE, AdapterRegistry

from support.adapters import make_adapter, one_torch_thread  # noqa: F401  (autouse fixture)


def _run(engine, req) -> threading.Event:
    done = threading.Event()
    req.on_done = lambda r: done.set()
    engine.submit(req)
    return done


def test_join_mid_decode_and_leave_early(tiny_model_dir, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    reg = AdapterRegistry(model)
    reg.add("a", make_adapter(tiny_model_dir, tmp_path / "a", seed=1, scale=2.0))
    reg.add("d", make_adapter(tiny_model_dir, tmp_path / "d", seed=2, scale=2.0, method="dora"))
    engine = BatchEngine(reg, tokenizer, max_batch_size=8, batch_wait_ms=0)
    engine.eos_ids = set()  # random weights: never stop early, so lengths are exact
    prompts = [tokenizer(t)["input_ids"] for t in ("Hello there", "A much longer prompt about printers and ink", "x")]
    engine.start()
    try:
        def solo(p, adapter, n):
            r = GenRequest(p, adapter, n, temperature=0)
            assert _run(engine, r).wait(30)
            return r.output_ids

        want = {(i, a): solo(p, a, 10) for i, p in enumerate(prompts) for a in ("a", BASE, "d")}
        long = GenRequest(prompts[1], "a", 60, temperature=0)
        long_done = _run(engine, long)
        time.sleep(0.05)  # `long` is decoding; the next ones are spliced into its batch
        late = [GenRequest(p, a, 10, temperature=0) for i, p in enumerate(prompts) for a in ("a", BASE, "d")]
        events = [_run(engine, r) for r in late]
        assert all(e.wait(60) for e in events) and long_done.wait(60)
        got = {(i, a): late[k].output_ids for k, (i, a) in enumerate((i, a) for i in range(3) for a in ("a", BASE, "d"))}
        assert got == want
        assert long.output_ids[:10] == want[(1, "a")] and len(long.output_ids) == 60
        assert long.max_batch > 1, "late requests did not join the running batch"
        assert not engine.lanes
    finally:
        engine.stop()
