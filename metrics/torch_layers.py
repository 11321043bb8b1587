"""The linear layers of the full profile's bfloat16 and int8 twins. A module of its own, importing torch at the top, so
each layer is a module-level class that pickles, also in a scorer that has scored (the light profile never imports
it; `metrics.base` hands the classes out on first use)."""

from __future__ import annotations

import torch
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

from metrics.base import fastest_fp32


class BFloat16Linear(torch.nn.Module):
    """A linear layer computing in bfloat16 (weights stored so, inputs rounded to it, products summed in fp32 by
    oneDNN, the result rounded to bfloat16) that takes and returns its input's dtype; built from an `nn.Linear`."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", linear.weight.detach().to(torch.bfloat16))
        bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x.to(torch.bfloat16), self.weight, self.bias).to(x.dtype)


class FullRangeDynamicLinear(DynamicLinear):
    """torch's dynamically quantised linear layer with 8-bit instead of 7-bit activations (`reduce_range=False`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = self._packed_params._packed_params
        return torch.ops.quantized.linear_dynamic(x, params, reduce_range=False).to(x.dtype)


class FirstTokenFp32(torch.nn.Module):
    """A dynamically quantised linear layer whose output at each text's first position (index 0 of the next-to-last
    dimension) is recomputed in fp32 from the unrounded input, on the fastest fp32 path (`fastest_fp32`); built from
    the quantised layer and the fp32 `nn.Linear` it replaced.

    Why: a classifier such as Detoxify's (BERT's pooler, RoBERTa's head) reads only the first position's last hidden
    state, and almost all of the int8 twin's error against fp32 came from rounding that position's own activations;
    other positions reach it only through attention, which averages their rounding errors over the text. Measured on
    the benchmark's BERT-base-shaped random Detoxify (100 demo texts, one text per pass, Dec 4, not quiet; error
    variance of the scores over the fp32 scores' variance): int8 everywhere 0.031 (Pearson 0.985); only one group int8,
    the rest fp32: query/key/value 0.0004, attention output 0.0035, feed-forward input 0.021, output 0.019. A whole
    group in bfloat16 bought too little: the feed-forward input 0.019 (0.991), the output 0.024, both 0.004 (0.998,
    but then two thirds of the work in bfloat16); an activation scale per token instead of per pass (emulated) 0.020
    (0.990). The first position's rows in fp32 in every layer but query/key/value: 0.0008 (0.9996); with query/key/value
    too the same, 10% slower; in bfloat16 instead of fp32 0.0029 (0.9986). Cost: one row of each product in fp32, a
    matrix-vector product that streams the layer's fp32 weights from memory (about 250 MB a text for BERT-base):
    0.71-0.78x the int8 twin's texts/s without it (same-process A/B, one thread, 100 texts), bfloat16 rows 0.82-0.93x;
    the fp32 weights stay in memory beside the int8 ones."""

    def __init__(self, quantized: torch.nn.Module, fp32: torch.nn.Linear) -> None:
        super().__init__()
        self.quantized = quantized
        self.fp32 = fastest_fp32(torch.nn.Sequential(fp32))[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self.quantized(x)
        output[..., :1, :] = self.fp32(x[..., :1, :])
        return output
