"""The few-shot baseline: the base model shown k solved train examples before each test prompt.

The seed says to max out prompt engineering before fine-tuning; this column shows whether the
fine-tune beat it. Shots are chosen once per run (seeded), cycling through the train labels so
that k >= number of labels shows each label at least once; each shot is a user/assistant pair
placed after the system prompt of the test conversation. For tool calling, a shot keeps its calls and
tool results, and the prompt declares the test's functions and the shots' (:func:`few_shot_tools`).
"""

from __future__ import annotations

import random

from tunesmith.data.records import Record, prompt_messages, reference_answer


def pick_shots(train: list[Record], k: int, seed: int) -> list[Record]:
    """k train records of the task, deterministic for a seed, spread over labels when records have them.
    General data mixed in against forgetting (``source: general``) is never a shot."""
    train = [r for r in train if r.get("source") != "general"]
    if not train:
        return []
    rng = random.Random(seed)
    by_label: dict[str, list[Record]] = {}
    for r in train:
        by_label.setdefault(str(r.get("label")), []).append(r)
    groups = [by_label[k_] for k_ in sorted(by_label)]
    for g in groups:
        rng.shuffle(g)
    rng.shuffle(groups)
    shots: list[Record] = []
    i = 0
    while len(shots) < min(k, len(train)):
        g = groups[i % len(groups)]
        j = i // len(groups)
        if j < len(g):
            shots.append(g[j])
        i += 1
        if i > k * len(groups) + len(train):
            break
    return shots


def few_shot_conversation(prompt: list[dict], shots: list[Record]) -> list[dict]:
    """``prompt`` (system?, user...) with each shot's turns and answer inserted after the system prompt.

    A shot that calls tools keeps its calls (``tool_calls``) and tool results, so the chat template renders
    them as it renders the test conversation (natively or in the fallback format)."""
    head = [m for m in prompt[:1] if m["role"] == "system"]
    rest = prompt[len(head):]
    demo: list[dict] = []
    for s in shots:
        demo += [m for m in prompt_messages(s) if m["role"] != "system"]
        last = next(m for m in reversed(s["messages"]) if m["role"] == "assistant")
        if last.get("tool_calls"):
            demo.append({"role": "assistant", "content": last["content"], "tool_calls": last["tool_calls"]})
        else:
            demo.append({"role": "assistant", "content": reference_answer(s)})
    return head + demo + rest


def few_shot_tools(tools: list[dict] | None, shots: list[Record]) -> list[dict] | None:
    """The test conversation's declared functions plus those the shots declare that it lacks (by name), so
    every call a shot shows is of a declared function; None when there are none."""
    out = list(tools or [])
    names = {_name(t) for t in out}
    for s in shots:
        for t in s.get("tools") or ():
            if _name(t) not in names:
                names.add(_name(t))
                out.append(t)
    return out or None


def _name(tool: dict) -> str | None:
    fn = tool.get("function", tool)
    return fn.get("name") if isinstance(fn, dict) else None
