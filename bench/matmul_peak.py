"""The machine's fp32 matrix-multiply peak on the full profile's own matrix shapes, by each path the fp32 scorers can
take: torch's default matmul (MKL on x86) and oneDNN with prepacked weights (metrics.onednn.PrepackedLinear). The
yardstick bench.bench_scorers measures the model scorers' achieved GFLOP/s against, in the same run."""

from __future__ import annotations

import time
from collections.abc import Callable

from metrics.base import onednn_prepack_available
from metrics.lm_perplexity import HEAD_ROWS

# The matrix products the models run, as (rows, inner, columns): a BERT/GPT-2-small layer's four products
# (attention in, attention out, feed-forward in and out) on batches of 512 and 2,048 token positions, and
# GPT-2's output layer on HEAD_ROWS positions. The peak is the best of them: the yardstick is what this machine
# does on the models' own shapes at their best, not one flattering shape.
LAYER_SHAPES = ((768, 2304), (768, 768), (768, 3072), (3072, 768))  # (inner, columns)
PEAK_SHAPES = (*((rows, inner, cols) for rows in (512, 2048) for inner, cols in LAYER_SHAPES), (HEAD_ROWS, 768, 50_257))


def matmul_peak_gflops(gflop_per_timing: float = 50.0) -> float:
    """The best fp32 GFLOP/s of torch's default matrix multiply (`a @ b`; MKL on x86) over PEAK_SHAPES, each timed 3
    times (about `gflop_per_timing` of repeated products each, an eighth of a second at this machine's peak) after a
    warm-up."""
    import torch

    def product(rows: int, inner: int, cols: int) -> Callable[[], object]:
        left, right = torch.randn(rows, inner), torch.randn(inner, cols)
        return lambda: left @ right

    return best_gflops(product, gflop_per_timing)


def onednn_peak_gflops(gflop_per_timing: float = 50.0) -> float:
    """`matmul_peak_gflops` through oneDNN with the weight prepacked once: the layer the fp32 scorers run
    (metrics.onednn.PrepackedLinear), on dense inputs as the models give it."""
    import torch

    from metrics.base import prepacked_linear

    def product(rows: int, inner: int, cols: int) -> Callable[[], object]:
        layer, left = prepacked_linear()(torch.nn.Parameter(torch.randn(cols, inner)), None), torch.randn(rows, inner)
        return lambda: layer(left)

    with torch.inference_mode():
        return best_gflops(product, gflop_per_timing)


def best_gflops(product: Callable[[int, int, int], Callable[[], object]], gflop_per_timing: float) -> float:
    """The best GFLOP/s of `product(rows, inner, cols)()` over PEAK_SHAPES: a warm-up, then 3 timings each."""
    best = 0.0
    for rows, inner, cols in PEAK_SHAPES:
        run = product(rows, inner, cols)
        run()  # warm up (and pack)
        reps = max(1, round(gflop_per_timing * 1e9 / (2 * rows * inner * cols)))
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(reps):
                run()
            seconds = time.perf_counter() - start
            best = max(best, 2 * rows * inner * cols * reps / seconds / 1e9)
    return best


class Peak:
    """The fp32 matmul peak of each path measured at one point of the run; the machine's peak is the faster one."""

    def __init__(self, default: float, onednn: float | None) -> None:
        self.default, self.onednn = default, onednn
        self.gflops = max(default, onednn or 0.0)

    def describe(self) -> str:
        library = f"torch's default matmul ({matmul_library()})"
        if self.onednn is None:
            return f"{self.gflops:.0f} GFLOP/s ({library}; oneDNN prepacking not used on this CPU)"
        which = "oneDNN prepacked" if self.onednn >= self.default else library
        return (
            f"{self.gflops:.0f} GFLOP/s = {which}, the faster of oneDNN with prepacked weights {self.onednn:.0f} and "
            f"{library} {self.default:.0f} (best of the models' matrix shapes)"
        )


def fastest_matmul_peak() -> Peak:
    """Both fp32 paths' peaks now (oneDNN's only where the scorers would use it, `onednn_prepack_available`)."""
    return Peak(matmul_peak_gflops(), onednn_peak_gflops() if onednn_prepack_available() else None)


def fp32_path() -> str:
    if onednn_prepack_available():
        return "their linear layers through oneDNN with prepacked weights (metrics.base.fastest_fp32)"
    return f"torch's default matmul ({matmul_library()})"


def matmul_library() -> str:
    import torch

    config = torch.__config__.show()
    return "MKL" if "USE_MKL=ON" in config or "Intel(R) oneAPI Math Kernel Library" in config else "its BLAS"
