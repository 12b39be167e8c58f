"""Throughput of `tunesmith serve` with dynamic batching vs one request at a time.

8 concurrent clients (threads, official openai client) send chat requests over loopback to a server
on the embedded SmolLM2-135M-Instruct (or --model), alternating between the base model and a LoRA
adapter. The same requests (greedy, so the same work) are sent to a server with continuous batching
(max_batch_size 16) and to one that runs a single request at a time (max_batch_size 1).

    python benchmarks/serve_throughput.py                 # defaults: 8 clients x 4 requests, 32 tokens
    python benchmarks/serve_throughput.py --tiny          # seconds, on a random 2-layer model (smoke test)

Prints requests/s, p50/p95 latency for both servers and their ratio, and writes --json if given.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

QUESTIONS = [
    "My printer shows error E42 and will not print. What should I do?",
    "How do I reset my password if I no longer have access to my email?",
    "The invoice I received charges me twice for the same month.",
    "Can I change my delivery address after the order has shipped?",
    "The app crashes every time I open the settings page on Android.",
    "I was promised a refund two weeks ago and have not received it.",
    "How can I export all my data before closing my account?",
    "The headphones I bought stopped charging after three days.",
]


def make_adapter(base_dir: Path, out: Path, seed: int = 0) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    peft_model.save_pretrained(str(out))
    return out


def run_clients(url: str, key: str, clients: int, per_client: int, max_tokens: int) -> dict:
    import openai

    latencies: list[float] = []
    tokens: list[int] = []
    lock = threading.Lock()
    errors: list[str] = []

    def client(ci: int) -> None:
        c = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=600)
        for j in range(per_client):
            q = QUESTIONS[(ci + j) % len(QUESTIONS)]
            model = "support" if (ci + j) % 2 else "base"
            t0 = time.perf_counter()
            try:
                r = c.chat.completions.create(model=model, messages=[{"role": "user", "content": q}],
                                              max_tokens=max_tokens, temperature=0)
            except Exception as e:  # noqa: BLE001 - report, do not hide
                errors.append(repr(e))
                continue
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
                tokens.append(r.usage.completion_tokens)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    return {
        "requests": len(lat), "errors": len(errors), "wall_s": round(wall, 2),
        "requests_per_s": round(len(lat) / wall, 3), "tokens_per_s": round(sum(tokens) / wall, 1),
        "p50_s": round(statistics.median(lat), 3) if lat else None,
        "p95_s": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 3) if lat else None,
        "completion_tokens": sum(tokens),
    }


def bench(model_dir: Path, adapter: Path, max_batch_size: int, args) -> dict:
    from tunesmith.deploy.config import ServeConfig
    from tunesmith.deploy.server.auth import hash_key
    from tunesmith.deploy.server.runner import ServerThread, build_state
    from tunesmith.models.config import ModelConfig

    key = "tsk-bench"
    cfg = ServeConfig(adapters={"support": str(adapter)}, api_key_hashes=[hash_key(key)],
                      max_batch_size=max_batch_size, batch_wait_ms=args.batch_wait_ms,
                      max_concurrent_per_key=args.clients, request_timeout_s=3600)
    state = build_state(cfg, ModelConfig(name_or_path=str(model_dir), device="cpu"))
    with ServerThread(state) as server:
        run_clients(server.url, key, args.clients, 1, 4)  # warm-up
        return run_clients(server.url, key, args.clients, args.requests, args.max_tokens)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model folder (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--tiny", action="store_true", help="use a random 2-layer model (smoke test)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=4, help="requests per client")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from tunesmith.models.embedded import materialise

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.tiny:
            from transformers import AutoTokenizer

            from tunesmith.models.tiny import save_tiny_llama

            model_dir = save_tiny_llama(tmp / "tiny", AutoTokenizer.from_pretrained(materialise()))
        else:
            model_dir = Path(args.model) if args.model else materialise()
        adapter = make_adapter(model_dir, tmp / "adapter")
        results = {}
        for label, bs in (("one_at_a_time", 1), ("batched", 16)):
            results[label] = bench(model_dir, adapter, bs, args)
            print(f"{label:>14}: {json.dumps(results[label])}", flush=True)
    ratio = results["batched"]["requests_per_s"] / results["one_at_a_time"]["requests_per_s"]
    results["ratio_requests_per_s"] = round(ratio, 2)
    results["setup"] = {"model": "tiny" if args.tiny else str(args.model or "embedded:smollm2-135m-instruct"),
                        "clients": args.clients, "requests_per_client": args.requests,
                        "max_tokens": args.max_tokens, "torch_threads": torch.get_num_threads(),
                        "cpus": os.cpu_count()}
    print(f"batched / one-at-a-time requests/s: {ratio:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0 if not (results["batched"]["errors"] or results["one_at_a_time"]["errors"]) else 1


if __name__ == "__main__":
    sys.exit(main())
