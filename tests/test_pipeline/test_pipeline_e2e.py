"""End to end on the embedded SmolLM2-135M-Instruct: CLI run -> standard PEFT adapter -> report.

Slow (real model on CPU): marked `slow`, run in CI.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "support-tickets"


def _generate(n, out: Path):
    spec = importlib.util.spec_from_file_location("gen", EXAMPLE / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    rows = gen.generate(n, seed=11)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.slow
def test_cli_run_writes_standard_adapter_that_plain_peft_reproduces(tmp_path, embedded_model_dir):
    data = tmp_path / "tickets.jsonl"
    _generate(120, data)
    cfg = yaml.safe_load((EXAMPLE / "config.yaml").read_text())
    cfg["data"]["train_file"] = str(data)
    cfg["output_dir"] = str(tmp_path / "runs")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run(
        [sys.executable, "-m", "tunesmith.cli", "run", str(tmp_path / "config.yaml"),
         "train.max_steps=3", "eval.max_examples=6", "eval.max_new_tokens=24", "eval.models=[base,tuned]",
         "eval.adversarial.max_prompts=5", "eval.regression.max_prompts=4",
         "eval.regression.instruction_prompts=4"],
        capture_output=True, text=True, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "runs" / "support-tickets"
    assert "base vs tuned" in r.stdout
    for f in ["config.yaml", "data/train.jsonl", "data/test.jsonl", "report.md", "metrics.json", "train_metrics.jsonl",
              "adapter/adapter_config.json", "adapter/adapter_model.safetensors"]:
        assert (run / f).is_file(), f
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= {"base", "tuned"} and metrics["tuned"]["n"] == 6

    # plain peft, one prompt at a time, reproduces tunesmith's batched greedy evaluation
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter_cfg = json.loads((run / "adapter" / "adapter_config.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(adapter_cfg["base_model_name_or_path"])
    tok = AutoTokenizer.from_pretrained(adapter_cfg["base_model_name_or_path"])
    model = PeftModel.from_pretrained(base, str(run / "adapter")).eval()
    ours = [json.loads(line) for line in (run / "eval" / "tuned.jsonl").read_text().splitlines()]
    test = [json.loads(line) for line in (run / "data" / "test.jsonl").read_text().splitlines()][:6]
    for rec, got in zip(test, ours, strict=True):
        msgs = [{"role": m["role"], "content": m["content"]} for m in rec["messages"][:-1]]
        ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=24, do_sample=False, eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.pad_token_id)
        text = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        assert text == got["prediction"], (rec["id"], text, got["prediction"])
