"""New special tokens: the embedding grows, only the new rows train, the adapter still loads."""

from __future__ import annotations

import torch

from tunesmith.config import build_config
from tunesmith.models.loading import load_model, load_tokenizer
from tunesmith.train.batching import epoch_batches
from tunesmith.train.loop import train_loop
from tunesmith.train.methods import build_trainable_model
from tunesmith.train.run import save_trained
from tunesmith.train.tokenize import tokenize_records


def test_added_tokens_train_their_rows_and_the_adapter_reloads(tiny_model_dir, tmp_path):
    from peft import PeftModel

    cfg = build_config({"model": {"name_or_path": str(tiny_model_dir), "add_special_tokens": ["<tool_call>"]},
                        "train": {"method": "lora", "lora": {"r": 4, "dropout": 0.0}}, "output_dir": str(tmp_path)})
    tok = load_tokenizer(cfg.model)
    new_id = tok.convert_tokens_to_ids("<tool_call>")
    assert tok.tokenize("x <tool_call> y").count("<tool_call>") == 1  # one token, never split
    model, device = build_trainable_model(cfg)
    emb = model.get_base_model().get_input_embeddings()
    assert model.get_base_model().get_input_embeddings().weight.shape[0] == len(tok) > new_id
    recs = [{"id": str(i), "messages": [{"role": "user", "content": f"weather in city {i}?"},
                                        {"role": "assistant", "content": f"<tool_call> weather({i})"}]} for i in range(6)]
    ex, _ = tokenize_records(tok, recs, max_seq_length=128)
    assert any(new_id in e.input_ids for e in ex)

    def embed(ids):
        with torch.no_grad():
            return emb(torch.tensor([ids])).squeeze(0).clone()

    before = embed([new_id, 5, 100])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    train_loop(model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0),
               epoch_batches=lambda e: epoch_batches(ex, batch_size=2, packing=True, row_length=128,
                                                     pad_id=tok.pad_token_id, seed=0, epoch=e),
               total_steps=4, grad_accum=1, device=device)
    after = embed([new_id, 5, 100])
    assert not torch.equal(before[0], after[0])  # the new token's row trained
    assert torch.equal(before[1:], after[1:])  # the old rows did not

    out = save_trained(model, tok, cfg)
    assert (out / "tokenizer_config.json").is_file()
    model.eval()
    ids = torch.tensor([ex[0].input_ids])
    with torch.no_grad():
        want = model(input_ids=ids).logits
        base = load_model(cfg.model)  # resized the same way
        got = PeftModel.from_pretrained(base, str(out))(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
