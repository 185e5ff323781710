"""The torch modules that stand in for converted parts (imported only when the backend loads a model)."""

from __future__ import annotations

import torch


class TowerOutput(torch.nn.Module):
    """The vision tower with its feature map as a plain tensor output (what convert_model traces)."""

    def __init__(self, tower: torch.nn.Module) -> None:
        super().__init__()
        self.tower = tower

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.tower(pixel_values).last_hidden_state


class OVPart(torch.nn.Module):
    """A converted part in the model's place: a torch module (so the pipeline's forward hooks still time it)
    that runs the compiled IR on the CPU; the vision tower's output keeps transformers' shape."""

    def __init__(self, compiled, *, wrap_tower: bool) -> None:
        super().__init__()
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.wrap_tower = wrap_tower

    def forward(self, x: torch.Tensor, **kwargs):
        result = self.request.infer([x.detach().to(torch.float32).contiguous().numpy()])
        out = torch.from_numpy(result[self.compiled.output(0)].copy())
        if not self.wrap_tower:
            return out
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        return BaseModelOutputWithPooling(last_hidden_state=out)
