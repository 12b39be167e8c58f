"""Step time with and without the shared prefix (``train.shared_prefix``) on tool-calling-shaped rows.

Rows like the tool-use example's: every row opens with the same PREFIX tokens (the system prompt with the
tool definitions, no loss on it) and goes on with tokens of its own (loss from the third on): SUFFIX of them, or
with ``--suffix-min`` a length drawn evenly between the two (the tool-use example's run from ~25 to ~190). One
micro-batch of ROWS rows, one optimizer step (forward, backward, AdamW) of the embedded SmolLM2-135M with
LoRA (tunesmith's defaults: r 16 on q/k/v/o, dropout 0.05), fp32 on the CPU. Three ways: off (every row
whole), shared with each suffix a right-padded row, shared with the suffixes packed into rows (what SDPA models
get). After one short warm-up step, the ways alternate for ``--repeats`` steps each; the medians of wall time
and of process CPU time are printed with their ratios to off and packed against padded, and the losses of the
first step (the same batch and weights: they agree to float rounding).

Usage:
    OMP_NUM_THREADS=2 python benchmarks/shared_prefix.py                  # ~1 minute on 2 cores
    python benchmarks/shared_prefix.py --rows 8 --prefix 563 --suffix-min 25 --suffix 190 --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import time


def _batch(tokenizer, rows: int, prefix: int, suffix: int, suffix_min: int | None = None, seed: int = 0):
    import torch

    from tunesmith.train.batching import collate_padded
    from tunesmith.train.tokenize import IGNORE_INDEX, TokenizedExample

    g = torch.Generator().manual_seed(seed)
    shared = torch.randint(100, len(tokenizer) - 100, (prefix,), generator=g).tolist()
    examples = []
    for _ in range(rows):
        n = suffix if suffix_min is None else int(torch.randint(suffix_min, suffix + 1, (1,), generator=g))
        own = torch.randint(100, len(tokenizer) - 100, (n,), generator=g).tolist()
        examples.append(TokenizedExample(shared + own, [IGNORE_INDEX] * (prefix + 2) + own[2:]))
    return collate_padded(examples, tokenizer.pad_token_id)


WAYS = ("off", "padded", "packed")


def _step(model, optimizer, batch, way: str) -> tuple[float, float, float]:
    """One optimizer step the ``way`` given; returns (wall seconds, CPU seconds, loss per label token)."""
    import tunesmith.train.loss as loss_module

    loss_module.suffixes_packable = lambda base: way == "packed"  # padded: the path of flash/flex attention
    wall, cpu = time.perf_counter(), time.process_time()
    loss = loss_module.summed_token_loss(model, batch, shared_prefix=way != "off") / batch.n_label_tokens
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - wall, time.process_time() - cpu, float(loss.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--prefix", type=int, default=450, help="shared tokens per row")
    parser.add_argument("--suffix", type=int, default=190, help="own tokens per row (the most, with --suffix-min)")
    parser.add_argument("--suffix-min", type=int, default=None, help="the fewest own tokens of a row")
    parser.add_argument("--repeats", type=int, default=2, help="measured steps of each way")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from tunesmith.config import build_config
    from tunesmith.models.loading import load_tokenizer
    from tunesmith.train.loss import shared_prefix_split
    from tunesmith.train.methods import build_trainable_model

    cfg = build_config({"model": {"name_or_path": "embedded:smollm2-135m-instruct"}, "train": {"method": "lora"}})
    model, _ = build_trainable_model(cfg)
    model.train()
    tokenizer = load_tokenizer(cfg.model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)  # weights stay put
    batch = _batch(tokenizer, args.rows, args.prefix, args.suffix, args.suffix_min)
    split = shared_prefix_split(model, batch)
    assert split is not None, "the batch should qualify for the shared prefix"
    _step(model, optimizer, _batch(tokenizer, 2, 40, 8), "packed")  # warm-up: allocator, kernels
    times: dict[str, list[tuple[float, float, float]]] = {way: [] for way in WAYS}
    for _ in range(args.repeats):
        for way in WAYS:
            times[way].append(_step(model, optimizer, batch, way))
    wall, cpu = ({way: statistics.median(t[i] for t in times[way]) for way in WAYS} for i in range(2))
    own = "-".join(str(n) for n in sorted({args.suffix_min or args.suffix, args.suffix}))
    print(f"{args.rows} rows x ({args.prefix} shared + {own} own) tokens, prefix split at {split.prefix_length}, "
          f"packed into {split.input_ids.shape[0]} rows of {split.input_ids.shape[1]}, SmolLM2-135M + LoRA fp32, "
          f"{args.threads} threads, {args.repeats} steps each")
    for name, m in (("wall", wall), ("CPU", cpu)):
        print(f"step {name} s: off {m['off']:.2f}  padded {m['padded']:.2f}  packed {m['packed']:.2f}  ratio off/padded "
              f"{m['off'] / m['padded']:.2f}x  off/packed {m['off'] / m['packed']:.2f}x  padded/packed "
              f"{m['padded'] / m['packed']:.2f}x")
    print("first-step loss: " + "  ".join(f"{way} {times[way][0][2]:.6f}" for way in WAYS))

if __name__ == "__main__":
    main()
