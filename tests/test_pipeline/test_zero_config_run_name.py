"""`tunesmith run --data FILE` names its run folder after the data: two tasks whose files are both
called train.jsonl must not share (and overwrite) one run folder."""

from pathlib import Path

from tunesmith.pipeline import _run_name


def test_distinct_task_names_are_kept_as_they_are(tmp_path: Path):
    assert _run_name(tmp_path / "emails.jsonl") == "emails"
    assert _run_name(tmp_path / "my tickets (v2).jsonl") == "my-tickets-v2"


def test_generic_file_names_take_the_nearest_meaningful_folder(tmp_path: Path):
    a = _run_name(tmp_path / "examples" / "order-emails" / "data" / "train.jsonl")
    b = _run_name(tmp_path / "examples" / "routing-codes" / "data" / "train.jsonl")
    assert a == "order-emails-train"
    assert b == "routing-codes-train"
    assert _run_name(tmp_path / "case-notes" / "dataset.jsonl") == "case-notes-dataset"


def test_a_generic_name_with_no_meaningful_folder_stays_as_it_is():
    assert _run_name(Path("/data/train.jsonl")) == "train"
