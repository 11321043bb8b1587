"""oneDNN linear layers with prepacked weights: the full profile's fastest fp32 (and bfloat16) path on CPUs where
`metrics.base.onednn_prepack_available()`. A module of its own, importing torch at the top, so the layer is a
module-level class that pickles (the light profile never imports it)."""

from __future__ import annotations

from typing import Any

import torch


class PrepackedLinear(torch.nn.Module):
    """A linear layer run by oneDNN with its weight reordered once into oneDNN's blocked layout (torch.ops.mkldnn, the
    ops torch's compiler uses for frozen weights), in fp32 or bfloat16 (inputs and weights rounded to it, products
    summed in fp32, the output rounded to bfloat16 and returned in the input's dtype).

    The packed weight is an opaque oneDNN tensor that cannot be copied or pickled: the layer keeps its dense weight
    (an fp32 layer shares the model's own parameter, so tied weights stay tied and the weights hash is unchanged),
    packs it on its first forward in a process and drops the packed copy when it is copied or pickled. A copied or
    unpickled model (a test's deep copy, a scorer shipped to a worker) packs again where it next runs."""

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        dtype: torch.dtype = torch.float32,
        transposed: bool = False,
    ) -> None:
        super().__init__()
        self.compute_dtype, self.transposed = dtype, transposed  # transposed: `weight` is (in, out), Conv1D's
        self.in_features, self.out_features = weight.shape[::-1] if not transposed else weight.shape
        if isinstance(weight, torch.nn.Parameter) and weight.dtype == dtype:
            self.weight = weight
        else:
            self.register_buffer("weight", weight.detach().to(dtype))
        if bias is None or (isinstance(bias, torch.nn.Parameter) and bias.dtype == dtype):
            self.bias = bias
        else:
            self.register_buffer("bias", bias.detach().to(dtype))
        self._packed: torch.Tensor | None = None
        self.gelu: str | None = None  # oneDNN's GELU algorithm applied to the output ("none": erf, "tanh"), if fused
        self.activation: torch.nn.Module | None = None  # the model's GELU module that `gelu` stands for

    def fuse_gelu(self, activation: torch.nn.Module, algorithm: str) -> None:
        """Apply the GELU `activation` (oneDNN's `algorithm` for it) to the output as oneDNN writes it. A bfloat16
        layer with a fused GELU then returns bfloat16: it is a feed-forward block's first product, whose output goes
        only to the block's second product, which rounds its input to its own dtype anyway (a prepacked layer); so
        two conversions of the widest activations are skipped, and where the second product is bfloat16 too no value
        changes."""
        self.activation, self.gelu = activation, algorithm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._packed is None:
            weight = self.weight.detach()
            self._packed = torch.ops.mkldnn._reorder_linear_weight(
                (weight.t() if self.transposed else weight).contiguous(), None
            )
        bias = None if self.bias is None else self.bias.detach()
        post_op, algorithm = ("gelu", self.gelu) if self.gelu is not None else ("none", "")
        product = torch.ops.mkldnn._linear_pointwise(
            x.to(self.compute_dtype), self._packed, bias, post_op, [], algorithm
        )
        return product if self.gelu is not None else product.to(x.dtype)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_packed": None}
