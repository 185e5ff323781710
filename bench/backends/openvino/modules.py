"""The torch modules that stand in for converted parts (imported only when the backend loads a model).

Each converted part stays a torch module in the model's tree, so generate() calls it as before and the
pipeline's forward hooks still time the vision tower and the projector.
"""

from __future__ import annotations

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
