"""The torch modules that stand in for converted parts (imported only when the backend loads a model).

Each converted part stays a torch module in the model's tree, so generate() calls it as before and the
pipeline's forward hooks still time the vision tower and the projector.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
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


class OVPart(torch.nn.Module):
    """A converted part in the model's place: runs the compiled IR on the CPU (inputs as f32, or int64 for
    masks) and returns what the replaced module returned, in ``dtype`` (the PyTorch parts' dtype)."""

    def __init__(self, compiled, part: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.part = part
        self.dtype = dtype

    def run(self, *tensors: torch.Tensor) -> torch.Tensor:
        arrays = [t.detach().to(torch.float32 if t.is_floating_point() else torch.int64).contiguous().numpy()
                  for t in tensors]
        result = self.request.infer(arrays)
        return torch.from_numpy(result[self.compiled.output(0)].copy()).to(self.dtype)

    def forward(self, *args, **kwargs):
        from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling

        if self.part == "vision_tower":
            return BaseModelOutputWithPooling(last_hidden_state=self.run(args[0] if args else kwargs["pixel_values"]))
        if self.part == "encoder":
            embeds = kwargs["inputs_embeds"]
            mask = kwargs.get("attention_mask")
            if mask is None:
                mask = torch.ones(embeds.shape[:2], dtype=torch.int64)
            return BaseModelOutput(last_hidden_state=self.run(embeds, mask))
        return self.run(*args)


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


def repeat_factor(arrays: list[np.ndarray]) -> int:
    """The largest k such that every array's rows come in runs of k equal rows (beam search's first step:
    each image's beams are copies), so that step runs once per run and its outputs are repeated, exactly.

    Rows are compared one at a time (no copy of the arrays), first to find the first run's length.
    """
    rows = arrays[0].shape[0]
    first = 1
    while first < rows and all(np.array_equal(a[first], a[0]) for a in arrays):
        first += 1
    for k in range(first, 1, -1):
        if first % k == 0 and rows % k == 0 and all(
                np.array_equal(a[i], a[i - i % k]) for i in range(rows) for a in arrays):
            return k
    return 1


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


class OVDecoder(torch.nn.Module):
    """The text decoder in OpenVINO: ``first`` (no cache yet) and ``step`` (with the cache), one token a call.

    The self-attention cache stays in the transformers cache object generate() keeps, so beam search
    reorders it as usual. The first step runs once per run of equal rows (the beams of one image are
    copies then) and its outputs are repeated; the cross-attention keys and values it makes are kept once
    per run, on that cache object instead of in it: beam search reorders rows only among one image's
    beams, which share them, so they never need reordering or copying per beam.
    """

    def __init__(self, first, step, decoder: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.first, self.step = first, step
        self.first_request, self.step_request = first.create_infer_request(), step.create_infer_request()
        self.layers = len(decoder.layers)
        self.embed_tokens = decoder.embed_tokens  # what get_input_embeddings() and tied weights still find
        self.dtype = dtype

    def forward(self, input_ids=None, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                cache=None, inputs_embeds=None, use_cache=None, **kwargs):
        from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions

        cache = cache if cache is not None else kwargs.get("past_key_values")
        if input_ids is None or input_ids.shape[1] != 1 or cache is None or attention_mask is not None:
            raise ValueError("the OpenVINO decoder runs generate() with its KV cache, one token id a step "
                             f"(got input_ids {None if input_ids is None else tuple(input_ids.shape)}, "
                             f"cache {type(cache).__name__}, decoder attention_mask {attention_mask is not None})")
        rows = input_ids.shape[0]
        if encoder_attention_mask is None:
            encoder_attention_mask = torch.ones(rows, encoder_hidden_states.shape[1], dtype=torch.int64)
        ids = input_ids.to(torch.int64).contiguous().numpy()
        position = cache.get_seq_length()
        mask = encoder_attention_mask.to(torch.int64).contiguous().numpy()
        selfs = cache.self_attention_cache
        if position == 0:
            hidden = encoder_hidden_states.detach().to(torch.float32).contiguous().numpy()
            k = repeat_factor([ids, mask, hidden])
            outputs = self.first_request.infer([ids[::k], np.array([0], dtype=np.int64), mask[::k], hidden[::k]])
            values = [outputs[o] for o in self.first.outputs]
            cache.ov_cross = (k, mask[::k].copy(), [v.copy() for v in values[1 + 2 * self.layers:]])
            values = [np.repeat(v, k, axis=0) for v in values[:1 + 2 * self.layers]]
        else:
            k, cross_mask, cross = cache.ov_cross
            past = []
            for layer in selfs.layers[:self.layers]:
                past += [layer.keys.contiguous().numpy(), layer.values.contiguous().numpy()]
            outputs = self.step_request.infer([ids, np.array([position], dtype=np.int64), cross_mask, *past, *cross],
                                              share_inputs=True)
            values = [outputs[o] for o in self.step.outputs]
        for i in range(self.layers):
            selfs.update(torch.from_numpy(values[1 + 2 * i].copy()), torch.from_numpy(values[2 + 2 * i].copy()), i)
        hidden = torch.from_numpy(values[0].copy()).to(self.dtype)
        output = BaseModelOutputWithPastAndCrossAttentions
        return output(last_hidden_state=hidden, **{"cache" if "cache" in output.__dataclass_fields__
                                                   else "past_key_values": cache})
