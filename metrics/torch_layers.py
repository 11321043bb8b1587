"""The linear layers of the full profile's bfloat16 and int8 twins, and GPT-2's in-place GELU. A module of its own,
importing torch at the top, so each layer is a module-level class that pickles, also in a scorer that has scored (the
light profile never imports it; `metrics.base` and `metrics.lm_perplexity` hand the classes out on first use)."""

from __future__ import annotations

import math

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


SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
GELU_ROWS = 128  # rows per step of `SigmoidTanhGELU`: 128 x 3,072 floats (1.5 MB) stay in cache over its passes


class SigmoidTanhGELU(torch.nn.GELU):
    """The tanh GELU, 0.5 x (1 + tanh(z)) with z = sqrt(2/pi) (x + 0.044715 x^3), as x sigmoid(2z): the same function
    (1 + tanh(z) = 2 sigmoid(2z)), computed in place on its input, GELU_ROWS rows at a time. torch's own tanh GELU
    (one fused pass) is slow here: on 2 cores (AVX2) over 111 x 3,072 floats 0.69 ms, this 0.32; over 4,096 x 3,072
    51 ms, this 17 (writing a fresh 50 MB output costs more than the arithmetic); in the whole model it sped the int8
    twin's one-text passes and left fp32 batches neither faster nor slower (A/B, Dec 4). It is also closer to the
    formula in float64: at most 1.4e-6 relative error where |GELU(x)| > 1e-3, against torch's 5e-5. A
    `torch.nn.GELU` with `approximate="tanh"` to everything that asks (oneDNN fuses it as the tanh GELU,
    `metrics.base.gelu_algorithm`); where autograd records, or on a non-contiguous input, it runs torch's kernel out
    of place."""

    def __init__(self) -> None:
        super().__init__(approximate="tanh")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (torch.is_grad_enabled() and x.requires_grad) or not x.is_contiguous() or x.numel() == 0:
            return super().forward(x)
        rows = x.view(-1, x.shape[-1])
        scratch = x.new_empty(min(GELU_ROWS, len(rows)), x.shape[-1])
        for block in rows.split(GELU_ROWS):
            twice_z = torch.mul(block, block, out=scratch[: len(block)])
            twice_z.mul_(2 * SQRT_2_OVER_PI * 0.044715).add_(2 * SQRT_2_OVER_PI).mul_(block)
            block.mul_(twice_z.sigmoid_())
        return x
