"""The exact bytes each token id stands for, and how OpenAI's logprobs show a token as text.

A token may hold part of a UTF-8 character (byte-level BPE splits "✓" over several tokens), so decoding one
token alone gives U+FFFD; OpenAI's logprobs give each token's UTF-8 ``bytes`` instead, and in the legacy
completions format write such a token as ``"bytes:\\xe2\\x9c"``. Read from the tokenizer:

* byte-level BPE (GPT-2, SmolLM2, Llama 3, Qwen): the token string maps back to bytes through the byte-to-unicode
  alphabet of the ``ByteLevel`` decoder;
* SentencePiece (Llama 2, Mistral): ``▁`` is a space, ``<0xNN>`` a byte-fallback token;
* special tokens (``<|im_end|>``): their text; anything else: the token decoded alone.
"""

from __future__ import annotations

import codecs
import json
import re

SPIECE_SPACE = "\u2581"
BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _decoder_types(tokenizer) -> set[str]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return set()
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    return {decoder.get("type"), *(d.get("type") for d in decoder.get("decoders", []))}


class TokenTexts:
    """Bytes and display text of token ids for one tokenizer (memoised per id)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        types = _decoder_types(tokenizer)
        self._byte_level = "ByteLevel" in types
        self._spiece = bool(types & {"Metaspace", "ByteFallback", "Replace"})
        self._special = {int(i): t.content for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()}
        self._cache: dict[int, bytes] = {}
        if self._byte_level:
            from transformers.convert_slow_tokenizer import bytes_to_unicode

            self._unbyte = {c: b for b, c in bytes_to_unicode().items()}

    def bytes_of(self, token: int) -> bytes:
        b = self._cache.get(token)
        if b is None:
            b = self._cache[token] = self._bytes(token)
        return b

    def _bytes(self, token: int) -> bytes:
        if token in self._special:
            return self._special[token].encode("utf-8")
        piece = self.tokenizer.convert_ids_to_tokens(token)
        if isinstance(piece, str):
            if self._byte_level and all(c in self._unbyte for c in piece):
                return bytes(self._unbyte[c] for c in piece)
            if self._spiece:
                m = BYTE_FALLBACK.fullmatch(piece)
                return bytes([int(m.group(1), 16)]) if m else piece.replace(SPIECE_SPACE, " ").encode("utf-8")
        return self.tokenizer.decode([token]).encode("utf-8")

    def text_of(self, token: int) -> str:
        """The token as OpenAI's legacy logprobs write it: its text, or ``bytes:\\xNN...`` if not valid UTF-8."""
        b = self.bytes_of(token)
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            return "bytes:" + "".join(f"\\x{x:02x}" for x in b)

    def offsets(self, tokens: list[int], start: int = 0) -> list[int]:
        """Character offset of each token in the text the tokens make (from ``start``): a character split over
        several tokens counts at the token that completes it."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        out, pos = [], start
        for t in tokens:
            out.append(pos)
            pos += len(decoder.decode(self.bytes_of(t)))
        return out
