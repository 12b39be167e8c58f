"""What the evaluation report says, built once from metrics.json and the per-example results.

:func:`build_report` turns the numbers into a :class:`Report`: the headline table (one row per
model), the detail sections (comparisons, per-class tables, hallucination, regression, gates), the
data behind the plots and the examples worth reading (wrong answers, failed requests, adversarial
failures). Every number is formatted here, once; the renderers (``report_markdown.py``,
``report_html.py``, ``report_terminal.py``) only lay it out, so report.md, report.html and the
terminal cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tunesmith.evaluate.instruction_checks import MIN_ANSWER_WORDS
from tunesmith.evaluate.invented_values import RATES

# -- text ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Strong:
    """Emphasised text (bold)."""

    text: str


@dataclass(frozen=True)
class Code:
    """An identifier shown as code."""

    text: str


Span = str | Strong | Code
Text = Span | tuple[Span, ...]  # a run of plain, bold and code spans


def plain(text: Text) -> str:
    """The text without emphasis."""
    if isinstance(text, tuple):
        return "".join(plain(t) for t in text)
    return text if isinstance(text, str) else text.text


# -- blocks ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Paragraph:
    text: Text


@dataclass(frozen=True)
class Bullets:
    items: tuple[Text, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[Text, ...], ...]


Block = Paragraph | Bullets | Table


@dataclass(frozen=True)
class Section:
    title: str
    level: int  # 2: a numbered part of the report, 3: a part within it
    blocks: tuple[Block, ...]


# -- numbers behind the tables and plots -------------------------------------------------------


@dataclass(frozen=True)
class Value:
    value: float | None
    ci: tuple[float, float] | None = None


@dataclass(frozen=True)
class Measure:
    """One headline column: a value (with its CI) per model."""

    label: str
    values: tuple[Value, ...]  # in the order of Report.models
    fraction: bool = True  # a rate in [0, 1], shown in percent and plotted; else a plain number (perplexity)

    def cell(self, i: int) -> str:
        return with_ci(self.values[i], fraction=self.fraction)


@dataclass(frozen=True)
class Confusion:
    model: str
    expected: tuple[str, ...]
    predicted: tuple[str, ...]
    matrix: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class ClassDetail:
    """One label field: F1 per class for each model (0 where a model has none), confusion matrices."""

    field: str
    classes: tuple[str, ...]
    f1: Mapping[str, tuple[float, ...]]
    confusions: tuple[Confusion, ...]


@dataclass(frozen=True)
class Distribution:
    title: str
    scores: Mapping[str, tuple[float, ...]]  # model -> per-example scores


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    delta_points: float
    ci: tuple[float, float] | None
    test: str
    p_value: float


@dataclass(frozen=True)
class Example:
    id: str
    input: str | None
    expected: str | None
    got: str | None
    note: str  # why it is listed: "score 0.0", "request failed", "adversarial empty, expected abstain"
    expected_label: str = "expected"  # "expected behaviour" for adversarial items
    error: str | None = None
    format_error: str | None = None


@dataclass(frozen=True)
class ModelExamples:
    model: str
    wrong: tuple[Example, ...]
    failed: tuple[Example, ...]
    adversarial_failures: tuple[Example, ...]


@dataclass(frozen=True)
class Report:
    title: str
    models: tuple[str, ...]
    meta: Bullets  # model, method, test examples, scorer, evaluation folder
    measures: tuple[Measure, ...]  # the headline columns, task columns first
    headline: Table  # one row per model: the task measures, n, then hallucination, perplexity, instructions followed
    sections: tuple[Section, ...]
    comparisons: tuple[Comparison, ...]
    forgetting: tuple[tuple[str, tuple[str, ...]], ...]  # (model, flags) where forgetting was flagged
    invented_flags: tuple[tuple[str, str], ...]  # (model, why) where invented values were flagged
    class_details: tuple[ClassDetail, ...]
    distributions: tuple[Distribution, ...]
    examples: tuple[ModelExamples, ...]
    show_failures: int  # how many wrong answers / failed requests per model report.md lists (the HTML lists all)
    parity: Text | None = None  # the parity certificate's verdict in one line (eval.parity), for the terminal

    @property
    def plotted_measures(self) -> tuple[Measure, ...]:
        """The headline columns drawn in the side-by-side plot: the rates that some model has."""
        return tuple(m for m in self.measures if m.fraction and any(v.value is not None for v in m.values))


# -- formatting ------------------------------------------------------------------------------


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def with_ci(v: Value, *, fraction: bool = True) -> str:
    """``12.5% [8.0, 17.1]`` for a rate, ``25.50 [22.16, 29.05]`` for a plain number, ``-`` for none."""
    if v.value is None:
        return "-"
    if fraction:
        return pct(v.value) + (f" [{100 * v.ci[0]:.1f}, {100 * v.ci[1]:.1f}]" if v.ci else "")
    return f"{v.value:.2f}" + (f" [{v.ci[0]:.2f}, {v.ci[1]:.2f}]" if v.ci else "")


def _value(m: dict[str, Any] | None, key: str) -> Value:
    if not m or m.get(key) is None:
        return Value(None)
    ci = m.get(f"{key}_ci")
    return Value(m[key], (ci[0], ci[1]) if ci else None)


def _pct_ci(m: dict[str, Any] | None, key: str) -> str:
    return with_ci(_value(m, key))


def _signed_ci(ci: Any) -> str:
    return f"[{ci[0]:+.1f}, {ci[1]:+.1f}]" if ci else "-"


# -- building --------------------------------------------------------------------------------


def _task_keys(model_metrics: list[dict[str, Any]]) -> list[str]:
    keys = ["accuracy"]
    for m in model_metrics:
        keys += [k for k in m if k.endswith("_accuracy") and k not in keys]
    keys += [k for k in ("field_f1", "format_compliance") if any(m.get(k) is not None for m in model_metrics)]
    return keys


def _measures(models: list[str], metrics: dict[str, Any]) -> tuple[list[Measure], list[Measure]]:
    """(task measures, hallucination / perplexity / instructions-followed measures) of the headline. General-prompt
    ROUGE-L against reference answers is not a headline column: against chatterbot-corpus's one-line replies even the
    base scores ~4%, so it says little (it stays in the regression section, with that note)."""
    per_model = [metrics[n] for n in models]
    task = [Measure(k.replace("_", " "), tuple(_value(m, k) for m in per_model)) for k in _task_keys(per_model)]
    adv, reg = metrics.get("adversarial", {}), metrics.get("regression", {})
    invented = Measure("invented values", tuple(_value(m, "invented_value_rate") for m in per_model))
    other = [Measure("hallucination", tuple(_value(adv.get(n), "hallucination_rate") for n in models)),
             *([invented] if any(v.value is not None for v in invented.values) else []),
             Measure("perplexity", tuple(_value(reg.get(n), "perplexity") for n in models), fraction=False),
             Measure("instructions followed", tuple(_value(reg.get(n), "instruction_pass_rate") for n in models))]
    return task, other


def _headline(models: list[str], metrics: dict[str, Any], task: list[Measure], other: list[Measure]) -> Table:
    rows = []
    for i, n in enumerate(models):
        m = metrics[n]
        n_txt = str(m["n"]) + (f" ({m['n_failed']} failed)" if m.get("n_failed") else "")
        rows.append((n, *[c.cell(i) for c in task], n_txt, *[c.cell(i) for c in other]))
    return Table(("model", *[c.label for c in task], "n", *[c.label for c in other]), tuple(rows))


def _comparisons(metrics: dict[str, Any]) -> tuple[Comparison, ...]:
    out = []
    for name, c in metrics.get("comparisons", {}).items():
        b, a = name.split("_vs_", 1) if "_vs_" in name else (name, "?")
        ci = c.get("delta_points_ci")
        out.append(Comparison(a, b, c["delta_points"], (ci[0], ci[1]) if ci else None, c["test"], c["p_value"]))
    return tuple(out)


def _task_section(headline: Table, metrics: dict[str, Any], comparisons: tuple[Comparison, ...],
                  invented_flags: tuple[tuple[str, str], ...]) -> list[Section]:
    blocks: list[Block] = [Paragraph("Numbers in brackets are 95% bootstrap confidence intervals. Format compliance is "
                                     "measured apart from correctness."), headline]
    if "delta_accuracy_points" in metrics:
        blocks.append(Paragraph(("Tuned minus base accuracy: ", Strong(f"{metrics['delta_accuracy_points']:+.1f} points"),
                                 ".")))
    blocks += [Paragraph((Strong(f"Invented values flagged for {n}"), f": {why}")) for n, why in invented_flags]
    out = [Section("1. Task accuracy and format compliance (held-out test split)", 2, tuple(blocks))]
    if comparisons:
        rows = tuple((f"{c.b} vs {c.a}", f"{c.delta_points:+.1f}", _signed_ci(c.ci), c.test, f"{c.p_value:.3g}")
                     for c in comparisons)
        out.append(Section("Paired comparisons (same examples)", 3,
                           (Table(("comparison", "Δ points", "95% CI", "test", "p"), rows),)))
    return out


def _class_details(models: list[str], metrics: dict[str, Any]) -> list[ClassDetail]:
    details = []
    for f in sorted({f for n in models for f in metrics[n].get("classification", {})}):
        per = {n: metrics[n].get("classification", {}).get(f, {}) for n in models}
        classes = tuple(sorted({c for n in models for c in per[n].get("per_class", {})}))
        f1 = {n: tuple(per[n].get("per_class", {}).get(c, {}).get("f1", 0) for c in classes) for n in models}
        confs = tuple(Confusion(n, tuple(per[n]["confusion"]["expected"]), tuple(per[n]["confusion"]["predicted"]),
                                tuple(tuple(r) for r in per[n]["confusion"]["matrix"]))
                      for n in models if per[n].get("confusion"))
        details.append(ClassDetail(f, classes, f1, confs))
    return details


def _class_sections(models: list[str], metrics: dict[str, Any], details: list[ClassDetail]) -> list[Section]:
    out = []
    for d in details:
        per = {n: metrics[n].get("classification", {}).get(d.field, {}) for n in models}
        body: list[tuple[Text, ...]] = []
        for c in d.classes:
            cells = [per[n].get("per_class", {}).get(c) for n in models]
            body.append((c, *[f"{pct(pc['precision'])} / {pct(pc['recall'])}" if pc else "-" for pc in cells]))
        body.append((Strong("macro-F1"), *[_pct_ci(per[n], "macro_f1") for n in models]))
        blocks: list[Block] = [Table(("class", *[f"{n} P / R" for n in models]), tuple(body))]
        for conf in d.confusions:
            blocks += [Paragraph(f"Confusion matrix, {conf.model} (rows expected, columns predicted):"),
                       Table(("expected \\ predicted", *conf.predicted),
                             tuple((e, *[str(v) for v in row]) for e, row in zip(conf.expected, conf.matrix, strict=True)))]
        out.append(Section(f"{d.field}: per-class precision / recall", 3, tuple(blocks)))
    return out


TOOL_CALL_COLUMNS = (("exact calls", "exact_call_accuracy"), ("function names", "name_accuracy"),
                     ("arguments", "argument_accuracy"), ("no-call", "no_call_accuracy"),
                     ("call / no call", "call_decision_accuracy"), ("compliance", "compliance"))


def _tool_call_section(models: list[str], metrics: dict[str, Any]) -> list[Section]:
    """Tool calling (scorer tool_calls): the rates of each model, and its called-vs-not confusion."""
    per = {n: metrics[n].get("tool_calls") for n in models}
    shown = [n for n in models if per[n]]
    if not shown:
        return []
    first = per[shown[0]]
    intro = Paragraph(
        f"{first['examples_with_calls']} test examples call functions ({first['arguments']} reference arguments), "
        f"{first['examples_without_calls']} need no call. Exact calls: every call right (name, arguments equal as "
        "JSON; parallel calls in any order) and nothing extra, or no call where none is expected. Function names "
        "and arguments: over the examples that call. Compliance: every call parses, names a declared function and "
        "validates against its parameter schema.")
    rows = tuple((n, *[_pct_ci(per[n], key) for _, key in TOOL_CALL_COLUMNS]) for n in shown)
    blocks: list[Block] = [intro, Table(("model", *[label for label, _ in TOOL_CALL_COLUMNS]), rows)]
    for n in shown:
        conf = per[n]["confusion"]
        blocks += [Paragraph(f"Called or not, {n} (rows expected, columns answered):"),
                   Table(("expected \\ answered", *conf["predicted"]),
                         tuple((e, *[str(v) for v in row]) for e, row in zip(conf["expected"], conf["matrix"], strict=True)))]
    return [Section("Tool calls", 3, tuple(blocks))]


def _value_unit(models: list[str], metrics: dict[str, Any]) -> str:
    """What one counted value is: a JSON field, a label, or a whole answer."""
    if any("field_f1" in metrics[n] for n in models):
        return "fields"
    return "labels" if any("classification" in metrics[n] for n in models) else "answers"


def _count_cell(block: dict[str, Any], rate: str) -> str:
    """``80.0% [39.8, 100.0] (4/5)``: a rate with its CI and the counts behind it; ``-`` when out of nothing."""
    num, den = RATES[rate]
    if not block.get(den):
        return "-"
    return f"{_pct_ci(block, rate)} ({block[num]}/{block[den]})"


def _invented_flags(models: list[str], metrics: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """(model, why) for every model whose invented-value rates are above eval.max_invented_value_rate."""
    unit = _value_unit(models, metrics)
    out = []
    for n in models:
        v = metrics[n].get("values") or {}
        if not v.get("flagged"):
            continue
        limit = v["max_invented_value_rate"]
        parts = []
        if v["invented_rate"] is not None and v["invented_rate"] > limit:
            parts.append(f"{v['invented']} of {v['null_reference']} {unit} whose reference has no value got one "
                         f"({pct(v['invented_rate'])})")
        if v["not_in_input_rate"] is not None and v["not_in_input_rate"] > limit:
            parts.append(f"{v['not_in_input']} of {v['grounded']} {unit} whose reference value is in the input got a "
                         f"value found nowhere in it ({pct(v['not_in_input_rate'])})")
        f1 = f", though its field F1 is {pct(metrics[n]['field_f1'])}" if metrics[n].get("field_f1") is not None else ""
        out.append((n, "; ".join(parts) + f1 + f" (above eval.max_invented_value_rate, {pct(limit)})."))
    return tuple(out)


def _values_section(models: list[str], metrics: dict[str, Any]) -> list[Section]:
    """Invented and missing values on the test split: per model, and per field (JSON fields, label groups)."""
    values = {n: metrics[n]["values"] for n in models if metrics[n].get("values")}
    unit = _value_unit(models, metrics)
    if not values or (unit != "fields" and not any(v["null_reference"] for v in values.values())):
        return []  # nothing should be abstained on: nothing to invent
    grounded = unit == "fields"  # only JSON values are looked up in the input
    names = {"right_rate": "right", "invented_rate": "invented (reference has none)",
             "not_in_input_rate": "not in input", "invented_any_rate": "invented, either", "missing_rate": "missing"}
    rates = ["invented_rate", *(["not_in_input_rate", "invented_any_rate"] if grounded else []), "missing_rate",
             "right_rate"]
    intro = (f"Hallucination on the task itself. A {unit[:-1]} has no value where it is null, absent or one of "
             "eval.abstain_values. Invented: a value where the reference has none"
             + ("; not in input: a value found nowhere in the input where the reference's value is in it" if grounded
                else "") + "; missing: no value where the reference has one; right: the reference's value, or no "
             "value where it has none. Each cell: rate [95% CI] (count/out of).")
    total = Table(("model", *[names[r] for r in rates], "fully right answers"),
                  tuple((n, *[_count_cell(v, r) for r in rates],
                         f"{_pct_ci(v, 'fully_right_rate')} ({v['fully_right']}/{v['examples']})")
                        for n, v in values.items()))
    blocks: list[Block] = [Paragraph(intro), total]
    fields = sorted({f for v in values.values() for f in v["per_field"]})
    if fields != ["answer"]:  # exact / free text: the answer is the only field, already in the table above
        field_rates = ["right_rate", "invented_rate", *(["not_in_input_rate"] if grounded else []), "missing_rate"]
        rows = tuple((f, n, *[_count_cell(v["per_field"][f], r) for r in field_rates])
                     for f in fields for n, v in values.items() if f in v["per_field"])
        blocks.append(Table((unit[:-1], "model", *[names[r] for r in field_rates]), rows))
    return [Section("Invented and missing values (test split)", 3, tuple(blocks))]


def _adversarial_section(models: list[str], adv: dict[str, Any] | None) -> list[Section]:
    if not adv:
        return []
    kinds = list(adv["kinds"])
    has_judge = any(isinstance(adv.get(n), dict) and "judge" in adv[n] for n in models)
    rows = []
    for n in models:
        a = adv.get(n)
        if a:
            rows.append((n, _pct_ci(a, "hallucination_rate"),
                         *[pct(a["by_kind"].get(k, {}).get("hallucination_rate")) for k in kinds],
                         *([_pct_ci(a, "judge_hallucination_rate")] if has_judge else [])))
    intro = (f"{adv['items']} inputs outside the training distribution "
             f"({', '.join(f'{k}: {v}' for k, v in adv['kinds'].items())}); an answer that breaks its rule (abstain / "
             "keep the format / ignore the injection) is a hallucination.")
    header = ("model", "hallucination rate", *kinds, *(["judge hallucination rate"] if has_judge else []))
    return [Section("2. Hallucination on adversarial inputs", 2, (Paragraph(intro), Table(header, tuple(rows))))]


def _forgetting_cell(r: dict[str, Any]) -> Text:
    if "forgetting" not in r:
        return "-"
    return (Strong("yes"), ": " + "; ".join(r["flags"])) if r["forgetting"] else "no"


def _signed(x: float | None, fmt: str = "+.1f", unit: str = "") -> str:
    return "-" if x is None else f"{x:{fmt}}{unit}"


def _regression_rules(reg: dict[str, Any]) -> Bullets:
    th = reg["thresholds"]
    lm_eval_rule = (f"; or an lm-eval score drops more than {th['max_lm_eval_drop_points']:g} points or, if larger, "
                    "2 × the combined standard error" if "max_lm_eval_drop_points" in th else "")
    n_instr = reg.get("instruction_prompts", 0)
    items: list[Text] = [f"general text: {reg['text_source']} ({reg['text_chars']} characters)",
                         f"general prompts: {reg['prompts_source']}"]
    if n_instr:
        items.append(f"verifiable instructions: {n_instr} prompts, a general topic + one constraint a program checks "
                     "(bullet count, lowercase, JSON object, word limits, ...), from the templates shipped with tunesmith")
    rules = f"perplexity rises more than {th['max_perplexity_increase_pct']:g}%"
    if "max_instruction_drop_points" in th:
        rules += (f"; the share of verifiable instructions followed drops more than "
                  f"{th['max_instruction_drop_points']:g} points")
        ref = reg.get("drift_reference")
        if ref:
            own = with_ci(_value(ref, "drift"), fraction=False)
            rules += (f"; the mean drift from base's answers is above base's own, {own} (base's answers sampled at "
                      f"temperature {ref['temperature']:g} against its greedy ones)")
        elif th.get("max_mean_drift") is not None:
            rules += f"; the mean drift from base's answers is above {th['max_mean_drift']:g}"
    rules += f"; general ROUGE-L drops more than {th['max_rouge_drop_points']:g} points{lm_eval_rule}"
    items.append(f"flagged when, vs base: {rules}")
    if "drift_changed_above" in th:
        items.append(f"drift: 1 − ROUGE-L between a model's answer and base's answer to the same prompt (0: the same "
                     f"answer, 1: nothing in common); changed: drift above {th['drift_changed_above']:g}")
    return Bullets(tuple(items))


def _regression_row(n: str, r: dict[str, Any]) -> tuple[Text, ...]:
    ch = r.get("perplexity_change_pct")
    instr = _signed(r.get("instruction_change_points"))
    if r.get("instruction_change_points_ci"):
        instr += " " + _signed_ci(r["instruction_change_points_ci"])
    drift = "-" if r.get("drift") is None else with_ci(_value(r, "drift"), fraction=False)
    return (n, with_ci(_value(r, "perplexity"), fraction=False), _signed(ch, unit="%"),
            _pct_ci(r, "instruction_pass_rate"), instr, drift, _pct_ci(r, "changed_share"), _forgetting_cell(r))


def _instruction_kinds_table(models: list[str], reg: dict[str, Any]) -> Table | None:
    per = {n: reg[n]["instruction_by_kind"] for n in models if isinstance(reg.get(n), dict)
           and reg[n].get("instruction_by_kind")}
    if not per:
        return None
    kinds = sorted({k for v in per.values() for k in v})

    def cell(k: dict[str, Any] | None) -> str:
        return "-" if not k else f"{k['passed']}/{k['n']}"
    rows = [(k, *[cell(per[n].get(k)) for n in per]) for k in kinds]
    non_answers = {n: {"passed": reg[n]["instruction_non_answers"], "n": reg[n]["instruction_prompts"]}
                   for n in per if "instruction_non_answers" in reg[n]}
    if non_answers:  # a model collapsed into its task label shows here
        rows.append((f"no answer (under {MIN_ANSWER_WORDS} words: follows none)",
                     *[cell(non_answers.get(n)) for n in per]))
    return Table(("constraint", *[f"{n} passed" for n in per]), tuple(rows))


def _rouge_paragraph(models: list[str], reg: dict[str, Any]) -> list[Block]:
    scored = [(n, reg[n]) for n in models if isinstance(reg.get(n), dict) and reg[n].get("rouge_l") is not None]
    if not scored:
        return []
    cells = "; ".join(f"{n} {_pct_ci(r, 'rouge_l')}" + (f" ({_signed(r.get('rouge_l_change_points'))} points)"
                                                        if "rouge_l_change_points" in r else "") for n, r in scored)
    why = ("with chatterbot-corpus's one-line replies as references even the base model scores ~4%"
           if str(reg.get("prompts_source", "")).startswith("chatterbot") else "it rewards the reference's words")
    return [Paragraph(("General-prompt ROUGE-L against the reference answers: ", cells, f". Not a quality measure: {why} "
                       "(a good answer in other words scores near 0); it means something only when the references "
                       "are the answers you want."))]


def _judge_paragraphs(models: list[str], reg: dict[str, Any]) -> list[Block]:
    out: list[Block] = []
    for n in models:
        j = (reg.get(n) or {}).get("judge_preference") if isinstance(reg.get(n), dict) else None
        if j:
            out.append(Paragraph((f"Judge {j['judge']} on {j['n']} general prompts: prefers {n} {j['model_preferred']}, "
                                  f"base {j['base_preferred']}, tie {j['ties']}; {n}'s win rate (a tie counts half) ",
                                  Strong(_pct_ci(j, "win_rate")), f" ({j['n_unusable']} replies unusable).")))
    return out


def _regression_section(models: list[str], reg: dict[str, Any] | None) -> list[Section]:
    if not reg:
        return []
    rows = [_regression_row(n, reg[n]) for n in models if reg.get(n)]
    table = Table(("model", "perplexity", "Δ", "instructions followed", "Δ points [95% CI]", "drift from base",
                   "changed", "forgetting"), tuple(rows))
    blocks: list[Block] = [_regression_rules(reg), table]
    kinds = _instruction_kinds_table(models, reg)
    if kinds is not None:
        blocks += [Paragraph("Verifiable instructions followed, per constraint (answers and checks in "
                             "eval/<model>.regression.jsonl):"), kinds]
    blocks += [*_judge_paragraphs(models, reg), *_rouge_paragraph(models, reg)]
    return [Section("3. Regression on general tasks (forgetting)", 2, tuple(blocks)), *_lm_eval_section(models, reg)]


def _lm_eval_score(m: dict[str, Any] | None) -> str:
    """``62.5 ± 4.1``: a higher-is-better metric in points with lm-eval's standard error; others as they are."""
    if not m:
        return "-"
    scale, fmt = (100, ".1f") if m.get("higher_is_better") else (1, ".4g")
    se = f" ± {scale * m['stderr']:{fmt}}" if m.get("stderr") is not None else ""
    return f"{scale * m['value']:{fmt}}{se}"


def _lm_eval_change(m: dict[str, Any] | None) -> Text:
    if not m or "change" not in m:
        return "-"
    if "change_points" not in m:
        return f"{m['change']:+.4g}"
    text = f"{m['change_points']:+.1f} (limit {-m['allowed_drop_points']:.1f})"
    return (text + ": ", Strong("forgetting")) if m["flagged"] else text


def _lm_eval_section(models: list[str], reg: dict[str, Any]) -> list[Section]:
    """Per task and metric: each model's score ± standard error, each model's change vs base and its flag."""
    meta = reg.get("lm_eval")
    scored = {n: reg[n]["lm_eval"] for n in models if isinstance(reg.get(n), dict) and reg[n].get("lm_eval")}
    if not meta or not scored:
        return []
    compared = [n for n in scored if n != "base"]
    rows: list[tuple[Text, ...]] = []
    first = next(iter(scored.values()))
    for task, entry in first.items():
        if "group" in entry:  # a member of a scored group: in metrics.json, not in the report
            continue
        for metric in entry["metrics"]:
            per = {n: scored[n].get(task, {}).get("metrics", {}).get(metric) for n in scored}
            rows.append((task, metric, str(entry.get("n", "-")), *[_lm_eval_score(per[n]) for n in scored],
                         *[_lm_eval_change(per[n]) for n in compared]))
    docs = f"the first {meta['limit']} documents of each" if meta.get("limit") else "every document of each task"
    intro = Paragraph((f"lm-evaluation-harness {meta['lm_eval_version']} on {docs} (", Code(", ".join(meta["tasks"])),
                       ") through its HFLM model on the weights loaded here. Scores of higher-is-better metrics "
                       "(accuracies) in points (100 × the metric) ± lm-eval's standard error; the change is the "
                       "model's minus base's, in points, with the drop below which forgetting is flagged."))
    header = ("task", "metric", "n", *[f"{n} (± s.e.)" for n in scored], *[f"{n} − base" for n in compared])
    return [Section("lm-eval tasks (forgetting on standard tasks)", 3, (intro, Table(header, tuple(rows))))]


def _usd(cost: dict[str, Any] | None) -> str:
    if not cost or cost.get("usd_per_million_tokens") is None:
        return "-" + (f" ({cost['note']})" if cost and cost.get("note") else "")
    return f"${cost['usd_per_million_tokens']:.3g}"


def _seconds(lat: dict[str, Any] | None, key: str) -> str:
    if not lat:
        return "-"
    return f"{1000 * lat[key]:.0f} ms" if lat[key] < 1 else f"{lat[key]:.2f} s"


def parity_verdict(p: dict[str, Any]) -> Text:
    """One line: the verdict, the difference with its interval, the margin (report, terminal, export --verify)."""
    head = (Strong(p["verdict"].upper()), f": {p['candidate']} vs {p['reference']}")
    if "difference_points" not in p:
        return (*head, f" ({p.get('note', 'nothing to compare')})")
    lo, hi = p["difference_ci_points"]
    line = (f", {p['candidate']} − {p['reference']} = {p['difference_points']:+.1f} points "
            f"[{p['confidence']:.0%} CI {lo:+.1f}, {hi:+.1f}] on {p['n']} test examples, margin "
            f"−{p['margin_points']:g} points; answers agree on {p['agreed']} of {p['n']} ({pct(p['agreement'])})")
    if p["verdict"] == "inconclusive":
        need = p.get("examples_needed")
        line += (f"; about {need} test examples would decide" if need is not None else
                 "; more examples at this difference would not show non-inferiority")
    return (*head, line)


def _parity_breakdown(rows: dict[str, dict[str, Any]], what: str, ref: str, cand: str) -> list[Block]:
    if not rows:
        return []
    return [Paragraph(f"Per {what} where the two models' outcomes differ:"),
            Table((what, ref, cand, "Δ points", "examples that differ"),
                  tuple((k, pct(r["reference_accuracy"]), pct(r["candidate_accuracy"]),
                         f"{r['difference_points']:+.1f}", f"{r['differing_examples']} of {r['n']}")
                        for k, r in rows.items()))]


def _parity_section(p: dict[str, Any] | None) -> list[Section]:
    """eval.parity: verdict, interval and method, examples needed, agreement, breakdowns, latency and cost."""
    if not p:
        return []
    ref, cand = p["reference"], p["candidate"]
    blocks: list[Block] = [Paragraph(parity_verdict(p))]
    if "difference_points" in p:
        blocks.append(Paragraph(
            f"Paired difference of the per-example task scores on the same test examples; interval: {p['method']}. "
            f"Non-inferiority rule ({p['rule']}), margin {p['margin_points']:g} points."))
        if p.get("examples_needed_note"):
            blocks.append(Paragraph(f"Examples needed: {p['examples_needed_note']}."))
        lat, cost = p.get("latency", {}), p.get("cost", {})
        blocks.append(Table(("", ref, cand), (
            ("task score", pct(p["reference_score"]), pct(p["candidate_score"])),
            ("latency p50", _seconds(lat.get(ref), "p50_s"), _seconds(lat.get(cand), "p50_s")),
            ("latency p95", _seconds(lat.get(ref), "p95_s"), _seconds(lat.get(cand), "p95_s")),
            ("US$ per million tokens", _usd(cost.get(ref)), _usd(cost.get(cand))))))
        basis = [f"{n}: {c['basis']}" for n, c in cost.items() if c and c.get("basis")]
        if p.get("cost_ratio") is not None:
            basis.append(f"{cand} costs {pct(p['cost_ratio'])} of {ref}'s price per million tokens")
        if basis:
            blocks.append(Bullets(tuple(basis)))
        if p.get("changed"):
            blocks.append(Paragraph(f"{p['changed']} of {p['n']} answers differ between the two models (the first "
                                    f"{len(p['changed_examples'])} are in metrics.json parity.changed_examples)."))
        blocks += _parity_breakdown(p.get("fields", {}), "field", ref, cand)
        blocks += _parity_breakdown(p.get("labels", {}), "label", ref, cand)
    return [Section(f"Parity certificate: {cand} vs {ref}", 2, tuple(blocks))]


def _gates_section(gates: list[dict[str, Any]] | None) -> list[Section]:
    if not gates:
        return []
    rows = tuple((g["key"], f"{g['threshold']:g}", str(g["value"]), "pass" if g["passed"] else Strong("FAIL"))
                 for g in gates)
    return [Section("CI gates", 2, (Table(("metric", "≥", "value", "result"), rows),))]


def _examples(name: str, r: Any) -> ModelExamples:
    def test_example(e: dict[str, Any], note: str) -> Example:
        return Example(str(e["id"]), e.get("prompt"), e.get("reference"), e.get("prediction"), note,
                       error=e.get("error"), format_error=e.get("format_error"))

    adv_bad = tuple(Example(str(e["id"]), e.get("prompt"), e.get("expect"), e.get("prediction"),
                            f"adversarial {e['kind']}, expected {e['expect']}", "expected behaviour",
                            error=e.get("error"))
                    for e in r.adversarial_examples if e.get("passed") is False)

    def wrong_note(e: dict[str, Any]) -> str:
        made_up = [k for k, status in (e.get("values") or {}).items() if status in ("invented", "not_in_input")]
        return f"score {e.get('score')}" + (f"; invented: {', '.join(made_up)}" if made_up else "")

    return ModelExamples(name, tuple(test_example(e, wrong_note(e)) for e in r.examples if e.get("correct") is False),
                         tuple(test_example(e, "request failed") for e in r.examples if e.get("error")), adv_bad)


def _distributions(results: dict[str, Any]) -> tuple[Distribution, ...]:
    out = [Distribution("test split: per-example task score",
                        {n: tuple(s.score for s in r.scores.values()) for n, r in results.items()})]
    drift = {n: tuple(r.drift.values()) for n, r in results.items() if getattr(r, "drift", None)}
    if drift:
        out.append(Distribution("regression prompts: drift from base's answer", drift))
    return tuple(out)


def _meta(metrics: dict[str, Any]) -> Bullets:
    items: list[Text] = [(Strong(k), f": {metrics[k]}") for k in ("model", "method", "test_examples", "scorer")
                         if k in metrics]
    if "evaluation" in metrics:
        items.append((Strong("evaluation"), f": {metrics['evaluation']['id']} (",
                      Code(f"{metrics['evaluation']['folder']}/"), ")"))
    return Bullets(tuple(items))


def build_report(results: dict[str, Any], metrics: dict[str, Any], *, title: str, show_failures: int) -> Report:
    """The report of one evaluation. ``results``: model name -> ModelResult (evaluate/run.py), in display order."""
    models = list(results)
    task, other = _measures(models, metrics)
    headline = _headline(models, metrics, task, other)
    comparisons = _comparisons(metrics)
    details = _class_details(models, metrics)
    invented_flags = _invented_flags(models, metrics)
    sections = [*_task_section(headline, metrics, comparisons, invented_flags),
                *_tool_call_section(models, metrics), *_class_sections(models, metrics, details),
                *_values_section(models, metrics),
                *_adversarial_section(models, metrics.get("adversarial")),
                *_regression_section(models, metrics.get("regression")), *_parity_section(metrics.get("parity")),
                *_gates_section(metrics.get("gates"))]
    forgetting = tuple((n, tuple(r["flags"])) for n, r in metrics.get("regression", {}).items()
                       if isinstance(r, dict) and r.get("forgetting"))
    return Report(title=title, models=tuple(models), meta=_meta(metrics), measures=(*task, *other), headline=headline,
                  sections=tuple(sections), comparisons=comparisons, forgetting=forgetting,
                  invented_flags=invented_flags, class_details=tuple(details),
                  distributions=_distributions(results), examples=tuple(_examples(n, r) for n, r in results.items()),
                  show_failures=show_failures,
                  parity=parity_verdict(metrics["parity"]) if metrics.get("parity") else None)
