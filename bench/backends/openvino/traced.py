"""The torch modules that ``openvino.convert_model`` traces: the vision tower, the text encoder and the
decoder's steps with plain-tensor inputs and outputs.

Only what is traced lives here: a digest of this file is part of the converted IR's cache key
(``backend.ir_key_fields``), so a change here converts again and a change to how the IR is run
(``runtime.py``) does not.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from types import SimpleNamespace

import torch


class TowerOutput(torch.nn.Module):
    """The vision tower with its feature map as a plain tensor output (what convert_model traces)."""

    def __init__(self, tower: torch.nn.Module) -> None:
        super().__init__()
        self.tower = tower

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.tower(pixel_values).last_hidden_state


class EncoderOutput(torch.nn.Module):
    """The text encoder on the merged (image + prompt) embeddings, its last hidden state as a plain tensor."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state


GROUPED = "florence2_bench_grouped"  # the attention the decoder's cached step is traced with


def grouped_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Scaled dot-product attention where ``key``/``value`` may hold one row per group of query rows.

    The cached decoder step keeps cross-attention keys and values once per image, not once per beam:
    query rows ``g*i .. g*i+g-1`` attend to key row ``i`` (the same products as attending to g copies of
    it). With as many key rows as query rows (self-attention) it is plain attention. Returns what
    transformers' attention functions return: ``[rows, length, heads, dim]`` and no weights.
    """
    rows, heads, length, dim = query.shape
    keys = key.shape[0]
    grouped = query.reshape(keys, -1, heads, length, dim).transpose(1, 2).reshape(keys, heads, -1, dim)
    out = torch.nn.functional.scaled_dot_product_attention(grouped, key, value, attn_mask=attention_mask,
                                                           scale=scaling)
    return out.reshape(keys, heads, -1, length, dim).permute(0, 2, 3, 1, 4).reshape(rows, length, heads, dim), None


def _register_grouped() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(GROUPED, grouped_attention)


@contextmanager
def attention_implementation(config, name: str):
    """``config`` runs attention ``name`` inside the block (while a step is traced), then its own again."""
    before = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = before


def cache_keyword(module: torch.nn.Module) -> str:
    """How this transformers version names a layer's cache argument (``past_key_values`` became ``cache``)."""
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


class _TensorCache:
    """One attention kind's cache while tracing: what BartAttention reads (``layers[i].keys``/``.values``)
    and calls (``update``), with no empty first tensor to concatenate (convert_model refuses that)."""

    def __init__(self) -> None:
        self.layers: dict[int, SimpleNamespace] = {}

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *args, **kwargs):
        if (old := self.layers.get(layer_idx)) is not None:
            keys, values = torch.cat([old.keys, keys], dim=-2), torch.cat([old.values, values], dim=-2)
        self.layers[layer_idx] = SimpleNamespace(keys=keys, values=values)
        return keys, values


def _traced_cache():
    """An EncoderDecoderCache (what the attention layers test for) over two ``_TensorCache``."""
    from transformers.cache_utils import EncoderDecoderCache

    class TracedCache(EncoderDecoderCache):
        def __init__(self) -> None:  # noqa: D107 (the base's would build DynamicCaches)
            self.self_attention_cache, self.cross_attention_cache = _TensorCache(), _TensorCache()
            self.is_updated: dict[int, bool] = {}

    return TracedCache()


class DecoderStep(torch.nn.Module):
    """One decoding step of the text decoder with its KV cache as plain tensors (what convert_model traces).

    The decoder's own embeddings and layers run on a cache built from the inputs, so the math is
    transformers'. Inputs: ``input_ids`` [rows, 1], ``position`` [1] (the cached length), the encoder's
    mask, then either ``encoder_hidden_states`` (the first step, ``past=False``; mask [rows, S]) or each
    layer's self-attention key and value [rows, ...] followed by each layer's cross-attention key and
    value [images, ...] (mask [images, S]): rows are images x beams, and the cached step attends each
    group of rows to its image's keys (``grouped_attention``). Outputs: the hidden state, each layer's new
    self-attention key and value (this token's), and on the first step each layer's cross-attention key
    and value.
    """

    def __init__(self, decoder: torch.nn.Module, past: bool) -> None:
        super().__init__()
        self.decoder = decoder
        self.past = past
        _register_grouped()

    def forward(self, input_ids: torch.Tensor, position: torch.Tensor, encoder_mask: torch.Tensor,
                *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        decoder = self.decoder
        layers = decoder.layers
        cache = _traced_cache()
        if self.past:
            n = len(layers)
            for i in range(n):
                cache.self_attention_cache.update(states[2 * i], states[2 * i + 1], i)
                cache.cross_attention_cache.update(states[2 * (n + i)], states[2 * (n + i) + 1], i)
                cache.is_updated[i] = True
            key_value_states = states[-1]  # only tested for None: the cross cache is filled
        else:
            key_value_states = states[0]
        hidden = decoder.embed_tokens(input_ids)
        position_ids = position + torch.cumsum(torch.ones_like(input_ids[0]), 0) - 1
        hidden = decoder.layernorm_embedding(hidden + decoder.embed_positions(input_ids, position_ids=position_ids))
        mask = (1.0 - encoder_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        config = layers[0].self_attn.config
        with attention_implementation(config, GROUPED if self.past else config._attn_implementation):
            for layer in layers:  # one query token: every cached position is visible, no causal mask
                hidden = layer(hidden, None, key_value_states, encoder_attention_mask=mask, use_cache=True,
                               **{cache_keyword(layer): cache})
        out = [hidden]
        for i in range(len(layers)):
            self_layer = cache.self_attention_cache.layers[i]
            out += [self_layer.keys[:, :, -1:], self_layer.values[:, :, -1:]]
        if not self.past:
            for i in range(len(layers)):
                out += [cache.cross_attention_cache.layers[i].keys, cache.cross_attention_cache.layers[i].values]
        return tuple(out)
