"""report.md and report.html are two renderings of one report: the same tables, the same numbers."""

from __future__ import annotations

from tunesmith.config import build_config
from tunesmith.data.prepared import PreparedData

from support.fake_openai import FakeOpenAI
from support.report_tables import HtmlTables, markdown_tables

INSTR = "Classify this ticket."
LABEL_RE = r"Urgency:\s*(?P<urgency>\w+)[\s\S]*?Category:\s*(?P<category>\w+)"
TICKETS = [("the site is down", "Critical", "Technical"), ("charged twice", "High", "Billing"),
           ("change my avatar", "Low", "Account")]


def _evaluate(tmp_path, server):
    from tunesmith.evaluate.run import evaluate_from_config

    test = [{"id": f"t{i}", "messages": [{"role": "user", "content": f"{INSTR}\n\n{text}"},
                                         {"role": "assistant", "content": f"Urgency: {u}\nCategory: {c}"}]}
            for i, (text, u, c) in enumerate(TICKETS)]
    endpoint = {"base_url": server.base_url, "api_key_env": None, "max_retries": 0, "backoff_s": 0}
    cfg = build_config({"name": "r", "output_dir": str(tmp_path / "runs"), "seed": 1, "eval": {
        # "down" fails every request (HTTP 500): it has no per-label accuracy, and it is listed first
        "models": ["down", "api"], "label_pattern": LABEL_RE, "format_pattern": r"Urgency: \w+\nCategory: \w+",
        "bootstrap_samples": 200, "adversarial": {"max_prompts": 3},
        "endpoints": [{"name": "down", "model": "broken", **endpoint}, {"name": "api", "model": "echo", **endpoint}]}},
        base_dir=tmp_path)
    metrics = evaluate_from_config(cfg, PreparedData(train=[], validation=[], test=test))
    return cfg.run_dir, metrics


def test_markdown_and_html_carry_the_same_tables(tmp_path):
    answers = {f"{INSTR}\n\n{TICKETS[0][0]}": "Urgency: Critical\nCategory: Technical",
               f"{INSTR}\n\n{TICKETS[1][0]}": "Urgency: Low\nCategory: Billing"}
    with FakeOpenAI(answers) as server:
        run, metrics = _evaluate(tmp_path, server)
    md_tables = markdown_tables((run / "report.md").read_text())
    page = HtmlTables((run / "report.html").read_text())
    headline = md_tables[0]
    assert headline[0][:5] == ["model", "accuracy", "category accuracy", "urgency accuracy", "format compliance"]
    assert [r[0] for r in headline[1:]] == ["down", "api"]
    # api: 1 of 3 right; down: none scored
    assert headline[2][1].startswith("33.3% [") and headline[1][1] == "-" and headline[1][5] == "0 (3 failed)"
    # the HTML's headline table is the Markdown's, and so is every detail table, in the same order
    assert page.tables[0] == headline
    assert page.tables[1:] == md_tables
    assert len(md_tables) >= 5  # headline, comparisons, per-class x2 (+ confusion), adversarial
    # the side-by-side plot draws exactly the rate columns of the headline table, whatever the first model has
    plot = next(a for a in page.alts if a.startswith("All models side by side"))
    assert plot.split(": ", 1)[1].split(", ") == ["accuracy", "category accuracy", "urgency accuracy",
                                                   "format compliance", "hallucination"]
    assert metrics["api"]["accuracy"] == 1 / 3


def test_a_report_is_built_once_and_rendered_twice():
    from types import SimpleNamespace

    from tunesmith.evaluate.report_content import build_report, plain
    from tunesmith.evaluate.report_html import render_html
    from tunesmith.evaluate.report_markdown import render_markdown

    metrics = {"base": {"n": 2, "n_failed": 0, "accuracy": 0.5, "accuracy_ci": [0.0, 1.0], "format_compliance": None},
               "tuned": {"n": 2, "n_failed": 1, "accuracy": 1.0, "accuracy_ci": [1.0, 1.0], "format_compliance": 1.0},
               "regression": {"text_source": "bundled", "text_chars": 100, "prompts_source": "file",
                              "thresholds": {"max_perplexity_increase_pct": 10, "max_rouge_drop_points": 5},
                              "base": {"perplexity": 20.0, "perplexity_ci": [18.0, 22.5], "rouge_l": 0.25,
                                       "instruction_pass_rate": 0.25},
                              "tuned": {"perplexity": 30.0, "rouge_l": 0.2, "perplexity_change_pct": 50.0,
                                        "rouge_l_change_points": -5.0, "instruction_pass_rate": 0.2,
                                        "forgetting": True, "flags": ["perplexity +50.0% > 10%"]}},
               "gates": [{"key": "tuned.accuracy", "threshold": 0.8, "value": 1.0, "passed": True}]}
    wrong = {"id": "t1", "prompt": "x" * 700, "reference": "A", "prediction": "B", "correct": False, "score": 0.0}
    results = {"base": SimpleNamespace(examples=[wrong], scores={}, adversarial_examples=[], general_scores={}),
               "tuned": SimpleNamespace(examples=[{"id": "t2", "error": "HTTP 500", "correct": None}], scores={},
                                        adversarial_examples=[], general_scores={})}
    report = build_report(results, metrics, title="r", show_failures=1)
    assert [[plain(c) for c in row] for row in report.headline.rows] == [
        ["base", "50.0% [0.0, 100.0]", "-", "2", "-", "20.00 [18.00, 22.50]", "25.0%"],
        ["tuned", "100.0% [100.0, 100.0]", "100.0%", "2 (1 failed)", "-", "30.00", "20.0%"]]
    # perplexity is not a rate and hallucination was not measured: neither is plotted
    assert [m.label for m in report.plotted_measures] == ["accuracy", "format compliance", "instructions followed"]
    assert report.forgetting == (("tuned", ("perplexity +50.0% > 10%",)),)
    md, page = render_markdown(report), render_html(report)
    assert "| tuned | 30.00 | +50.0% | 20.0% | - | - | - | **yes**: perplexity +50.0% > 10% |" in md
    # general ROUGE-L left the headline; it stays in the regression section, with what it is worth
    assert "General-prompt ROUGE-L against the reference answers: base 25.0%; tuned 20.0% (-5.0 points). Not a " \
        "quality measure" in md
    assert "<td><b>yes</b>: perplexity +50.0% &gt; 10%</td>" in page
    # report.md shows the end of a long input; report.html all of it
    assert "…" + "x" * 600 + "\n```" in md and "x" * 700 in page
    assert "## Failed requests: tuned (1, not scored)\n\n- `t2`: HTTP 500" in md and "request failed" in page
