"""Peak training memory of a Llama-style decoder, per method, with a breakdown.

API (also used by the training pre-flight check)::

    estimate_memory(
        arch: Architecture,                 # Architecture.resolve(name|folder) or .from_transformers_config(model.config)
        *,
        method: "full" | "lora" | "dora" | "qlora" = "lora",
        batch_size: int = 4,                # rows per micro-batch
        seq_len: int = 1024,                # tokens per row (packed rows are full)
        dtype: "float32" | "bfloat16" | "float16" | torch.dtype = "bfloat16",  # compute (and frozen-weight) dtype
        optimizer: "adamw" | "adamw_8bit" | "sgd" = "adamw",
        gradient_checkpointing: bool = False,
        lora_r: int = 16,
        lora_targets: list[str] | "all-linear" = "all-linear",  # train.lora.target_modules' default
        lora_dropout: float = 0.05,
        double_quant: bool = True,          # QLoRA: NF4 with double-quantised block constants (as training)
        attention: "sdpa" | "eager" = "sdpa",
        device: "cuda" | "cpu" | torch.device = "cuda",
        sharding: "none" | "optimizer" | "full" = "none",  # DDP | ZeRO-2 | FSDP, ZeRO-3
        num_shards: int = 1,                # data-parallel ranks the states are split over
    ) -> MemoryEstimate                    # one rank's .total_bytes, .components, .peak_phase

    fits(estimate: MemoryEstimate, device_bytes: int, *, headroom: float = 0.0) -> bool

The model (documented in docs/advise.md, validated by benchmarks/memory_estimate_validation.py)
-------------------------------------------------------------------------------------------
N = parameters, P = trainable parameters, T = batch_size x seq_len tokens, c = bytes of the
compute dtype (4 fp32, 2 bf16/fp16), h hidden, i intermediate, kv = kv_heads x head_dim, a heads.

* **weights**: full: 4N (fp32 master weights; with bf16/fp16 compute, autocast also keeps a c-byte
  copy of each weight from forward to the end of backward: + cN, freed before the optimizer step). lora/dora: cN frozen base. qlora: every decoder
  linear in NF4 = 0.5 byte/param + block constants (1 byte per 64 weights with double
  quantisation, plus 4 bytes per 256 blocks; 4 bytes per 64 without), embeddings/LM head/norms c.
* **adapter weights**: 4P (peft keeps LoRA A/B in fp32).
* **gradients**: 4P (fp32, same dtype as the trained weights).
* **optimizer states**: AdamW 8P (two fp32 moments), 8-bit AdamW 2P, plain SGD 0.
* **activations saved for backward, per layer and token** (counted with autograd's saved-tensor
  hooks on transformers' Llama, SDPA attention, see docs/advise.md):
  attention block with both RMSNorms ``8h + 2kv + a + 2`` elements; MLP ``3i`` with a frozen
  down projection, ``4i`` when it is trained (full); each LoRA-adapted linear adds its dropout
  output (in_features) and its A output (r); eager attention adds the a x seq_len probability
  matrix (fp32 softmax + c-byte copy). Gradient checkpointing keeps only each layer's input (h)
  and recomputes one layer at a time during backward.
* **loss buffers**: T x vocab logits in c bytes, the fp32 upcast (half precision only), the fp32
  log-softmax saved by cross-entropy and two fp32 gradients of the same size: 16 (fp32) or 18
  (half) bytes per token x vocab, plus the final norm (3h per token).
* **optimizer step temporaries**: CUDA foreach AdamW allocates one fp32 tensor the size of all
  trainable parameters (4P); CPU's per-tensor AdamW two temporaries of the largest parameter.
* **framework overhead**: CUDA context and cuBLAS workspace (0.75 GiB) + 5% allocator
  fragmentation on a GPU; on CPU a constant measured on a calibration run (CPU_OVERHEAD_BYTES).

* **sharding** over W data-parallel ranks: ZeRO-2 splits gradients, optimizer states and step
  temporaries by W; FSDP and ZeRO-3 also the weights (and autocast copies), and add two decoder
  layers gathered whole (the one computing and the one prefetched).

The peak is the largest of three moments: start of backward (weights + states + all saved
activations + loss buffers), mid-backward under gradient checkpointing (weights + states +
checkpoints + one recomputed layer + gradients), and the optimizer step (weights + states +
gradients + step temporaries).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tunesmith.errors import TunesmithError
from tunesmith.estimate.arch import DEFAULT_LORA_TARGETS, Architecture
from tunesmith.models.quantization import NF4_DOUBLE_QUANT

Method = Literal["full", "lora", "dora", "qlora"]
METHODS: tuple[str, ...] = ("full", "lora", "dora", "qlora")
OPTIMIZERS = {"adamw": 8.0, "adamw_8bit": 2.0, "sgd": 0.0}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
SHARDINGS = ("none", "optimizer", "full")

GIB = 2**30
MIB = 2**20
CUDA_CONTEXT_BYTES = int(0.75 * GIB)
CUDA_FRAGMENTATION = 0.05
# Measured once on this project's CPU runners with a 1-layer hidden-64 calibration model (not one
# of the validated configurations): peak RSS above the post-import baseline minus everything the
# model above predicts; it is what autograd, oneDNN scratch and glibc arenas add. See docs/advise.md.
CPU_OVERHEAD_BYTES = 26 * MIB


@dataclass(frozen=True)
class Component:
    name: str
    bytes: int
    at_peak: bool
    note: str = ""


@dataclass
class MemoryEstimate:
    arch_name: str
    method: str
    batch_size: int
    seq_len: int
    dtype: str
    optimizer: str
    gradient_checkpointing: bool
    device: str
    total_params: int
    trainable_params: int
    components: list[Component] = field(default_factory=list)
    peak_phase: str = ""
    total_bytes: int = 0

    @property
    def trainable_fraction(self) -> float:
        return self.trainable_params / self.total_params

    def component(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)

    def as_dict(self) -> dict:
        return {
            "method": self.method,
            "total_bytes": self.total_bytes,
            "peak_phase": self.peak_phase,
            "trainable_params": self.trainable_params,
            "components": {c.name: {"bytes": c.bytes, "at_peak": c.at_peak, "note": c.note} for c in self.components},
        }


def fits(estimate: MemoryEstimate, device_bytes: int, *, headroom: float = 0.0) -> bool:
    """True when the estimated peak fits in ``device_bytes`` keeping ``headroom`` (a fraction) free."""
    return estimate.total_bytes <= device_bytes * (1.0 - headroom)


def _check(method: str, dtype: str, optimizer: str, attention: str, device: str, batch_size: int, seq_len: int) -> None:
    if method not in METHODS:
        raise TunesmithError(f"unknown method '{method}'", hint=f"one of {', '.join(METHODS)}")
    if dtype not in DTYPE_BYTES:
        raise TunesmithError(f"unknown dtype '{dtype}'", hint=f"one of {', '.join(DTYPE_BYTES)}")
    if optimizer not in OPTIMIZERS:
        raise TunesmithError(f"unknown optimizer '{optimizer}'", hint=f"one of {', '.join(OPTIMIZERS)}")
    if attention not in ("sdpa", "eager"):
        raise TunesmithError(f"unknown attention '{attention}'", hint="sdpa or eager")
    if device not in ("cuda", "cpu"):
        raise TunesmithError(f"unknown device '{device}'", hint="cuda or cpu")
    if batch_size < 1 or seq_len < 1:
        raise TunesmithError("batch size and sequence length must be positive")


def activation_elements_per_token_layer(
    arch: Architecture, *, method: str, lora_r: int, lora_targets: list[str] | str, lora_dropout: float
) -> int:
    """Elements autograd keeps per token per decoder layer (no checkpointing, SDPA attention)."""
    h, i = arch.hidden_size, arch.intermediate_size
    n = 8 * h + 2 * arch.kv_dim + arch.num_heads + 2  # attention block incl. both RMSNorms
    n += 3 * i  # gate and up outputs, SiLU output
    if method == "full":
        n += i  # the down projection's input, needed for its weight gradient
    else:
        shapes = arch.linear_shapes()
        for t in arch.lora_targets(lora_targets):
            fan_in = shapes[t][0]
            n += lora_r + (fan_in if lora_dropout > 0 else 0)
            if t == "down_proj" and lora_dropout == 0:
                n += i  # without dropout the adapter saves the (otherwise unsaved) MLP product
    return n


def estimate_memory(
    arch: Architecture,
    *,
    method: str = "lora",
    batch_size: int = 4,
    seq_len: int = 1024,
    dtype: str = "bfloat16",
    optimizer: str = "adamw",
    gradient_checkpointing: bool = False,
    lora_r: int = 16,
    lora_targets: list[str] | str | None = None,
    lora_dropout: float = 0.05,
    double_quant: bool = NF4_DOUBLE_QUANT,
    attention: str = "sdpa",
    device: str = "cuda",
    sharding: str = "none",
    num_shards: int = 1,
) -> MemoryEstimate:
    """Estimate peak training memory of one process; see the module docstring for every term.

    ``dtype`` and ``device`` also accept ``torch.dtype`` / ``torch.device`` objects. ``sharding`` over
    ``num_shards`` data-parallel ranks: "none" (DDP: every rank holds everything), "optimizer"
    (DeepSpeed ZeRO-2: gradients and optimizer states split), "full" (FSDP, ZeRO-3: weights too).
    """
    dtype = str(dtype).removeprefix("torch.")
    device = str(getattr(device, "type", device))
    _check(method, dtype, optimizer, attention, device, batch_size, seq_len)
    run = _Run(arch, method, batch_size, seq_len, dtype, optimizer, gradient_checkpointing, lora_r,
               DEFAULT_LORA_TARGETS if lora_targets is None else lora_targets, lora_dropout, attention, device)
    terms = _terms(run, double_quant)
    if sharding not in SHARDINGS or num_shards < 1:
        raise TunesmithError(f"unknown sharding '{sharding}' over {num_shards}", hint=f"one of {', '.join(SHARDINGS)}")
    if sharding != "none" and num_shards > 1:
        _shard(terms, run, full=sharding == "full", ranks=num_shards)
    static = sum(b for b, _ in terms.static.values())
    phases = {
        "start of backward": static + terms.copies + terms.saved_acts + terms.loss_buffers,
        "optimizer step": static + terms.grads + terms.step_tmp,
    }
    if gradient_checkpointing:
        phases["backward (recomputing a layer)"] = static + terms.copies + terms.saved_acts + terms.recompute + terms.grads
    peak_phase = max(phases, key=phases.get)
    components = _components(terms, run, peak_phase)
    subtotal = phases[peak_phase]
    if device == "cuda":
        overhead = CUDA_CONTEXT_BYTES + int(CUDA_FRAGMENTATION * subtotal)
        o_note = "CUDA context + cuBLAS workspace 0.75 GiB, 5% allocator fragmentation"
    else:
        overhead = CPU_OVERHEAD_BYTES
        o_note = "autograd/oneDNN/allocator, measured on a calibration run"
    components.append(Component("framework overhead", overhead, True, o_note))
    total = subtotal + overhead
    assert total == sum(x.bytes for x in components if x.at_peak)
    return MemoryEstimate(
        arch_name=arch.name, method=method, batch_size=batch_size, seq_len=seq_len, dtype=dtype, optimizer=optimizer,
        gradient_checkpointing=gradient_checkpointing, device=device, total_params=arch.total_params,
        trainable_params=terms.trainable, components=components, peak_phase=peak_phase, total_bytes=int(total),
    )


@dataclass(frozen=True)
class _Run:
    """One estimate's settings, checked and normalised (dtype and device as strings)."""

    arch: Architecture
    method: str
    batch_size: int
    seq_len: int
    dtype: str
    optimizer: str
    gradient_checkpointing: bool
    lora_r: int
    targets: list[str] | str
    lora_dropout: float
    attention: str
    device: str

    @property
    def c(self) -> int:
        """Bytes per element of the compute dtype."""
        return DTYPE_BYTES[self.dtype]

    @property
    def tokens(self) -> int:
        return self.batch_size * self.seq_len


@dataclass
class _Terms:
    """The terms of the model in the module docstring, in bytes, before the peak is chosen."""

    static: dict[str, tuple[int, str]]  # weights, adapter weights, optimizer states: (bytes, note)
    trainable: int
    copies: int  # autocast's half-precision weight copies (full fine-tuning), forward to end of backward
    grads: int
    saved_acts: int
    recompute: int  # one layer recomputed under gradient checkpointing
    loss_buffers: int
    step_tmp: int
    step_note: str


def _terms(r: _Run, double_quant: bool) -> _Terms:
    arch, method, c = r.arch, r.method, r.c
    N, T = arch.total_params, r.tokens
    adapters = method != "full"
    lora_p = arch.lora_params(r.lora_r, r.targets) if adapters else 0
    if method == "dora":
        # DoRA adds a magnitude vector (out_features) per adapted linear
        shapes = arch.linear_shapes()
        lora_p += arch.num_layers * sum(shapes[t][1] for t in arch.lora_targets(r.targets))
    P = lora_p if adapters else N
    static = {"weights": _weights(r, double_quant)}
    if adapters:
        static["adapter weights"] = (4 * lora_p, f"LoRA r={r.lora_r} on {', '.join(arch.lora_targets(r.targets))} (fp32)")
    static["optimizer states"] = (int(OPTIMIZERS[r.optimizer] * P), f"{r.optimizer}: {OPTIMIZERS[r.optimizer]:g} B/trainable param")
    saved_acts, recompute = _activations(r)
    loss_buffers = T * arch.vocab_size * (2 + 4 * 4 if c < 4 else 16) + 3 * arch.hidden_size * c * T  # 16 or 18 B per logit
    step_tmp, step_note = _step_temporaries(r, P)
    return _Terms(static, P, copies=c * N if (method == "full" and c < 4) else 0, grads=4 * P, saved_acts=saved_acts,
                  recompute=recompute, loss_buffers=loss_buffers, step_tmp=step_tmp, step_note=step_note)


def _weights(r: _Run, double_quant: bool) -> tuple[int, str]:
    N = r.arch.total_params
    if r.method == "full":
        return 4 * N, "fp32 master weights"
    if r.method == "qlora":
        q = r.arch.quantisable_params
        per_param = 0.5 + (1 / 64 + 4 / (64 * 256) if double_quant else 4 / 64)
        return (int(q * per_param + (N - q) * r.c),
                (f"NF4 decoder linears ({per_param:.4f} B/param incl. block constants"
                 f"{', double-quantised' if double_quant else ''}); embeddings, head, norms in {r.dtype}"))
    return r.c * N, f"frozen base in {r.dtype}"


def _activations(r: _Run) -> tuple[int, int]:
    """(saved for backward at its start, one recomputed layer under gradient checkpointing)."""
    arch, c, T = r.arch, r.c, r.tokens
    per_layer = activation_elements_per_token_layer(
        arch, method=r.method, lora_r=r.lora_r, lora_targets=r.targets, lora_dropout=r.lora_dropout
    ) * c * T
    if r.attention == "eager":
        per_layer += T * arch.num_heads * r.seq_len * (4 + (c if c < 4 else 0))
    # QLoRA: bitsandbytes de-quantises one weight at a time for the matmul (forward and backward)
    transient = max(a * b for a, b in arch.linear_shapes().values()) * c if r.method == "qlora" else 0
    if r.gradient_checkpointing:
        return arch.num_layers * arch.hidden_size * c * T, per_layer + transient
    return arch.num_layers * per_layer + transient, 0


def _step_temporaries(r: _Run, trainable: int) -> tuple[int, str]:
    if r.optimizer == "sgd":
        return 0, "plain SGD"
    if r.device == "cuda":
        return 4 * trainable, "foreach AdamW: one fp32 tensor of all trainable params"
    shapes = r.arch.linear_shapes()
    if r.method == "full":
        largest = max(r.arch.embedding_params, max(a * b for a, b in shapes.values()))
    else:
        largest = max(r.lora_r * max(s) for s in shapes.values())
    return 2 * 4 * largest, "per-tensor AdamW: two temporaries of the largest parameter"


def _shard(terms: _Terms, r: _Run, *, full: bool, ranks: int) -> None:
    """Split what ZeRO-2 ("optimizer") or FSDP / ZeRO-3 (``full``) split over ``ranks``; full sharding
    also gathers two decoder layers whole (the one computing and the one prefetched)."""
    for k in ["optimizer states"] + (["weights", "adapter weights"] if full else []):
        if k in terms.static:
            b, note = terms.static[k]
            terms.static[k] = (b // ranks, note + f"; 1/{ranks} per rank")
    terms.grads //= ranks
    terms.step_tmp //= ranks
    if full:
        terms.copies //= ranks
        layer_bytes = (4 if r.method == "full" else r.c) * r.arch.layer_params
        terms.static["gathered layers"] = (2 * layer_bytes, "two decoder layers unsharded at a time (current + prefetched)")


_AT_PEAK = {
    "start of backward": {"weight copies", "activations", "loss buffers"},
    "optimizer step": {"gradients", "optimizer step temporaries"},
    "backward (recomputing a layer)": {"weight copies", "activations", "recomputed layer", "gradients"},
}


def _components(t: _Terms, r: _Run, peak_phase: str) -> list[Component]:
    """Every term as a component, marked when it is held at the peak (static ones always are)."""
    at_peak = _AT_PEAK[peak_phase]
    components = [Component(k, int(b), True, note) for k, (b, note) in t.static.items()]
    if t.copies:
        components.append(Component("weight copies", int(t.copies), "weight copies" in at_peak,
                                    f"{r.dtype} copies autocast keeps from forward to the end of backward"))
    act_note = (
        f"layer inputs only (gradient checkpointing), {r.arch.num_layers} layers" if r.gradient_checkpointing
        else f"{r.arch.num_layers} layers x {r.tokens} tokens, {r.attention} attention"
    )
    components += [
        Component("gradients", int(t.grads), "gradients" in at_peak, "fp32, trainable params"),
        Component("activations", int(t.saved_acts), "activations" in at_peak, act_note),
    ]
    if r.gradient_checkpointing:
        components.append(Component("recomputed layer", int(t.recompute), "recomputed layer" in at_peak,
                                    "one layer's activations during backward"))
    components += [
        Component("loss buffers", int(t.loss_buffers), "loss buffers" in at_peak,
                  f"{r.tokens} tokens x {r.arch.vocab_size} vocab logits, log-softmax, 2 gradients"),
        Component("optimizer step temporaries", int(t.step_tmp), "optimizer step temporaries" in at_peak, t.step_note),
    ]
    return components
