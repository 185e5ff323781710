"""The torch modules that run converted parts in the model's place (imported only when the backend loads a
model).

Each converted part stays a torch module in the model's tree, so generate() calls it as before and the
pipeline's forward hooks still time the vision tower and the projector. A part compiled for several
OpenVINO streams splits a batch's images across its infer requests and runs them at once.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch


def row_slices(rows: int, streams: int) -> list[slice]:
    """Contiguous slices of ``rows`` rows (images), one per stream and at most one per row, as equal as
    whole rows allow: what a part's infer requests run side by side."""
    chunks = max(1, min(streams, rows))
    bounds = [rows * i // chunks for i in range(chunks + 1)]
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


def infer_split(requests: list, chunks: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
    """Each chunk's inputs on its own infer request (OpenVINO streams run them at once); their outputs in order.

    One chunk runs synchronously on the first request: a batch of one row gains nothing from streams.
    """
    used = requests[:len(chunks)]
    if len(chunks) == 1:
        used[0].infer(chunks[0], share_inputs=True)
    else:
        for request, arrays in zip(used, chunks, strict=True):
            request.start_async(arrays, share_inputs=True)
        for request in used:
            request.wait()
    return [[request.get_output_tensor(i).data for i in range(len(request.model_outputs))] for request in used]


def joined(outputs: list[list[np.ndarray]]) -> list[np.ndarray]:
    """The chunks' outputs joined along the rows again (copied: the requests' buffers are reused)."""
    if len(outputs) == 1:
        return [o.copy() for o in outputs[0]]
    return [np.concatenate(parts, axis=0) for parts in zip(*outputs, strict=True)]


class OVPart(torch.nn.Module):
    """A converted part in the model's place: runs the compiled IR on the CPU (inputs as f32, or int64 for
    masks) and returns what the replaced module returned, in ``dtype`` (the PyTorch parts' dtype).

    With ``streams`` > 1 (the part compiled for that many OpenVINO streams) a batch's rows are split into
    that many slices, run at once on their own infer requests, and joined again.
    """

    def __init__(self, compiled, part: str, dtype: torch.dtype, streams: int = 1) -> None:
        super().__init__()
        self.compiled = compiled
        self.requests = [compiled.create_infer_request() for _ in range(streams)]
        self.part = part
        self.dtype = dtype

    def run(self, *tensors: torch.Tensor) -> torch.Tensor:
        arrays = [t.detach().to(torch.float32 if t.is_floating_point() else torch.int64).contiguous().numpy()
                  for t in tensors]
        slices = row_slices(arrays[0].shape[0], len(self.requests))
        outputs = infer_split(self.requests, [[a[s] for a in arrays] for s in slices])
        return torch.from_numpy(joined([out[:1] for out in outputs])[0]).to(self.dtype)

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


class OVDecoder(torch.nn.Module):
    """The text decoder in OpenVINO: ``first`` (no cache yet) and ``step`` (with the cache), one token a call.

    The self-attention cache stays in the transformers cache object generate() keeps, so beam search
    reorders it as usual. The first step runs once per run of equal rows (the beams of one image are
    copies then) and its outputs are repeated; the cross-attention keys and values it makes are kept once
    per run, on that cache object instead of in it: beam search reorders rows only among one image's
    beams, which share them, so they never need reordering or copying per beam.
    """

    def __init__(self, first, step, decoder: torch.nn.Module, dtype: torch.dtype, first_streams: int = 1) -> None:
        super().__init__()
        self.first, self.step = first, step
        self.first_requests = [first.create_infer_request() for _ in range(first_streams)]
        self.step_request = step.create_infer_request()  # few rows a token: one request with every thread
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
            ids, mask, hidden = (np.ascontiguousarray(a[::k]) for a in (ids, mask, hidden))
            zero = np.array([0], dtype=np.int64)
            values = joined(infer_split(self.first_requests, [[ids[s], zero, mask[s], hidden[s]] for s in
                                                              row_slices(ids.shape[0], len(self.first_requests))]))
            cache.ov_cross = (mask, values[1 + 2 * self.layers:])
            values = [np.repeat(v, k, axis=0) for v in values[:1 + 2 * self.layers]]
        else:
            cross_mask, cross = cache.ov_cross
            past = []
            for layer in selfs.layers[:self.layers]:
                past += [layer.keys.contiguous().numpy(), layer.values.contiguous().numpy()]
            at = np.array([position], dtype=np.int64)
            values = joined(infer_split([self.step_request], [[ids, at, cross_mask, *past, *cross]]))
        for i in range(self.layers):
            selfs.update(torch.from_numpy(values[1 + 2 * i]), torch.from_numpy(values[2 + 2 * i]), i)
        hidden = torch.from_numpy(values[0]).to(self.dtype)
        output = BaseModelOutputWithPastAndCrossAttentions
        return output(last_hidden_state=hidden, **{"cache" if "cache" in output.__dataclass_fields__
                                                   else "past_key_values": cache})
