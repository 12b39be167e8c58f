"""train.select_by: task_score — the best checkpoint and early stopping follow the task score of the
validation split (validation loss breaking ties), scored by the evaluation's own scorer."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from support.train_runs import resume_run_config

from tunesmith.config import build_config, load_config
from tunesmith.errors import ConfigError
from tunesmith.pipeline import run_train
from tunesmith.train import task_eval
from tunesmith.train.parallel import Distributed
from tunesmith.train.task_eval import ValidationScorer, validation_scorer


def _train_with_scores(tmp_path, tiny_model_dir, monkeypatch, scores, **train):
    """Train in this process with a task scorer that returns ``scores`` in turn; returns (summary, the
    trainable weights at each validation, the saved adapter)."""
    cfg = load_config(resume_run_config(tmp_path, tiny_model_dir, save_steps=None, warmup_ratio=0.0, scheduler="constant",
                              lr=1e-2, lora={"r": 4, "dropout": 0.0}, eval_steps=1, **train), ["name=sel"])
    weights = []

    def fake_score(self, model):
        weights.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
        return scores[len(weights) - 1]

    monkeypatch.setattr(ValidationScorer, "__call__", fake_score)
    run_train(cfg)
    run = cfg.run_dir
    summary = json.loads((run / "train_summary.json").read_text())
    return summary, weights, load_file(str(run / "adapter" / "adapter_model.safetensors"))


def _same_weights(adapter: dict, weights: dict) -> bool:
    assert len(adapter) == len(weights) > 0
    # PEFT drops the adapter name ("default") from saved keys
    return all(torch.equal(adapter[name.replace(".default", "")], t) for name, t in weights.items())


@pytest.mark.parametrize("scores, best", [([0.2, 0.9, 0.5], 2), ([0.5, 0.5, 0.2], 2)],
                         ids=["highest-score", "tie-broken-by-loss"])
def test_the_saved_adapter_is_the_step_with_the_best_task_score(tmp_path, tiny_model_dir, monkeypatch, scores, best):
    summary, weights, adapter = _train_with_scores(tmp_path, tiny_model_dir, monkeypatch, scores, max_steps=3,
                                                   select_by="task_score")
    vals = [v["val_loss"] for v in summary["val_history"]]
    assert vals[0] > vals[1] > vals[2], vals  # by validation loss alone the last step would have been kept
    assert [v["task_score"] for v in summary["val_history"]] == scores
    assert summary["select_by"] == "task_score" and summary["best_step"] == best
    assert summary["best_task_score"] == scores[best - 1] and summary["best_val_loss"] == vals[best - 1]
    assert summary["used_best_checkpoint"]
    assert _same_weights(adapter, weights[best - 1])
    assert not _same_weights(adapter, weights[-1])


def test_early_stopping_follows_the_task_score_while_the_loss_still_improves(tmp_path, tiny_model_dir, monkeypatch):
    summary, weights, adapter = _train_with_scores(tmp_path, tiny_model_dir, monkeypatch,
                                                   [0.5, 0.4, 0.3, 0.2, 0.1, 0.0, 0.0, 0.0], max_steps=8,
                                                   early_stopping_patience=2)  # select_by: auto -> task_score
    vals = [v["val_loss"] for v in summary["val_history"]]
    assert summary["select_by"] == "task_score"
    assert summary["steps"] == 3 and len(vals) == 3  # patience 2 after the best (step 1)
    assert vals[0] > vals[1] > vals[2], vals  # validation loss would not have stopped it
    assert summary["best_step"] == 1 and _same_weights(adapter, weights[0])


def test_the_validation_scorer_is_the_evaluations_scorer_on_greedy_answers(tokenizer, monkeypatch):
    """Built from eval: as `tunesmith eval` builds it (here the label scorer), on the first
    train.task_eval_examples validation conversations; text records are left out."""
    cfg = build_config({"eval": {"label_pattern": r"Urgency: (?P<urgency>\w+)"}, "train": {"task_eval_examples": 3}})
    records = [{"id": "t", "text": "raw text has no answer to score"}] + [
        {"id": f"v{i}", "messages": [{"role": "user", "content": f"ticket {i}"},
                                     {"role": "assistant", "content": f"Urgency: {u}"}]}
        for i, u in enumerate(["High", "Low", "Medium", "High"])]
    asked = {}

    def fake_generate(model, tok, prompts, *, max_new_tokens, batch_size):
        asked.update(prompts=prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
        return ["Urgency: High", "Urgency: High  (sure)", "Urgency: Medium"]

    monkeypatch.setattr(task_eval, "generate_greedy", fake_generate)
    scorer = validation_scorer(cfg, records, tokenizer, Distributed())
    assert scorer.scorer.kind == "label" and scorer.n == 3
    assert scorer(model=None) == pytest.approx(2 / 3)  # v1's answer has the wrong label
    assert (asked["max_new_tokens"], asked["batch_size"]) == (cfg.eval.max_new_tokens, cfg.eval.batch_size)
    assert len(asked["prompts"]) == 3 and tokenizer.decode(asked["prompts"][0]).rstrip().endswith("assistant")
    assert "ticket 0" in tokenizer.decode(asked["prompts"][0])


def test_task_score_without_a_validation_split_is_a_config_error(tmp_path, tiny_model_dir):
    cfg = load_config(resume_run_config(tmp_path, tiny_model_dir, select_by="task_score", max_steps=2),
                      ["name=noval", "data.validation_fraction=0"])
    with pytest.raises(ConfigError, match="train.select_by is task_score but there is no validation split"):
        run_train(cfg)


def test_task_eval_examples_unset_is_24_under_a_time_budget_else_64_and_a_set_value_wins():
    assert build_config({}).train.task_eval_count == 64
    assert build_config({"train": {"time_budget": "15m"}}).train.task_eval_count == 24
    assert build_config({"train": {"time_budget": "15m", "task_eval_examples": 40}}).train.task_eval_count == 40
