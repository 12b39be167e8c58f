"""Step time with and without the shared prefix (``train.shared_prefix``) on tool-calling-shaped rows.

Rows like the tool-use example's: every row opens with the same PREFIX tokens (the system prompt with the
tool definitions, no loss on it) and goes on with SUFFIX tokens of its own (loss from the third on). One
micro-batch of ROWS rows, one optimizer step (forward, backward, AdamW) of the embedded SmolLM2-135M with
LoRA (tunesmith's defaults: r 16 on q/k/v/o, dropout 0.05), fp32 on the CPU. After one short warm-up step,
the two ways alternate (off, shared, off, shared, ...) for ``--repeats`` steps each; the medians of wall
time and of process CPU time are printed with their ratio off / shared, and the two losses of the first
step (the same batch and weights: they agree to float rounding).

Usage:
    OMP_NUM_THREADS=2 python benchmarks/shared_prefix.py                  # ~1 minute on 2 cores
    python benchmarks/shared_prefix.py --rows 4 --prefix 450 --suffix 190 --repeats 2 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time


def _batch(tokenizer, rows: int, prefix: int, suffix: int, seed: int = 0):
    import torch

    from tunesmith.train.batching import collate_padded
    from tunesmith.train.tokenize import IGNORE_INDEX, TokenizedExample

    g = torch.Generator().manual_seed(seed)
    shared = torch.randint(100, len(tokenizer) - 100, (prefix,), generator=g).tolist()
    examples = []
    for _ in range(rows):
        own = torch.randint(100, len(tokenizer) - 100, (suffix,), generator=g).tolist()
        examples.append(TokenizedExample(shared + own, [IGNORE_INDEX] * (prefix + 2) + own[2:]))
    return collate_padded(examples, tokenizer.pad_token_id)


def _step(model, optimizer, batch, shared_prefix: bool) -> tuple[float, float, float]:
    """One optimizer step; returns (wall seconds, CPU seconds, loss per label token)."""
    from tunesmith.train.loss import summed_token_loss

    wall, cpu = time.perf_counter(), time.process_time()
    loss = summed_token_loss(model, batch, shared_prefix=shared_prefix) / batch.n_label_tokens
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - wall, time.process_time() - cpu, float(loss.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--prefix", type=int, default=450, help="shared tokens per row")
    parser.add_argument("--suffix", type=int, default=190, help="own tokens per row")
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
    batch = _batch(tokenizer, args.rows, args.prefix, args.suffix)
    split = shared_prefix_split(model, batch)
    assert split is not None, "the batch should qualify for the shared prefix"
    _step(model, optimizer, _batch(tokenizer, 2, 40, 8), True)  # warm-up: allocator, kernels
    times: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
    for _ in range(args.repeats):
        for shared in (False, True):
            times[shared].append(_step(model, optimizer, batch, shared))
    off, on = ([statistics.median(t[i] for t in times[s]) for i in range(2)] for s in (False, True))
    print(f"{args.rows} rows x ({args.prefix} shared + {args.suffix} own) tokens, prefix split at "
          f"{split.prefix_length}, SmolLM2-135M + LoRA fp32, {args.threads} threads, {args.repeats} steps each")
    print(f"step wall s: off {off[0]:.2f}  shared {on[0]:.2f}  ratio off/shared {off[0] / on[0]:.2f}x")
    print(f"step CPU s:  off {off[1]:.2f}  shared {on[1]:.2f}  ratio off/shared {off[1] / on[1]:.2f}x")
    print(f"first-step loss: off {times[False][0][2]:.6f}  shared {times[True][0][2]:.6f}")


if __name__ == "__main__":
    main()
