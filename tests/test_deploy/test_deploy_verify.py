"""`export merge|gguf --verify` and `export verify --endpoint`: the artifact against the adapter on the test split.

The run's test references are the adapter's own greedy answers, so the adapter scores 100%: an artifact that
answers like it passes, one that answers differently (a broken merge) fails the parity verdict."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from tunesmith.cli import app

from support.adapters import make_adapter, one_torch_thread  # noqa: F401  (autouse fixture)

runner = CliRunner()
N_TEST = 30
MAX_NEW = 6
KEY = "tsk-verify-key"


def _prompts() -> list[list[dict]]:
    return [[{"role": "user", "content": f"Ticket {i}: {['printer', 'invoice', 'login'][i % 3]} problem #{i * 7}"}]
            for i in range(N_TEST)]


def _adapter_answers(tiny_model_dir, tokenizer, adapter) -> list[str]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunesmith.evaluate.generate import generate_greedy, render_prompts

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32),
                                      str(adapter))
    return generate_greedy(model, tokenizer, render_prompts(tokenizer, _prompts()), max_new_tokens=MAX_NEW,
                           batch_size=16)


@pytest.fixture
def run_config(tiny_model_dir, tokenizer, tmp_path):
    """A run folder: a tiny LoRA adapter and prepared splits whose test answers are the adapter's own."""
    run = tmp_path / "runs" / "tickets"
    adapter = make_adapter(tiny_model_dir, run / "adapter", r=4, seed=1, scale=2.0)
    answers = _adapter_answers(tiny_model_dir, tokenizer, adapter)
    assert len(set(answers)) > 3, answers  # the answers depend on the prompt
    return _write_run(tmp_path, tiny_model_dir, answers)


def _write_run(tmp_path, tiny_model_dir, answers: list[str], tools: list[dict] | None = None, **eval_cfg):
    """The run's prepared splits (the test split: the prompts with ``answers``) and its config file."""
    run = tmp_path / "runs" / "tickets"
    (run / "data").mkdir(parents=True)
    rows = [{"id": f"t{i}", "messages": [*conv, {"role": "assistant", "content": a}], **({"tools": tools} if tools else {})}
            for i, (conv, a) in enumerate(zip(_prompts(), answers, strict=True))]
    for split, part in (("train", rows[:2]), ("validation", []), ("test", rows)):
        (run / "data" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    cfg = {"name": "tickets", "output_dir": str(tmp_path / "runs"), "seed": 0,
           "model": {"name_or_path": str(tiny_model_dir), "device": "cpu", "dtype": "float32"},
           "train": {"method": "lora", "lora": {"r": 4}},
           "eval": {"max_new_tokens": MAX_NEW, "batch_size": 16, **eval_cfg}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


TOOLS = [{"type": "function", "function": {"name": "get_ticket", "description": "Look a ticket up.",
                                           "parameters": {"type": "object", "properties": {"id": {"type": "integer"}},
                                                          "required": ["id"]}}}]


@pytest.fixture
def tool_run_config(tiny_model_dir, tokenizer, tmp_path):
    """As run_config, but every test conversation declares a function: the references are the adapter's answers
    with the tools in its prompt (as `tunesmith eval` asks it)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunesmith.evaluate.generate import generate_greedy, render_prompts

    run = tmp_path / "runs" / "tickets"
    adapter = make_adapter(tiny_model_dir, run / "adapter", r=4, seed=1, scale=2.0)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32),
                                      str(adapter))
    with_tools = generate_greedy(model, tokenizer, render_prompts(tokenizer, _prompts(), [TOOLS] * N_TEST),
                                 max_new_tokens=MAX_NEW, batch_size=16)
    without = generate_greedy(model, tokenizer, render_prompts(tokenizer, _prompts()), max_new_tokens=MAX_NEW,
                              batch_size=16)
    assert sum(a != b for a, b in zip(with_tools, without, strict=True)) >= N_TEST // 2  # the tools matter
    return _write_run(tmp_path, tiny_model_dir, with_tools, tools=TOOLS, scorer="exact")


def _result(run_config, name):
    return json.loads((run_config.parent / "runs" / "tickets" / "verify" / f"{name}.json").read_text())


def test_merge_verify_passes_when_the_merge_answers_like_the_adapter(run_config):
    r = runner.invoke(app, ["export", "merge", str(run_config), "--verify", "--margin", "15"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    res = _result(run_config, "merged")
    # 30 of 30 right on both sides, (30, 0, 0, 0): Newcombe's interval is [-z²/(30 + z²), +...] = [-11.35, +11.35]
    assert res["pairs"] == {"both_right": 30, "candidate_only_right": 0, "reference_only_right": 0, "both_wrong": 0}
    assert res["difference_ci_points"] == pytest.approx([-11.35, 11.35], abs=0.01)
    assert (res["verdict"], res["agreement"], res["changed"]) == ("pass", 1.0, 0)
    assert res["reference"].startswith("adapter") and res["artifact"] == "merged"
    assert "verify PASS: merged vs adapter" in " ".join(r.output.split())


def test_merge_verify_fails_on_a_broken_merge(run_config, monkeypatch):
    import tunesmith.deploy.merge as merge_mod

    attach = merge_mod.attach_adapter

    def doubled_scaling(model, adapter_dir, adapter_name="default"):  # a merge bug: every LoRA delta twice as big
        peft_model = attach(model, adapter_dir, adapter_name)
        for module in peft_model.modules():
            if isinstance(getattr(module, "scaling", None), dict):
                module.scaling = {k: 2 * v for k, v in module.scaling.items()}
        return peft_model

    monkeypatch.setattr(merge_mod, "attach_adapter", doubled_scaling)
    r = runner.invoke(app, ["export", "merge", str(run_config), "--verify", "--margin", "15"], catch_exceptions=False)
    assert r.exit_code == 1, r.output
    res = _result(run_config, "merged")
    assert res["verdict"] == "fail" and res["difference_ci_points"][1] < -15
    assert res["changed"] >= 20 and res["changed_examples"][0]["reference"] != res["changed_examples"][0]["candidate"]
    out = " ".join(r.output.split())
    assert "verify FAIL: merged vs adapter" in out and f"{res['changed']} of 30 answers differ" in out


def test_verify_asks_both_sides_with_each_conversations_tools(tool_run_config):
    r = runner.invoke(app, ["export", "merge", str(tool_run_config), "--verify", "--margin", "15"],
                      catch_exceptions=False)
    assert r.exit_code == 0, r.output
    res = _result(tool_run_config, "merged")
    # the references were answered with the tools in the prompt: only a verify that sends them gets 30 of 30
    assert res["pairs"] == {"both_right": 30, "candidate_only_right": 0, "reference_only_right": 0, "both_wrong": 0}


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is not None, reason="llama-cpp-python is installed here")
def test_gguf_verify_without_llama_cpp_reads_the_file_back_through_transformers(run_config):
    r = runner.invoke(app, ["export", "gguf", str(run_config), "--type", "f32", "--verify", "--margin", "15"],
                      catch_exceptions=False)
    assert r.exit_code == 0, r.output
    res = _result(run_config, "gguf")
    # the merged weights in f32, the tokenizer and template from the file: the adapter's 30 answers, unchanged
    assert (res["verdict"], res["agreement"], res["changed"], res["n"]) == ("pass", 1.0, 0, N_TEST)
    assert res["artifact"] == "gguf" and res["runtime"].startswith("transformers (gguf_file=)")
    out = " ".join(r.output.split())
    assert "verify PASS: gguf vs adapter" in out and "llama.cpp's runtime not checked" in out


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is not None, reason="llama-cpp-python is installed here")
def test_gguf_verify_fails_on_a_file_written_without_llama_cpps_q_k_row_order(run_config, monkeypatch):
    import tunesmith.deploy.gguf_export as gguf_mod

    monkeypatch.setattr(gguf_mod, "_permute", lambda w, n_head: w)  # an export bug: rotary halves left as in HF
    r = runner.invoke(app, ["export", "gguf", str(run_config), "--type", "f32", "--verify", "--margin", "15"],
                      catch_exceptions=False)
    assert r.exit_code == 1, r.output
    res = _result(run_config, "gguf")
    assert res["verdict"] == "fail" and res["changed"] >= 15


def test_verify_a_running_server_through_the_openai_client(run_config, tiny_model_dir, monkeypatch):
    from tunesmith.deploy.config import ServeConfig
    from tunesmith.deploy.server.auth import hash_key
    from tunesmith.deploy.server.runner import ServerThread, build_state
    from tunesmith.models.config import ModelConfig

    adapter = run_config.parent / "runs" / "tickets" / "adapter"
    cfg = ServeConfig(adapters={"tickets": str(adapter)}, api_key_hashes=[hash_key(KEY)], batch_wait_ms=5)
    monkeypatch.setenv("VERIFY_KEY", KEY)
    with ServerThread(build_state(cfg, ModelConfig(name_or_path=str(tiny_model_dir), device="cpu"))) as server:
        ok = runner.invoke(app, ["export", "verify", str(run_config), "--endpoint", server.url + "/v1",
                                 "--api-key-env", "VERIFY_KEY", "--margin", "15"], catch_exceptions=False)
        res = _result(run_config, "serve")
        # the base model served under the adapter's name: answers change, the verdict is fail
        wrong = runner.invoke(app, ["export", "verify", str(run_config), "--endpoint", server.url + "/v1",
                                    "--api-key-env", "VERIFY_KEY", "--served-model", "base", "--margin", "15"],
                              catch_exceptions=False)
    assert ok.exit_code == 0, ok.output
    assert wrong.exit_code == 1, wrong.output
    assert (res["verdict"], res["agreement"]) == ("pass", 1.0) and res["latency"]["serve"]["n"] == N_TEST
    assert _result(run_config, "serve")["verdict"] == "fail"  # the second run overwrote it
    assert "verify FAIL: serve vs adapter" in " ".join(wrong.output.split())


def test_verify_an_endpoint_with_a_wrong_key_is_a_clear_error(run_config, tiny_model_dir, monkeypatch):
    from tunesmith.deploy.config import ServeConfig
    from tunesmith.deploy.server.auth import hash_key
    from tunesmith.deploy.server.runner import ServerThread, build_state
    from tunesmith.errors import TunesmithError
    from tunesmith.models.config import ModelConfig

    adapter = run_config.parent / "runs" / "tickets" / "adapter"
    cfg = ServeConfig(adapters={"tickets": str(adapter)}, api_key_hashes=[hash_key(KEY)])
    monkeypatch.setenv("VERIFY_KEY", "tsk-not-the-key")
    with ServerThread(build_state(cfg, ModelConfig(name_or_path=str(tiny_model_dir), device="cpu"))) as server:
        with pytest.raises(TunesmithError, match=r"refused the request \(HTTP 401\)"):
            runner.invoke(app, ["export", "verify", str(run_config), "--endpoint", server.url + "/v1",
                                "--api-key-env", "VERIFY_KEY"], catch_exceptions=False)
