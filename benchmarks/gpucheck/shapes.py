"""What runs: the models' shapes (from their config.json files), one workload per model, time estimates."""

from __future__ import annotations

from dataclasses import dataclass


LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}


SHAPES = {
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True,
                         max_position_embeddings=131072, rms_norm_eps=1e-5,
                         rope_parameters={**LLAMA3_ROPE, "factor": 32.0}),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False,
                         max_position_embeddings=131072, rms_norm_eps=1e-5,
                         rope_parameters={**LLAMA3_ROPE, "factor": 8.0}),
}


# --cpu-dry-run: the same two models in miniature (tied / untied LM head, vocab larger than the tokenizer's)
TINY_ROPE = {**LLAMA3_ROPE, "original_max_position_embeddings": 1024}


TINY_SHAPES = {
    "llama-3.2-1b": dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=4608, tie_word_embeddings=True,
                         max_position_embeddings=4096, rms_norm_eps=1e-5,
                         rope_parameters={**TINY_ROPE, "factor": 32.0}),
    "llama-3.1-8b": dict(hidden_size=96, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=4608, tie_word_embeddings=False,
                         max_position_embeddings=4096, rms_norm_eps=1e-5,
                         rope_parameters={**TINY_ROPE, "factor": 8.0}),
}


METHODS = ("lora", "qlora", "dora", "full")


@dataclass(frozen=True)
class Workload:
    """One training configuration per model: rows of ``seq_len`` tokens, ``warmup`` untimed + ``steps`` timed."""

    batch_size: int
    grad_accum: int
    seq_len: int
    warmup: int = 2
    steps: int = 6
    lr_adapter: float = 1e-3
    lr_full: float = 1e-4

    @property
    def total_steps(self) -> int:
        return self.warmup + self.steps

    @property
    def rows(self) -> int:
        return self.total_steps * self.batch_size * self.grad_accum

    def lr(self, method: str) -> float:
        return self.lr_full if method == "full" else self.lr_adapter


WORKLOADS = {"llama-3.2-1b": Workload(batch_size=8, grad_accum=2, seq_len=2048),
             "llama-3.1-8b": Workload(batch_size=4, grad_accum=1, seq_len=2048)}


TINY_WORKLOADS = {"llama-3.2-1b": Workload(batch_size=2, grad_accum=2, seq_len=128, warmup=1, steps=3),
                  "llama-3.1-8b": Workload(batch_size=2, grad_accum=1, seq_len=128, warmup=1, steps=3)}


# Seconds to reserve per section on the H200 for the time guard (0 on the CPU dry run): from the work of each
# section (8 steps of 32k tokens for 1B, 8k for 8B at ~40% MFU; loading 2.5 / 16 GB; TRL's dataset preparation)
# with a margin of about 1.5x; never measured on the device yet, so the first run's section times should replace them.
EST_S = {"model llama-3.2-1b": 15, "model llama-3.1-8b": 45,
         "train llama-3.2-1b": 20, "train llama-3.2-1b full": 35, "train llama-3.1-8b": 40,
         "train llama-3.1-8b dora": 50, "train llama-3.1-8b qlora": 50,
         "trl llama-3.2-1b": 30, "trl llama-3.1-8b": 50, "trl+liger llama-3.2-1b": 30, "trl+liger llama-3.1-8b": 50,
         "packed-attention": 10, "generate": 15, "serve": 20, "nccl": 25}


def llama_config(shape: dict, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(**shape, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, attention_bias=False, mlp_bias=False,
                       hidden_act="silu", initializer_range=0.02, dtype="bfloat16")


def llama_param_count(shape: dict) -> int:
    h, i, n, v = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"], shape["vocab_size"]
    kv = h // shape["num_attention_heads"] * shape["num_key_value_heads"]
    layer = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h
    return n * layer + v * h * (1 if shape["tie_word_embeddings"] else 2) + h
