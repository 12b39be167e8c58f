"""What one running server holds: config, model registry, tokenizer, engine, keys, limits, metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

from tunesmith.deploy.config import ServeConfig
from tunesmith.deploy.server.auth import ConcurrencyLimiter, KeyChecker
from tunesmith.deploy.server.continuous_batching import BatchEngine
from tunesmith.deploy.server.metrics import ServerMetrics
from tunesmith.deploy.server.registry import AdapterRegistry
from tunesmith.deploy.server.structured import ServerGrammars
from tunesmith.deploy.server.token_text import TokenTexts


@dataclass
class ServerState:
    cfg: ServeConfig
    registry: AdapterRegistry
    tokenizer: object
    engine: BatchEngine
    keys: KeyChecker | None  # None: auth is off (loopback only)
    limiter: ConcurrencyLimiter
    metrics: ServerMetrics
    token_texts: TokenTexts = field(init=False)  # bytes and text of token ids (logprobs)
    vocab_size: int = field(init=False)  # token ids a request may send: known to the tokenizer and the model
    grammars: ServerGrammars = field(init=False)  # tool calls and response_format (compiler built on first use)

    def __post_init__(self) -> None:
        self.token_texts = TokenTexts(self.tokenizer)
        embeddings = self.registry.model.get_input_embeddings().num_embeddings
        self.vocab_size = min(len(self.tokenizer), embeddings)
        self.grammars = ServerGrammars(self.tokenizer, self.registry.model, self.engine.eos_ids)
