"""Sections packed-attention, generate and serve."""

from __future__ import annotations

import json
import time

from gpucheck.context import Context
from gpucheck.runner import Skip


def layer0_attention(model, batch):
    """Output of the first layer's self-attention for ``batch`` (packed rows: positions restart, no mask)."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    seen = {}
    hook = base.get_decoder().layers[0].self_attn.register_forward_hook(
        lambda _m, _a, out: seen.__setitem__("o", out[0] if isinstance(out, tuple) else out))
    try:
        with torch.no_grad():
            base.get_decoder()(input_ids=batch.input_ids, position_ids=batch.position_ids,
                               attention_mask=batch.attention_mask, use_cache=False)
    finally:
        hook.remove()
    return seen["o"].float()


def section_packed_attention(ctx: Context, key: str) -> dict:
    """Two examples packed in one row must give the second the attention output it gets alone (SDPA with the
    block-diagonal mask transformers derives from restarting positions); a row with continuous positions (plain
    causal attention, the second example sees the first) is the control that shows the check can fail."""
    import torch

    from tunesmith.models.loading import load_model
    from tunesmith.train.batching import collate_packed

    examples = sorted(ctx.schedule(key).examples, key=lambda e: len(e.input_ids))
    first, second = examples[len(examples) // 2], examples[len(examples) // 3]
    model = load_model(ctx.model_config(key)).eval()
    pad = ctx.tokenizer.pad_token_id
    packed = collate_packed([[first, second]], pad).to(ctx.device.torch)
    alone = collate_packed([[second]], pad).to(ctx.device.torch)
    leaky = collate_packed([[first, second]], pad)
    leaky.position_ids = torch.arange(leaky.input_ids.shape[1]).unsqueeze(0)
    leaky = leaky.to(ctx.device.torch)
    n1, n2 = len(first.input_ids), len(second.input_ids)
    ref = layer0_attention(model, alone)[:, :n2]

    def rel(x):
        return float((x[:, n1:n1 + n2] - ref).norm() / ref.norm())

    err, leak = rel(layer0_attention(model, packed)), rel(layer0_attention(model, leaky))
    print(f"  example of {n2} tokens packed after one of {n1}: relative difference of its attention output "
          f"{err:.2e} (bf16 noise); with plain causal attention over the row (control) {leak:.2e}")
    if not (err < 0.05 and leak > 5 * err):
        raise AssertionError(f"packed examples are not isolated: {err:.3e} vs control {leak:.3e}")
    return {"relative_difference": err, "control_difference": leak}


def section_generate(ctx: Context, key: str) -> dict:
    from tunesmith.evaluate.generate import generate_greedy, render_prompts
    from tunesmith.models.loading import load_model, load_tokenizer

    mc = ctx.model_config(key)
    tokenizer, model = load_tokenizer(mc), load_model(mc).eval()
    n, new_tokens, batch = (8, 8, 4) if ctx.cpu else (64, 64, 32)
    prompts = render_prompts(tokenizer, [r["messages"][:-1] for r in ctx.records[:n]])
    generated = {"tokens": 0}
    real_generate = model.generate

    def counting_generate(*a, **kw):
        out = real_generate(*a, **kw)
        new = out[:, kw["input_ids"].shape[1]:]
        generated["tokens"] += int((new != kw["pad_token_id"]).sum())  # rows that stopped are padded
        return out

    model.generate = counting_generate
    generate_greedy(model, tokenizer, prompts[:2], max_new_tokens=2)  # warm-up
    generated["tokens"] = 0
    ctx.device.sync()
    t0 = time.perf_counter()
    outs = generate_greedy(model, tokenizer, prompts, max_new_tokens=new_tokens, batch_size=batch)
    ctx.device.sync()
    dt = time.perf_counter() - t0
    if len(outs) != n or not all(isinstance(o, str) for o in outs):
        raise AssertionError(f"expected {n} completions, got {len(outs)}")
    print(f"  {n} prompts (shared system prompt, mean {sum(map(len, prompts)) / n:.0f} tokens), batch {batch}, "
          f"{generated['tokens']} new tokens in {dt:.2f}s = {generated['tokens'] / dt:,.0f} tokens/s")
    return {"prompts": n, "new_tokens": generated["tokens"], "seconds": dt, "tokens_per_s": generated["tokens"] / dt}


def post_json(url: str, body: dict, timeout: float) -> tuple[int, dict, float]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read()), time.perf_counter() - t0
    except urllib.error.HTTPError as e:
        return e.code, {"error": e.read().decode(errors="replace")[:300]}, time.perf_counter() - t0


def serve_requests(ctx: Context, model_names: list[str]) -> list[dict]:
    """Every third request samples (temperature 0.8, top_p 0.9, seeded); models alternate base / adapter."""
    n = 8 if ctx.cpu else 32
    out = []
    for i, rec in enumerate(ctx.records[:n]):
        body = {"model": model_names[i % len(model_names)], "messages": rec["messages"][:-1],
                "max_tokens": 8 if ctx.cpu else 32, "temperature": 0.0}
        if i % 3 == 2:
            body.update(temperature=0.8, top_p=0.9, seed=i)
        out.append(body)
    return out


def section_serve(ctx: Context, key: str) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise Skip(f"serving needs fastapi and uvicorn: {e.name} not installed") from None
    from tunesmith.deploy.config import ServeConfig
    from tunesmith.deploy.server.runner import ServerThread, build_state

    adapter = ctx.adapters.get(key)
    names = ["base"] + (["gpu-check"] if adapter else [])
    cfg = ServeConfig(auth=False, adapters={"gpu-check": str(adapter)} if adapter else {}, max_batch_size=16,
                      max_concurrent_per_key=64, request_timeout_s=120)
    state = build_state(cfg, ctx.model_config(key), method="lora")
    rows_seen: list[int] = []
    observe = state.engine.observe_batch
    state.engine.observe_batch = lambda n: (rows_seen.append(n), observe(n))
    bodies = serve_requests(ctx, names)
    with ServerThread(state) as server:
        url = server.url + "/v1/chat/completions"
        status, _, _ = post_json(url, {**bodies[0], "max_tokens": 2}, 120)  # warm-up
        t0 = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda b: post_json(url, b, 120), bodies))
        wall = time.perf_counter() - t0
    bad = [(b["model"], b["temperature"], s, a) for b, (s, a, _) in zip(bodies, answers, strict=True) if s != 200]
    if status != 200 or bad:
        raise AssertionError(f"{len(bad)} of {len(bodies)} requests failed: {bad[:3]}")
    finish = {a["choices"][0]["finish_reason"] for _, a, _ in answers}
    tokens = sum(a["usage"]["completion_tokens"] for _, a, _ in answers)
    lat = sorted(t for _, _, t in answers)
    m = {"requests": len(bodies), "sampled": sum(b["temperature"] > 0 for b in bodies), "models": names,
         "wall_s": wall, "requests_per_s": len(bodies) / wall, "tokens_per_s": tokens / wall,
         "p50_s": lat[len(lat) // 2], "p95_s": lat[min(len(lat) - 1, int(0.95 * len(lat)))],
         "max_rows_per_forward": max(rows_seen), "finish_reasons": sorted(finish)}
    print(f"  {len(bodies)} requests ({m['sampled']} sampled; models {', '.join(names)}) from 16 clients: all 200, "
          f"{m['requests_per_s']:.1f} req/s, {m['tokens_per_s']:,.0f} tokens/s, p50 {m['p50_s']:.2f}s, "
          f"p95 {m['p95_s']:.2f}s, up to {m['max_rows_per_forward']} rows per forward")
    return m
