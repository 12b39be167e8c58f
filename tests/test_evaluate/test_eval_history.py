"""Every evaluation of a run is kept in evaluations/<UTC start>/; the latest is also at the top of the run folder."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from tunesmith.evaluate.history import abandon_evaluation, finish_evaluation, list_evaluations, start_evaluation

NOON = datetime(2025, 6, 1, 12, 30, 5, tzinfo=UTC)


def _finish(ev, text: str):
    ev.generations.mkdir(parents=True, exist_ok=True)
    (ev.generations / "tuned.jsonl").write_text(json.dumps({"prediction": text}) + "\n")
    return finish_evaluation(ev, metrics={"tuned": {"accuracy": len(text)}, "evaluation": ev.describe()},
                             report_md=f"# {text}\n", report_html=f"<h1>{text}</h1>", config_yaml=f"name: {text}\n")


def test_evaluations_started_in_the_same_second_get_distinct_folders(tmp_path):
    a, b, c = (start_evaluation(tmp_path, now=NOON) for _ in range(3))
    assert [a.id, b.id, c.id] == ["2025-06-01T12-30-05Z", "2025-06-01T12-30-05Z-2", "2025-06-01T12-30-05Z-3"]
    for ev in (c, a, b):
        _finish(ev, ev.id)
    assert [p.name for p in list_evaluations(tmp_path)] == [a.id, b.id, c.id]
    # the top level is the evaluation finished last, whatever its name
    assert json.loads((tmp_path / "metrics.json").read_text())["evaluation"]["id"] == b.id
    assert (tmp_path / "eval" / "tuned.jsonl").read_text() == (b.folder / "eval" / "tuned.jsonl").read_text()


def test_results_from_before_evaluations_were_kept_are_moved_in_once(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"tuned": {"accuracy": 0.5}}))  # names no evaluation
    (tmp_path / "report.md").write_text("# old report\n")
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "old_model.jsonl").write_text("{}\n")
    saved = _finish(start_evaluation(tmp_path, now=NOON), "new")
    assert saved.earlier is not None and saved.earlier.parent == tmp_path / "evaluations"
    assert json.loads((saved.earlier / "metrics.json").read_text()) == {"tuned": {"accuracy": 0.5}}
    assert (saved.earlier / "report.md").read_text() == "# old report\n"
    assert (saved.earlier / "eval" / "old_model.jsonl").is_file()
    # the top level is now the new evaluation, and its generations only
    assert (tmp_path / "report.md").read_text() == "# new\n"
    assert [p.name for p in (tmp_path / "eval").iterdir()] == ["tuned.jsonl"]
    again = _finish(start_evaluation(tmp_path), "newer")
    assert again.earlier is None and len(list_evaluations(tmp_path)) == 3


def test_a_stopped_evaluation_leaves_its_generations_in_a_partial_folder(tmp_path):
    _finish(start_evaluation(tmp_path, now=NOON), "done")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    empty = start_evaluation(tmp_path)
    assert abandon_evaluation(empty) is None and not empty.partial.exists()
    stopped = start_evaluation(tmp_path)
    stopped.generations.mkdir()
    (stopped.generations / "base.jsonl").write_text("{}\n")
    assert abandon_evaluation(stopped) == stopped.partial and stopped.partial.name.endswith(".partial")
    # the finished evaluation and the top level are untouched; the partial one is not listed as finished
    assert all(p.read_bytes() == b for p, b in before.items())
    assert [p.name for p in list_evaluations(tmp_path)] == ["2025-06-01T12-30-05Z"]
