"""Streaming text for the student: mlx-lm's streaming detokenizers, fitted to T5's tokenizer.

T5's sentencepiece tokenizer decodes through a ``Metaspace`` decoder: "▁" becomes a space and
only the first token loses its leading space. mlx-lm's SPM detokenizer does the same in linear
time, except that it keeps trimming while its text is still empty (a first token "▁" would make
it also trim the next word); `MetaspaceStreamingDetokenizer` trims only the first token.

This module imports mlx-lm (and so transformers); the generation module imports it only when a
stream starts.
"""

from __future__ import annotations

from typing import Any

from mlx_lm.tokenizer_utils import NaiveStreamingDetokenizer, SPMStreamingDetokenizer, StreamingDetokenizer


class MetaspaceStreamingDetokenizer(SPMStreamingDetokenizer):
    """mlx-lm's SPM streaming detokenizer with the ``Metaspace`` rule: trim the first token only."""

    def reset(self):
        super().reset()
        self.trim_space = True

    def add_token(self, token):
        super().add_token(token)
        # Metaspace pieces are whole UTF-8 (no byte fallback), so the first token is flushed now.
        self.trim_space = False


def streaming_detokenizer(tokenizer: Any) -> StreamingDetokenizer:
    """A streaming detokenizer whose text equals ``tokenizer.decode(tokens)`` for the tokens added.

    Linear time for sentencepiece (``Metaspace``) tokenizers such as T5's. Other tokenizers, and
    those that clean up spaces before punctuation on decode, get mlx-lm's naive detokenizer,
    which decodes again for each token.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    if type(decoder).__name__ == "Metaspace" and not getattr(tokenizer, "clean_up_tokenization_spaces", False):
        if decoder.prepend_scheme == "never":
            return SPMStreamingDetokenizer(tokenizer, trim_space=False)
        return MetaspaceStreamingDetokenizer(tokenizer)
    return NaiveStreamingDetokenizer(tokenizer)
