"""`tunesmith data capture`: a model's answers over HTTP become a training file; the journal makes a killed run resume
without asking twice; 429 bursts are retried; answers failing the format check are quarantined; tool calls are kept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tunesmith.data.capture import CaptureOptions, capture, capture_paths
from tunesmith.data.config import DataConfig
from tunesmith.data.prepare import prepare_data
from tunesmith.utils.openai_http import InFlightLimit

from support.data_files import write_lines
from support.fake_openai import FakeOpenAI

SRC = Path(__file__).resolve().parents[2] / "src"


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _chat(q: str, a: str, **extra) -> dict:
    return {"messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": q},
                         {"role": "assistant", "content": a}], **extra}


def test_capture_from_tunesmith_serve_writes_the_answers_and_a_rerun_asks_nothing(tmp_path, tiny_model_dir, monkeypatch):
    from support.adapters import make_adapter
    from tunesmith.deploy.config import ServeConfig
    from tunesmith.deploy.server.auth import hash_key
    from tunesmith.deploy.server.runner import ServerThread, build_state
    from tunesmith.models.config import ModelConfig

    src = write_lines(tmp_path / "src.jsonl", [_chat(f"Summarise ticket {i}: the printer jams.", "Printer jam.") for i in range(3)])
    out = tmp_path / "captured" / "train.jsonl"
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", seed=1, scale=2.0)  # the random base only writes newlines
    state = build_state(ServeConfig(api_key_hashes=[hash_key("tsk-capture")], max_total_tokens=256, adapters={"ft": str(adapter)}),
                        ModelConfig(name_or_path=str(tiny_model_dir), device="cpu"))
    with ServerThread(state) as server:
        opts = CaptureOptions(base_url=server.url + "/v1", model="ft", api_key="tsk-capture", max_tokens=4, concurrency=2,
                              check_answer_format=False)
        first = capture(src, out, opts)
        direct = []
        for i in range(3):  # what the server answers to the same request, asked directly
            body = {"model": "ft", "temperature": 0, "max_tokens": 4, "messages": _chat(f"Summarise ticket {i}: the printer jams.", "")["messages"][:2]}
            req = urllib.request.Request(server.url + "/v1/chat/completions", data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json", "Authorization": "Bearer tsk-capture"})
            with urllib.request.urlopen(req) as r:
                direct.append(json.loads(r.read())["choices"][0]["message"]["content"])
    assert first.written == 3 and first.tally.sent == 3 and first.tally.cached == 0
    rows = _lines(out)
    assert [r["messages"][:2] for r in rows] == [_chat(f"Summarise ticket {i}: the printer jams.", "")["messages"][:2] for i in range(3)]
    assert [r["messages"][-1] for r in rows] == [{"role": "assistant", "content": d} for d in direct]
    # the server is gone: a re-run is answered entirely from the journal
    again = capture(src, out, opts)
    assert (again.tally.sent, again.tally.cached, again.tally.failed, again.written) == (0, 3, 0, 3)
    assert _lines(out) == rows


def test_a_capture_killed_mid_run_resumes_without_asking_any_prompt_twice(tmp_path):
    prompts = [f"question number {i}" for i in range(8)]
    src = tmp_path / "prompts.txt"
    src.write_text("\n".join(prompts) + "\n")
    out = tmp_path / "train.jsonl"
    journal, _ = capture_paths(out)
    with FakeOpenAI(answers={p: f"answer {i}" for i, p in enumerate(prompts)}, hold_after=3) as fake:
        cmd = [sys.executable, "-m", "tunesmith.cli", "data", "capture", str(src), "--output", str(out), "--base-url", fake.base_url,
               "--model", "echo", "--api-key-env", "", "--concurrency", "2", "--no-format-check", "--timeout", "120"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while not (journal.is_file() and journal.read_text().count("\n") >= 3):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode() if proc.poll() is not None else "timeout"
            time.sleep(0.05)
        while len(fake.requests) < 5 and time.monotonic() < deadline:  # two more in flight, held by the server
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not out.exists()  # killed before it could write the training file
        fake.hold_after = None
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
    assert "5 requests paid now, 3 from the journal" in done.stdout
    assert fake.answered == {p: 1 for p in prompts}  # every prompt answered exactly once over both runs
    assert [r["messages"] for r in _lines(out)] == [[{"role": "user", "content": p}, {"role": "assistant", "content": f"answer {i}"}]
                                                     for i, p in enumerate(prompts)]


def test_a_429_burst_is_retried(tmp_path):
    src = tmp_path / "p.txt"
    src.write_text("".join(f"ask {i}\n" for i in range(5)))
    with FakeOpenAI(answers={f"ask {i}": f"reply {i}" for i in range(5)}) as fake:
        res = capture(src, tmp_path / "o.jsonl", CaptureOptions(base_url=fake.base_url, model="flaky", backoff_s=0.01,
                                                                check_answer_format=False, price_input=2.0, price_output=8.0))
    assert res.written == 5 and res.tally.failed == 0
    assert len(fake.requests) == 10  # each prompt: one 429, then the answer
    assert res.tally.prompt_tokens == 10 and res.tally.completion_tokens == 10
    assert res.tally.cost(CaptureOptions(base_url="", model="", price_input=2.0, price_output=8.0)) == pytest.approx(1e-4)


def test_the_in_flight_limit_halves_on_a_429_and_creeps_back_up_to_what_was_asked():
    limit = InFlightLimit(8)
    limit.record(True)
    assert limit.limit == 4
    for _ in range(3):
        limit.record(True)
    assert limit.limit == limit.lowest == 1  # never below one
    limit.record(False)
    assert limit.limit == 2  # one clean answer at 1 in flight: one more
    limit.record(False)
    assert limit.limit == 2  # at 2 in flight it takes two clean answers
    limit.record(False)
    assert limit.limit == 3
    for _ in range(100):
        limit.record(False)
    assert limit.limit == 8 and limit.lowest == 1  # never above what was asked


def test_a_server_allowing_fewer_requests_in_flight_than_asked_slows_the_capture_and_loses_nothing(tmp_path):
    """The provider allows 2 requests per key at once; the capture asks 8, with 4 retries each. The in-flight limit
    falls on the 429s and gates the retries too, so every prompt is answered. (Asking 8 at once all along, measured:
    ~60 429s and 9 of 40 prompts failed after their retries.) The fake frees a slot only after its answer is sent, so
    a client that hears back at once can still meet a full server: the backoff gives it that moment (at 0.05 s,
    one prompt of 40 ran out of retries on a loaded CPU)."""
    src = tmp_path / "p.txt"
    n = 40
    src.write_text("".join(f"ask {i}\n" for i in range(n)))
    with FakeOpenAI(answers={f"ask {i}": f"reply {i}" for i in range(n)}, max_in_flight=2, answer_delay_s=0.1) as fake:
        res = capture(src, tmp_path / "o.jsonl", CaptureOptions(base_url=fake.base_url, model="echo", concurrency=8,
                                                                max_retries=4, backoff_s=0.25, check_answer_format=False))
    assert res.written == n and res.tally.failed == 0
    assert res.tally.throttled == fake.throttled > 0
    assert res.tally.lowest_concurrency is not None and res.tally.lowest_concurrency <= 2
    assert fake.throttled < n / 2


def test_answers_failing_the_format_check_are_quarantined_with_reasons(tmp_path):
    src = write_lines(tmp_path / "src.jsonl", [_chat(f"order {i}", json.dumps({"id": i, "status": "shipped"})) for i in range(4)])
    answers = {"order 0": '{"id": 0, "status": "shipped"}', "order 1": "It shipped yesterday, I think.",
               "order 2": '{"id": 2}', "order 3": '{"id": 3, "status": "lost"}'}
    schema = {"type": "object", "required": ["id", "status"], "properties": {"status": {"enum": ["shipped", "pending"]}}}
    out = tmp_path / "o.jsonl"
    with FakeOpenAI(answers=answers) as fake:
        res = capture(src, out, CaptureOptions(base_url=fake.base_url, model="echo", json_schema=schema))
    assert [r["messages"][-1]["content"] for r in _lines(out)] == [answers["order 0"]]
    rejected = {r["id"]: r for r in _lines(capture_paths(out)[1])}
    assert set(rejected) == {"src.jsonl:2", "src.jsonl:3", "src.jsonl:4"} and res.rejected == 3
    assert "not JSON" in rejected["src.jsonl:2"]["reason"]
    assert "'status' is a required property" in rejected["src.jsonl:3"]["reason"]
    assert "status" in rejected["src.jsonl:4"]["reason"] and rejected["src.jsonl:4"]["answer"]["content"] == answers["order 3"]
    # without a schema, the source data's answer class (json) is the check
    with FakeOpenAI(answers=answers) as fake:
        capture(src, tmp_path / "p.jsonl", CaptureOptions(base_url=fake.base_url, model="echo"))
    (prose,) = [r for r in _lines(capture_paths(tmp_path / "p.jsonl")[1])]
    assert prose["id"] == "src.jsonl:2" and "answer format is prose, the source data's answers are json" in prose["reason"]


def test_tools_are_sent_and_tool_calls_captured_as_such(tmp_path):
    tools = [{"type": "function", "function": {"name": "lookup", "description": "Find an order",
                                               "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]
    src = write_lines(tmp_path / "src.jsonl", [_chat(f"where is order {i}?", "Let me check.", tools=tools) for i in range(2)])
    out = tmp_path / "o.jsonl"
    with FakeOpenAI() as fake:
        res = capture(src, out, CaptureOptions(base_url=fake.base_url, model="tooler"))
    assert res.written == 2 and all(r["tools"] == tools for r in fake.requests)
    rows = _lines(out)
    call = rows[0]["messages"][-1]["tool_calls"][0]
    assert call["function"] == {"name": "lookup", "arguments": json.dumps({"q": "where is order 0?"})}
    assert rows[0]["tools"] == tools
    data = prepare_data(DataConfig(train_file=str(out), validation_fraction=0, test_fraction=0, report=False), None, None, seed=0,
                        base_dir=tmp_path)
    assert len(data.train) == 2 and data.stats["rejected"] == 0  # the data stage reads the captured calls


def test_prompts_come_from_any_supported_format_and_rows_without_one_are_quarantined(tmp_path):
    src = write_lines(tmp_path / "src.jsonl", [
        {"instruction": "Translate", "input": "chat", "output": "cat"},
        {"text": "raw text for domain adaptation"},
        {"input": {"messages": [{"role": "user", "content": "x"}]}, "preferred_output": [], "non_preferred_output": []},
        {"messages": [{"role": "user", "content": "an open question"}]},
        "{broken",
    ])
    out = tmp_path / "o.jsonl"
    with FakeOpenAI(answers={"Translate\n\nchat": "cat", "an open question": "an answer"}) as fake:
        capture(src, out, CaptureOptions(base_url=fake.base_url, model="echo", check_answer_format=False))
    assert [r["messages"][-1]["content"] for r in _lines(out)] == ["cat", "an answer"]
    assert [r["messages"][:-1] for r in _lines(out)][1] == [{"role": "user", "content": "an open question"}]
    kinds = {r["line"]: r["kind"] for r in _lines(capture_paths(out)[1])}
    assert kinds == {2: "no_prompt", 3: "preference_pair", 5: "malformed_json"}
