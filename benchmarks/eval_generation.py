"""Generation benchmark: tunesmith's batched greedy generator vs one prompt at a time.

Same model, same prompts, greedy decoding on both sides; the outputs are asserted equal, then the
generated tokens per second of each are compared. Prompts are support-ticket classification
prompts (the example task), rendered with the model's chat template.

    OMP_NUM_THREADS=1 python benchmarks/eval_generation.py --prompts tickets|general --n 64 --batch-size 32

The model defaults to the embedded SmolLM2-135M-Instruct (offline). Results go to stdout and,
with --out, to a JSON file.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]


def ticket_conversations(n: int, seed: int = 3) -> list[list[dict]]:
    spec = importlib.util.spec_from_file_location("gen", ROOT / "examples" / "support-tickets" / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    rows = gen.generate(n, seed=seed)
    return [[{"role": "user", "content": f"{r['instruction']}\n\n{r['input']}"}] for r in rows[:n]]


def general_conversations(n: int) -> list[list[dict]]:
    """Short general prompts (chatterbot-corpus held-out files, else the adversarial off-topic questions)."""
    from tunesmith.evaluate.adversarial import OFF_TOPIC
    from tunesmith.evaluate.general import general_prompts

    rows, _ = general_prompts(None, None, n)
    texts = [r["messages"][0]["content"] for r in rows] or OFF_TOPIC
    return [[{"role": "user", "content": texts[i % len(texts)]}] for i in range(n)]


def one_at_a_time(model, tokenizer, prompts, max_new_tokens, eos):
    import torch

    outs = []
    t0 = time.perf_counter()
    with torch.no_grad():
        for k, p in enumerate(prompts):
            if k and k % 16 == 0:
                print(f"one at a time: {k}/{len(prompts)} in {time.perf_counter() - t0:.1f}s", flush=True)
            ids = torch.tensor([p])
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, temperature=None, top_p=None, top_k=None, eos_token_id=eos,
                                 pad_token_id=tokenizer.pad_token_id)
            new = out[0, len(p):].tolist()
            cut = next((k for k, t in enumerate(new) if t in eos), len(new))
            outs.append(tokenizer.decode(new[:cut], skip_special_tokens=True).strip())
    return outs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--prompts", choices=["tickets", "general"], default="tickets",
                    help="tickets: long classification prompts, short answers (prefill-heavy); "
                    "general: short chat prompts, longer answers (decode-heavy)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import torch

    from tunesmith.evaluate.generate import generate_greedy, render_prompts, stop_token_ids
    from tunesmith.models.config import ModelConfig
    from tunesmith.models.loading import load_model, load_tokenizer

    cfg = ModelConfig(name_or_path=args.model, device="cpu", dtype="float32")
    tokenizer = load_tokenizer(cfg)
    model = load_model(cfg).eval()
    convs = ticket_conversations(args.n) if args.prompts == "tickets" else general_conversations(args.n)
    prompts = render_prompts(tokenizer, convs)
    eos = stop_token_ids(tokenizer, model)

    def n_tokens(texts):
        return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)

    t0 = time.perf_counter()
    ours = generate_greedy(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    t_ours = time.perf_counter() - t0
    print(f"tunesmith batched: {len(prompts)} prompts in {t_ours:.1f}s", flush=True)
    t0 = time.perf_counter()
    ref = one_at_a_time(model, tokenizer, prompts, args.max_new_tokens, eos)
    t_ref = time.perf_counter() - t0

    mismatches = [i for i, (a, b) in enumerate(zip(ours, ref, strict=True)) if a != b]
    tokens = n_tokens(ref)
    result = {
        "model": args.model, "prompt_set": args.prompts, "prompts": len(prompts),
        "mean_prompt_tokens": round(sum(map(len, prompts)) / len(prompts), 1), "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size, "torch_threads": torch.get_num_threads(), "generated_tokens": tokens,
        "tunesmith_seconds": round(t_ours, 2), "one_at_a_time_seconds": round(t_ref, 2),
        "tunesmith_tokens_per_s": round(tokens / t_ours, 1), "one_at_a_time_tokens_per_s": round(tokens / t_ref, 1),
        "speedup": round(t_ref / t_ours, 2), "outputs_equal": not mismatches, "mismatches": len(mismatches),
    }
    print(json.dumps(result, indent=2))
    for i in mismatches[:3]:
        print(f"MISMATCH {i}:\n  batched: {ours[i]!r}\n  single:  {ref[i]!r}", file=sys.stderr)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    assert not mismatches, f"{len(mismatches)} of {len(prompts)} greedy outputs differ"
    return 0


if __name__ == "__main__":
    sys.exit(main())
