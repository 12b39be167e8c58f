"""Parity for what ships: the run's adapter model (the reference, as `tunesmith eval` scored it as ``tuned``)
against an artifact made from it, on the run's test split: `export merge --verify`, `export gguf --verify`,
`export verify --endpoint URL` (a running `tunesmith serve`).

Both answer the same prompts greedily; both are scored by the evaluation's task scorer; the parity certificate
(parity.py) gives the verdict at the margin, and the agreement says how many answers the artifact changed, with
the first of them listed. The result is written to ``<run>/verify/<artifact>.json``. The artifacts answer as a
user would get them: the merged folder with its own saved tokenizer and chat template, the GGUF file through
llama-cpp-python (its own template from the GGUF metadata), the server through the official openai client.
Where llama-cpp-python is not installed, the GGUF file is read back by transformers (``gguf_file=``: its
tensors dequantised, its tokenizer and chat template from the file's metadata) and answers through the same
generation code as the adapter: that checks what the file holds, not llama.cpp's runtime, and the result
says which (``runtime``). Conversations that declare functions are sent with them (``tools``) on every side.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.config import RunConfig
from tunesmith.console import console
from tunesmith.data.prepared import PreparedData
from tunesmith.data.records import prompt_messages, reference_answer
from tunesmith.errors import TunesmithError
from tunesmith.evaluate.endpoint import Answer
from tunesmith.evaluate.parity import Side, certificate
from tunesmith.evaluate.task_scoring import ExampleScore, task_scorer_from_config, user_text
from tunesmith.utils.io import write_json

REFERENCE = "adapter"
DEFAULT_MARGIN_POINTS = 2.0


@dataclass(frozen=True)
class Artifact:
    """What is verified: ``kind`` merged (a model folder), gguf (a file) or endpoint (an OpenAI-compatible URL)."""

    kind: str
    location: str
    served_model: str | None = None  # endpoint: the model name to request
    api_key: str | None = None  # endpoint: the key to send

    @property
    def name(self) -> str:
        return {"merged": "merged", "gguf": "gguf", "endpoint": "serve"}[self.kind]


Tools = list[list[dict] | None] | None


def _conversations(cfg: RunConfig, prepared: PreparedData) -> tuple[list[dict], list[list[dict]]]:
    records = list(prepared.test)
    if cfg.eval.max_examples:
        records = records[: cfg.eval.max_examples]
    if not records:
        raise TunesmithError("the run's test split is empty: nothing to verify with",
                             hint="set data.test_fraction above 0 (or data.test_file) and prepare again")
    return records, [prompt_messages(r) for r in records]


def _tools(records: list[dict]) -> Tools:
    """Each conversation's declared functions (``tools``), or None when no conversation declares any."""
    tools = [r.get("tools") for r in records]
    return tools if any(tools) else None


def _adapter_answers(cfg: RunConfig, convs: list[list[dict]], tools: Tools) -> list[Answer]:
    """The reference: the base with the run's adapter through plain PEFT, greedy (eval's ``tuned``)."""
    from tunesmith.evaluate.run import load_tuned, local_generate
    from tunesmith.models.loading import load_model, load_tokenizer

    model = load_tuned(cfg, load_model(cfg.model))
    gen = local_generate(model, load_tokenizer(cfg.model), cfg.eval.batch_size)
    return gen(convs, cfg.eval.max_new_tokens, f"{REFERENCE}: test split", tools)


def _merged_answers(cfg: RunConfig, folder: Path, convs: list[list[dict]], tools: Tools) -> list[Answer]:
    """The merged folder as a user loads it: its weights, its saved tokenizer and chat template."""
    from tunesmith.evaluate.run import load_model_folder, local_generate
    from tunesmith.models.config import ModelConfig
    from tunesmith.models.loading import load_tokenizer

    model = load_model_folder(cfg, folder)
    gen = local_generate(model, load_tokenizer(ModelConfig(name_or_path=str(folder))), cfg.eval.batch_size)
    return gen(convs, cfg.eval.max_new_tokens, "merged: test split", tools)


LLAMA_CPP = "llama.cpp (llama-cpp-python)"
TRANSFORMERS_GGUF = ("transformers (gguf_file=): the file's tensors, tokenizer and chat template; "
                     "llama.cpp's runtime not checked (pip install llama-cpp-python to check it)")


def gguf_runtime() -> str:
    """What answers for the GGUF file: llama.cpp where llama-cpp-python is installed, else transformers."""
    return LLAMA_CPP if importlib.util.find_spec("llama_cpp") is not None else TRANSFORMERS_GGUF


def _gguf_answers(cfg: RunConfig, path: Path, convs: list[list[dict]], tools: Tools) -> list[Answer]:
    if gguf_runtime() == LLAMA_CPP:
        return _llama_cpp_answers(path, convs, cfg.eval.max_new_tokens, tools)
    return _transformers_gguf_answers(cfg, path, convs, tools)


def _transformers_gguf_answers(cfg: RunConfig, path: Path, convs: list[list[dict]], tools: Tools) -> list[Answer]:
    """The GGUF file read back by transformers: dequantised weights, the tokenizer and template from the file."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.evaluate.run import local_generate
    from tunesmith.utils.quiet import model_loading_noise_silenced

    with model_loading_noise_silenced():
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    gen = local_generate(model.eval(), tokenizer, cfg.eval.batch_size)
    return gen(convs, cfg.eval.max_new_tokens, "gguf: test split", tools)


def _llama_cpp_answers(path: Path, convs: list[list[dict]], max_new_tokens: int, tools: Tools) -> list[Answer]:
    """The GGUF file through llama.cpp (its chat template from the file's metadata), greedy."""
    import llama_cpp

    from tunesmith.evaluate.endpoint import response_text

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=4096, seed=0, verbose=False)
    out = []
    for i, conv in enumerate(convs):
        t0 = time.perf_counter()
        extra = {"tools": tools[i]} if tools and tools[i] else {}
        r = llm.create_chat_completion(messages=conv, temperature=0.0, top_k=1, max_tokens=max_new_tokens, **extra)
        usage = r.get("usage") or {}
        out.append(Answer(response_text(r["choices"][0]["message"]).strip(), latency_s=time.perf_counter() - t0,
                          prompt_tokens=usage.get("prompt_tokens"), completion_tokens=usage.get("completion_tokens")))
    return out


def _endpoint_answers(artifact: Artifact, convs: list[list[dict]], max_new_tokens: int, tools: Tools) -> list[Answer]:
    """The same prompts through HTTP with the official openai client, one at a time, temperature 0; calls the
    server makes (``message.tool_calls``) are written as ``<tool_call>`` blocks, as eval scores an endpoint's."""
    try:
        import openai
    except ImportError:
        raise TunesmithError("verifying a served endpoint needs the official openai client",
                             hint="pip install openai") from None
    client = openai.OpenAI(base_url=artifact.location, api_key=artifact.api_key or "none", max_retries=2, timeout=120)
    from tunesmith.evaluate.endpoint import response_text

    out = []
    for i, conv in enumerate(convs):
        t0 = time.perf_counter()
        extra = {"tools": tools[i]} if tools and tools[i] else {}
        try:
            r = client.chat.completions.create(model=artifact.served_model, messages=conv, temperature=0,
                                               max_tokens=max_new_tokens, **extra)
        except openai.APIConnectionError as e:
            raise TunesmithError(f"cannot reach {artifact.location}: {e}",
                                 hint="start it with `tunesmith serve CONFIG` and pass its /v1 URL") from None
        except openai.APIStatusError as e:
            if e.status_code in (401, 403, 404):  # the key or the model name: every request would fail alike
                raise TunesmithError(f"{artifact.location} refused the request (HTTP {e.status_code}): {e.message}",
                                     hint="check --api-key-env and --served-model (GET /v1/models lists the "
                                          "served names)") from None
            out.append(Answer(None, f"HTTP {e.status_code}: {e.message}"))
            continue
        usage = r.usage
        message = r.choices[0].message.model_dump(exclude_none=True)
        out.append(Answer(response_text(message).strip(), latency_s=time.perf_counter() - t0,
                          prompt_tokens=usage.prompt_tokens if usage else None,
                          completion_tokens=usage.completion_tokens if usage else None))
    return out


def _side(name: str, records: list[dict], convs: list[list[dict]], answers: list[Answer], scorer,
          tools: Tools) -> Side:
    scores: dict[str, ExampleScore] = {}
    texts: dict[str, str] = {}
    for i, (r, conv, a) in enumerate(zip(records, convs, answers, strict=True)):
        if a.error is not None:
            continue
        rid = str(r.get("id", i))
        scores[rid] = scorer(a.text or "", reference_answer(r), source=user_text(conv),
                             tools=tools[i] if tools else None)
        texts[rid] = a.text or ""
    return Side(name, scores, texts, tuple(a.latency_s for a in answers if a.latency_s is not None))


def verify_artifact(cfg: RunConfig, prepared: PreparedData, artifact: Artifact, *,
                    margin_points: float | None = None) -> dict[str, Any]:
    """The artifact's parity certificate against the adapter; written to ``<run>/verify/<artifact>.json``.

    ``margin_points``: default eval.parity.margin_points, else 2. A GGUF file answers through llama.cpp, or
    through transformers' GGUF reader where llama-cpp-python is not installed (``runtime`` says which)."""
    out_file = cfg.run_dir / "verify" / f"{artifact.name}.json"
    base = {"artifact": artifact.kind, "location": artifact.location, "reference": f"{REFERENCE} "
            f"({cfg.run_dir / 'adapter'} on {cfg.model.name_or_path})"}
    if artifact.kind == "gguf":
        base["runtime"] = gguf_runtime()
    pc = cfg.eval.parity
    margin = margin_points if margin_points is not None else pc.margin_points if pc else DEFAULT_MARGIN_POINTS
    records, convs = _conversations(cfg, prepared)
    tools = _tools(records)
    scorer = task_scorer_from_config(cfg.eval, Path(cfg.base_dir))
    # the artifact first: a server that refuses every request fails before any model loads here
    if artifact.kind == "merged":
        answers = _merged_answers(cfg, Path(artifact.location), convs, tools)
    elif artifact.kind == "gguf":
        answers = _gguf_answers(cfg, Path(artifact.location), convs, tools)
    else:
        console.print(f"{artifact.name}: test split through {artifact.location} ({len(convs)} requests)")
        answers = _endpoint_answers(artifact, convs, cfg.eval.max_new_tokens, tools)
    reference = _adapter_answers(cfg, convs, tools)
    cert = certificate(_side(REFERENCE, records, convs, reference, scorer, tools),
                       _side(artifact.name, records, convs, answers, scorer, tools), kind=scorer.kind, margin_points=margin,
                       confidence=pc.confidence if pc else 0.95, power=pc.power if pc else 0.8,
                       n_resamples=cfg.eval.bootstrap_samples, seed=cfg.seed)
    failed = [{"id": str(r.get("id", i)), "error": a.error} for i, (r, a) in enumerate(zip(records, answers,
                                                                                           strict=True)) if a.error]
    result = {**base, **cert, "failed_requests": failed[:20], "n_failed": len(failed)}
    result.pop("cost", None)  # the same hardware on both sides: the cost comparison belongs to `tunesmith eval`
    write_json(out_file, result)
    return result


def print_verification(result: dict[str, Any], where: Path) -> None:
    """The verdict in one line, how many answers changed, failed requests, where the result is."""
    from rich.markup import escape

    from tunesmith.evaluate.report_content import parity_verdict, plain

    console.print("verify " + escape(plain(parity_verdict(result))), soft_wrap=True)
    if result.get("runtime"):
        console.print(f"  the GGUF file answered through {escape(result['runtime'])}", soft_wrap=True)
    if result.get("changed"):
        console.print(f"[yellow]{result['changed']} of {result['n']} answers differ from the adapter's[/] "
                      f"(the first are listed in {escape(str(where))})", soft_wrap=True)
    if result.get("n_failed"):
        console.print(f"[yellow]{result['n_failed']} requests failed (not scored)[/]")
    console.print(f"written: {escape(str(where))}", soft_wrap=True)
