"""The contract every scorer keeps: texts in, one value or one reason per text out, in input order.

Shared helpers handle what every scorer must do the same way: blank texts get a reason instead of a
value, each distinct text is scored once per batch, and a text that fails never spoils the others.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from metrics.identity import FP32, INT8

EMPTY_TEXT = "empty text"
NOT_A_TEXT = "not a text"
NO_WORDS = "no words"
MAX_REASON_CHARS = 200  # a reason is shown to users: keep it to one short line

# What a scorer makes of one distinct text: a number, or the exception that says why there is none.
Outcome = float | BaseException
Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(frozen=True)
class Scores:
    values: list[float | None]  # one per input text
    errors: list[str | None]  # why a value is None ("empty text", "scorer failed: ..."), else None

    def __post_init__(self) -> None:
        if len(self.values) != len(self.errors):
            raise ValueError(f"{len(self.values)} values but {len(self.errors)} errors")


@runtime_checkable
class Scorer(Protocol):
    id: str  # exact: package and version, and for models weights hash, token cap, variant (metrics.identity)
    metric: str  # "toxicity" | "readability" | "perplexity"

    def score(self, texts: Sequence[str | None]) -> Scores:
        """One value or reason per text. Raises only when the model cannot be loaded (a setup problem)."""
        ...


class UnscorableText(ValueError):
    """Raised for a text the metric is not defined on (e.g. no words); its message is the reason as is."""


def failure_reason(error: BaseException) -> str:
    """One short line for a user: the reason a text got no value, without a stack trace."""
    if isinstance(error, UnscorableText):
        return str(error)
    message = " ".join(str(error).split())
    reason = f"scorer failed: {type(error).__name__}" + (f": {message}" if message else "")
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…"


def blank_reason(text: object) -> str | None:
    """Why a text cannot be scored at all (None, not a string, only whitespace), else None."""
    if text is None:
        return EMPTY_TEXT
    if not isinstance(text, str):
        return NOT_A_TEXT
    return EMPTY_TEXT if not text.strip() else None


def has_text(texts: Sequence[str | None]) -> bool:
    """Whether any text can be scored, i.e. whether a scorer needs its model for this batch at all."""
    return any(blank_reason(text) is None for text in texts)


def score_texts(texts: Sequence[str | None], score_distinct: Callable[[list[str]], list[Outcome]]) -> Scores:
    """Score each distinct non-blank text once with `score_distinct`, then spread results to every position.

    `score_distinct` gets distinct texts and returns one outcome each, in the same order. If it raises
    instead, every text gets that failure as its reason (scorers isolate failing texts themselves first).
    """
    positions: dict[str, int] = {}
    for text in texts:
        if blank_reason(text) is None and text not in positions:
            positions[text] = len(positions)  # type: ignore[index]
    distinct = list(positions)
    outcomes = _call_guarded(score_distinct, distinct)
    values: list[float | None] = []
    errors: list[str | None] = []
    for text in texts:
        reason = blank_reason(text)
        outcome = outcomes[positions[text]] if reason is None else None  # type: ignore[index]
        value, error = _as_result(outcome, reason)
        values.append(value)
        errors.append(error)
    return Scores(values=values, errors=errors)


class LazyModelScorer:
    """A scorer whose model loads on first use: by the first text to score, or by reading its exact id."""

    _id: str = ""
    batch_size: int = 1
    precision: str = FP32  # the numeric scheme: a value of metrics.identity.PRECISIONS this scorer runs

    @property
    def id(self) -> str:
        """Exact id of the loaded model (loads it on first use)."""
        self._load()
        return self._id

    def score(self, texts: Sequence[str | None]) -> Scores:
        if has_text(texts):
            self._load()
        return score_texts(texts, self._score_distinct)

    @property
    def _texts_per_pass(self) -> int:
        """Texts per forward pass. int8 scales activations per pass (over the whole batch tensor, padding included),
        so an int8 text's value would depend on its batch mates: int8 runs one text a pass; bf16 and fp32 batch."""
        return 1 if self.precision == INT8 else self.batch_size

    def _run_passes(
        self, run_batch: Callable[[list[Item]], list[Result]], batches: list[list[Item]]
    ) -> list[list[Result | Exception]]:
        """`isolate_failures(run_batch, batch)` for each batch (one forward pass each), in order. Passes of one text
        run one per core (`one_per_core`): a single text's products are too small to share out between cores."""
        run = functools.partial(isolate_failures, run_batch)
        return one_per_core(run, batches) if self._texts_per_pass == 1 else [run(batch) for batch in batches]

    def _load(self) -> None:
        raise NotImplementedError

    def _score_distinct(self, texts: list[str]) -> list[Outcome]:
        raise NotImplementedError


def score_each(texts: Sequence[str | None], score_one: Callable[[str], float]) -> Scores:
    """`score_texts` for a metric computed one text at a time; one text raising affects only itself."""
    return score_texts(texts, lambda distinct: [_outcome_of(score_one, text) for text in distinct])


def isolate_failures(run_batch: Callable[[list[Item]], list[Result]], items: list[Item]) -> list[Result | Exception]:
    """Run a whole batch; if it raises, run its items one by one so only the failing ones lose a result."""
    try:
        return list(run_batch(items))
    except Exception as error:
        if len(items) == 1:
            return [error]
    return [_outcome_of(lambda item: run_batch([item])[0], item) for item in items]


def one_per_core(run: Callable[[Item], Result], items: list[Item]) -> list[Result]:
    """`[run(item) for item in items]`, computed on as many worker threads as torch has threads, each running torch
    on one thread (torch's thread count is restored after). For passes of one text each (the int8 twins): split
    between 2 cores, each of a text's ~70 small products (GPT-2-small, ~110 tokens: 0.5-2 ms each) ends in a wait for
    the slower core, and the work between them (Python, small elementwise steps) runs on one core while the other
    idles. Measured on the GPT-2-small-shaped int8 twin, 100 demo texts, 2 cores, same process alternating (shared
    machine, Dec 4): one text per core 6.3-7.9 texts/s over 4 runs, one text on both cores 5.1-7.2, and the same
    values to the last bit (a text is still alone in its pass)."""
    import torch

    threads = torch.get_num_threads()
    if threads < 2 or len(items) < 2:
        return [run(item) for item in items]
    try:
        with ThreadPoolExecutor(threads, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            return list(pool.map(run, items))
    finally:
        torch.set_num_threads(threads)  # the workers' setting is process-wide for threads started later


def in_chunks(
    run_batch: Callable[[list[Item]], list[Result]], items: list[Item], size: int
) -> list[Result | Exception]:
    """`isolate_failures` over consecutive chunks of at most `size` items (bounds what a batch holds at once)."""
    outcomes: list[Result | Exception] = []
    for start in range(0, len(items), size):
        outcomes.extend(isolate_failures(run_batch, items[start : start + size]))
    return outcomes


# What a forward pass costs beyond its padded tokens (Python and kernel launches per layer, small matrix products
# running below the CPU's peak), in tokens' worth of time: measured on 2 cores, one 115-token text alone runs at
# about 3/4 of the per-token rate of a batch of thousands of tokens. It decides when a batch is worth more padding.
BATCH_COST_TOKENS = 48


def length_batches(
    order: list[int], lengths: Mapping[int, int] | Sequence[int], batch_size: int, max_batch_tokens: int
) -> list[list[int]]:
    """Consecutive runs of `order` (item indices sorted by token count `lengths[i]`, shortest first), each at most
    `batch_size` items and, padded to its longest, at most `max_batch_tokens` tokens (a longer item goes alone),
    cut where they cost least: padded tokens plus BATCH_COST_TOKENS per batch, minimised exactly (dynamic
    programming over the cut points, O(items x batch_size)).

    Sorting first is what keeps padding small: a batch's items differ in length only as much as neighbours do.
    """
    count = len(order)
    best = [0.0] + [math.inf] * count  # best[end]: least cost of batching order[:end]
    cut = [0] * (count + 1)  # where the last batch of that best batching starts
    for end in range(1, count + 1):
        longest = lengths[order[end - 1]]  # sorted: the batch's last item is its longest
        for start in range(end - 1, max(end - batch_size, 0) - 1, -1):
            size = end - start
            if size > 1 and size * longest > max_batch_tokens:
                break
            cost = best[start] + size * longest + BATCH_COST_TOKENS
            if cost <= best[end]:  # on a tie, the bigger batch
                best[end], cut[end] = cost, start
    batches: list[list[int]] = []
    end = count
    while end > 0:
        batches.append(order[cut[end] : end])
        end = cut[end]
    return batches[::-1]


def _outcome_of(run_one: Callable[[Item], Result], item: Item) -> Result | Exception:
    try:
        return run_one(item)
    except Exception as error:
        return error


def _call_guarded(score_distinct: Callable[[list[str]], list[Outcome]], distinct: list[str]) -> list[Outcome]:
    if not distinct:
        return []
    try:
        outcomes = list(score_distinct(distinct))
    except Exception as error:
        return [error] * len(distinct)
    if len(outcomes) != len(distinct):
        mismatch = RuntimeError(f"{len(outcomes)} results for {len(distinct)} texts")
        return [mismatch] * len(distinct)
    return outcomes


def _as_result(outcome: Outcome | None, blank: str | None) -> tuple[float | None, str | None]:
    if blank is not None:
        return None, blank
    if isinstance(outcome, BaseException):
        return None, failure_reason(outcome)
    try:
        value = float(outcome)  # type: ignore[arg-type]
    except (TypeError, ValueError) as error:
        return None, failure_reason(error)
    if not math.isfinite(value):
        return None, f"scorer failed: non-finite value {value}"
    return value, None


def resolve_device(device: str) -> str:
    """'auto' means the first CUDA device when torch sees one, else the CPU; anything else is kept."""
    if device != "auto":
        return device
    import torch  # only the full profile gets here

    return "cuda" if torch.cuda.is_available() else "cpu"


def quantize_linear_layers(model: Any, fp32_head: bool = False, fp32_first_token: bool = False) -> tuple[Any, str]:
    """The model with int8 weights and dynamically quantised activations in its linear layers (CPU only), and the
    name of that scheme for the scorer id, `int8_scheme()`: activations quantised per forward pass to 8 bits (one
    scale and zero point per pass, `full_range_dynamic_linear`), weights to `int8_weight_bits()` bits with a scale per
    output channel (`int8-a8-w8pc` where the CPU sums 8-bit products exactly, else `int8-a8-w7pc`).

    Measured on the benchmark's BERT-base-shaped random Detoxify on an AVX2-only AMD EPYC (Pearson with fp32 over 30-40
    demo texts, random head): torch's default (7-bit activations, one weight scale per matrix) 0.940; 8-bit activations
    with 7-bit weights, one scale per matrix 0.982, a scale per output channel 0.985-0.987; keeping the feed-forward
    input products fp32 as well 0.992, but then only 1.1x fp32's texts/s. Where the error comes from (Dec 3 evening, all
    100 bench texts, an emulation of the stated rounding and the real layers; error variance over the fp32 scores'
    variance, 0.038 for this scheme): activation rounding almost all of it (8-bit activations alone 0.040, 7-bit
    per-channel weights alone 0.003), spread evenly over the 12 layers (layer 0, 1, 6, 10 or 11 fp32: 0.034-0.043) and
    over the feed-forward products (either one fp32 in every layer: 0.023). The activations have no outliers (range 8.5
    standard deviations per pass, like a Gaussian's), so only finer steps help: a scale and offset per token (range 6.4,
    the token's row shifted and scaled into 0..1 before FBGEMM's per-pass quantisation, then back) gave 0.020 emulated,
    0.027 with float products and 0.032-0.035 through FBGEMM (Pearson 0.982-0.987), at 0.81-0.85x this scheme's texts/s
    (same-process A/B, shared machine: extra passes over every input), so activations stay quantised per pass.

    `fp32_head=True` quantises only the linear layers inside the encoder (names containing `encoder.`) and keeps a
    classifier's pooler and output layer in fp32, suffix `-fp32head` (`int8-a8-w7pc-fp32head`): they run on one
    position per text, a negligible share of the work, yet on a BERT-base-shaped random Detoxify their rounding was
    about a third of the int8-vs-fp32 score error variance.

    `fp32_first_token=True` (with `fp32_head`: a classifier that reads only its first position) recomputes the output
    of each quantised layer but attention's query, key and value (QUERY_KEY_VALUE) at every text's first position in
    fp32 (`first_token_fp32`), suffix `-fp32first` before `-fp32head`: see `first_token_fp32` for why and its cost.

    GPT-2-style `Conv1D` layers (a linear layer with its weight transposed) and prepacked layers become `nn.Linear`
    first (`plain_linear_layers`), or quantisation would skip them.
    """
    import torch
    from torch.ao.quantization import quantize_dynamic

    from metrics.identity import FP32_FIRST, FP32_HEAD

    if model.device.type != "cpu":
        raise ValueError("int8 (dynamic quantisation) runs on the CPU only; set the device to cpu.")
    plain_linear_layers(model)
    linear = [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and (not fp32_head or "encoder." in name)
    ]
    if not linear:
        raise ValueError("The model has no linear layers to quantise (none inside an encoder with fp32_head).")
    layers = {name: int8_qconfig() for name in linear}
    refined = [name for name in linear if fp32_first_token and name.rpartition(".")[2] not in QUERY_KEY_VALUE]
    fp32_layers = {name: model.get_submodule(name) for name in refined}
    mapping = {torch.nn.Linear: full_range_dynamic_linear()}
    quantized = quantize_dynamic(model, layers, dtype=torch.qint8, mapping=mapping, inplace=True)
    for name, fp32 in fp32_layers.items():
        replace_submodule(quantized, name, first_token_fp32()(quantized.get_submodule(name), fp32))
    return quantized, int8_scheme() + (FP32_FIRST if fp32_first_token else "") + (FP32_HEAD if fp32_head else "")


def replace_submodule(model: Any, name: str, module: Any) -> None:
    """Put `module` in the place of `model`'s submodule `name` (a dotted path, as `named_modules` gives it)."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, module)


def int8_scheme() -> str:
    """The int8 scheme's name in scorer ids: `int8-a8-w{bits}pc` (8-bit activations, `int8_weight_bits()`-bit weights
    with a scale per output channel)."""
    from metrics.identity import INT8_A8

    return f"{INT8_A8}-w{int8_weight_bits()}pc"


def int8_qconfig() -> Any:
    """torch's dynamic quantisation settings for `quantize_linear_layers`: activations quint8 per pass (the layer,
    `full_range_dynamic_linear`, uses all 8 bits), weights qint8 symmetric with a scale per output channel, within
    +-2^(bits-1) for `int8_weight_bits()` bits."""
    import torch
    from torch.ao.quantization import PerChannelMinMaxObserver, PlaceholderObserver, QConfig

    bound = 2 ** (int8_weight_bits() - 1)
    weight = PerChannelMinMaxObserver.with_args(
        dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-bound, quant_max=bound - 1
    )
    activation = PlaceholderObserver.with_args(dtype=torch.quint8, is_dynamic=True)
    return QConfig(activation=activation, weight=weight)


def bfloat16_encoder(model: Any) -> tuple[Any, str]:
    """The model with every linear layer inside its encoder (names containing `encoder.`) computing in bfloat16
    (`bfloat16_layer`) and its pooler and classifier in fp32 (on the fastest fp32 path), and the scheme's name for the
    scorer id, `bf16-fp32head`: Detoxify under precision=bf16, which needs a CPU that multiplies bfloat16 natively
    (`native_bf16`, `require_native_bf16`; elsewhere bfloat16 is slower than fp32).

    Why bfloat16 rather than int8 there. Accuracy: bfloat16 rounds each number to 8 significant bits wherever it lies,
    where int8 spends 256 steps on a matrix's whole range; measured layer by layer on the benchmark's BERT-base-shaped
    random Detoxify (only the named layers int8-a8, error variance over fp32 score variance), attention output 0.005,
    feed-forward 0.011-0.035 per group, query/key/value almost none. Pearson with fp32 over 100 demo texts: whole
    encoder int8 0.978-0.984, the encoder in bfloat16 0.998 (and 0.998 with query/key/value in int8, the scheme
    `int8-a8qkv-bf16-fp32head` of Dec 3 morning). Speed: bfloat16 rounds each number on its own, not on a scale of the
    whole batch as dynamic quantisation does, so a text's value does not depend on its batch mates and the twin runs
    length-grouped batches like fp32. Against fp32 through oneDNN with prepacked weights (bench.bench_scorers quiet
    runs, Dec 3, 100 demo texts): this scheme 1.36x fp32's texts/s before the feed-forward GELU ran inside the first
    product and its output stayed bfloat16 (`fuse_gelu_into_linear`), 1.84x after (two runs); query/key/value int8,
    one text per pass, 1.45x (quiet probe, 40 texts); the target is 1.5x.
    """
    import torch

    from metrics.identity import BF16, FP32_HEAD

    encoder = [name for name, module in model.named_modules() if type(module) is torch.nn.Linear and "encoder." in name]
    if not encoder:
        raise ValueError("The model has no linear layers inside an encoder to run in bfloat16.")
    for name in encoder:
        replace_submodule(model, name, bfloat16_layer(model.get_submodule(name)))
    for module in list(model.modules()):
        fuse_gelu_into_linear(module)
    return fastest_fp32(model), BF16 + FP32_HEAD


def check_precision(precision: str, runs: tuple[str, ...]) -> str:
    """`precision` if this scorer runs it (`runs`, values of metrics.identity.PRECISIONS), else a ValueError."""
    if precision not in runs:
        raise ValueError(f"Unknown precision '{precision}' for this scorer; choose one of {', '.join(runs)}.")
    return precision


def require_native_bf16(native: bool | None = None) -> None:
    """A one-line error naming the setting where bf16 is asked for on a CPU without native bfloat16 (`native`: whether
    it has it, default `native_bf16()`): there bfloat16 products are emulated, slower than fp32, so no silent
    fallback to another scheme."""
    if not (native_bf16() if native is None else native):
        raise ValueError(
            "precision=bf16 (INFERENCE_EXPLORER_PRECISION) needs a CPU that multiplies bfloat16 natively "
            "(AVX512-BF16 or AMX-BF16); this one would emulate it, slower than fp32: set precision to int8 or fp32."
        )


def int8_weight_bits() -> int:
    """8 where FBGEMM sums 8-bit products exactly (AVX512-VNNI sums them in 32 bits), else 7. Without VNNI its kernels
    add pairs of unsigned-8-bit x signed-8-bit products in 16 bits (AVX2's vpmaddubsw), which saturates when both
    factors are near their ends (255 x 127 x 2 > 32,767); torch avoids it by default with 7-bit activations, which
    double the activations' rounding step. Weights within +-64 keep every pair in range (255 x 64 x 2 = 32,640) and
    leave the activations all 8 bits: weights are fixed, quantised once per channel, and their rounding measured far
    below the activations' on the benchmark's models (8- and 7-bit weights gave the same Pearson, 0.985)."""
    import torch

    if torch.backends.quantized.engine in ("x86", "fbgemm") and "avx512_vnni" in cpu_flags():
        return 8
    return 7


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX-BF16) and torch can use it (oneDNN): measured
    here, a BERT-base layer's bfloat16 matrix products run 3-4x fp32's; without those instructions they are emulated,
    slower than fp32."""
    import torch

    return torch.backends.mkldnn.is_available() and bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo), empty where they cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def bfloat16_linear() -> type:
    """`metrics.torch_layers.BFloat16Linear` (imported on first use: torch is needed only by the full profile)."""
    from metrics.torch_layers import BFloat16Linear

    return BFloat16Linear


def full_range_dynamic_linear() -> type:
    """`metrics.torch_layers.FullRangeDynamicLinear`: torch's dynamically quantised linear layer, 8-bit activations."""
    from metrics.torch_layers import FullRangeDynamicLinear

    return FullRangeDynamicLinear


# Attention's input layers by their names in BERT, RoBERTa, XLM-R and ALBERT (Detoxify's models): `first_token_fp32`
# leaves them int8, as the first position's query, key and value rounded changed its scores by almost nothing.
QUERY_KEY_VALUE = frozenset({"query", "key", "value"})


def first_token_fp32() -> type:
    """`metrics.torch_layers.FirstTokenFp32`: an int8 layer whose output at each text's first position is fp32."""
    from metrics.torch_layers import FirstTokenFp32

    return FirstTokenFp32


def onednn_prepack_available() -> bool:
    """Whether linear layers should run through oneDNN with their weights prepacked (`prepack_linear_layers`) rather
    than through torch's default fp32 matmul: where torch has oneDNN and the two ops that multiply by a prepacked
    weight, oneDNN keeps fp32 products in fp32 (`torch.backends.mkldnn.matmul.fp32_precision` not lowered to bf16 or
    tf32), and the CPU has AVX-512. Why AVX-512: oneDNN picks its kernels by the CPU's instruction sets on every
    vendor's CPU, while MKL (torch's default fp32 matmul on x86) takes its AVX-512 kernels only on Intel's; on an AMD
    EPYC with AVX-512 (Zen 5, 2 cores) MKL ran its AVX2 kernels at about 190-210 GFLOP/s and oneDNN with prepacked
    weights at 410-470 on the same shapes (bench.bench_scorers prints both). Without AVX-512 both run AVX2 kernels and
    the plain path is kept: on an AVX2-only AMD EPYC (Zen 3, 2 cores) the BERT-base-shaped Detoxify ran at 0.85x MKL's
    texts/s with oneDNN prepacked layers (same-process A/B, 30 demo texts, shared machine)."""
    import torch

    if not torch.backends.mkldnn.is_available() or "avx512f" not in cpu_flags():
        return False
    if not all(hasattr(torch.ops.mkldnn, op) for op in ("_reorder_linear_weight", "_linear_pointwise")):
        return False
    return getattr(torch.backends.mkldnn.matmul, "fp32_precision", "none") in ("none", "ieee")


def fastest_fp32(model: Any, prepack: bool = True) -> Any:
    """An fp32 model on this machine's fastest fp32 path: its linear layers prepacked for oneDNN where
    `onednn_prepack_available()` (and `prepack`), else as it is. Measured on BERT-base- and GPT-2-small-shaped models
    here (bench.bench_scorers, three quiet runs, Dec 3): 1.9-2.2x the texts/s of the plain path, scores equal to within
    8e-7 relative."""
    return prepack_linear_layers(model) if prepack and onednn_prepack_available() else model


def prepack_linear_layers(model: Any) -> Any:
    """The model (changed in place) with every fp32 `nn.Linear` and GPT-2-style `Conv1D` run by `prepacked_linear()`:
    the same products in another summation order (scores equal to about 1e-6 relative), so the fp32 scorer id does not
    name the kernel library, as it names neither the thread count nor the batch, which move the last bits the same way.
    Call only where `onednn_prepack_available()`."""
    import torch
    from transformers.pytorch_utils import Conv1D

    layer = prepacked_linear()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear and child.weight.dtype == torch.float32:
                setattr(parent, name, layer(child.weight, child.bias))
            elif isinstance(child, Conv1D):
                setattr(parent, name, layer(child.weight, child.bias, transposed=True))
        fuse_gelu_into_linear(parent)
    return model


# Modules whose forward is exactly `activation(linear(x))`: (linear's attribute, activation's attribute) by class name.
LINEAR_THEN_ACTIVATION = {
    "BertIntermediate": ("dense", "intermediate_act_fn"),
    "RobertaIntermediate": ("dense", "intermediate_act_fn"),
    "XLMRobertaIntermediate": ("dense", "intermediate_act_fn"),
    "GPT2MLP": ("c_fc", "act"),
}


def fuse_gelu_into_linear(module: Any) -> None:
    """In a feed-forward block of LINEAR_THEN_ACTIVATION whose linear layer is prepacked and whose activation is a GELU
    (erf or tanh), oneDNN applies the GELU to the product's output as it writes it (`PrepackedLinear.fuse_gelu`) and
    the block's activation becomes the identity: one pass fewer over the widest activations (3,072 per token), which
    measured 5-7% of both models' time once the products ran prepacked. Same values to float rounding (in a bfloat16
    layer the GELU then runs before the rounding to bfloat16 instead of after it)."""
    import torch

    names = LINEAR_THEN_ACTIVATION.get(type(module).__name__)
    if names is None:
        return
    linear, activation = (getattr(module, name, None) for name in names)
    algorithm = gelu_algorithm(activation)
    if isinstance(linear, prepacked_linear()) and algorithm is not None:
        linear.fuse_gelu(activation, algorithm)
        setattr(module, names[1], torch.nn.Identity())


def gelu_algorithm(activation: Any) -> str | None:
    """oneDNN's name for the GELU `activation` computes ("none": erf, "tanh": the tanh approximation), else None."""
    import functools

    import torch

    if isinstance(activation, torch.nn.GELU):
        return activation.approximate
    function = getattr(activation, "act", None)  # transformers' GELUActivation and GELUTanh wrap torch's gelu
    if function is torch.nn.functional.gelu:
        return "none"
    if isinstance(function, functools.partial) and function.func is torch.nn.functional.gelu:
        return function.keywords.get("approximate", "none")
    return None


def plain_linear_layers(model: Any) -> Any:
    """The model (changed in place) with every `Conv1D` and prepacked layer back as an `nn.Linear` holding the same
    weights (what torch's quantisation recognises)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D | prepacked_linear()):
                transposed = isinstance(child, Conv1D) or child.transposed
                weight = child.weight.detach().t() if transposed else child.weight.detach()
                linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=child.bias is not None)
                linear.weight.data = weight.contiguous()
                if child.bias is not None:
                    linear.bias.data = child.bias.detach()
                fused = getattr(child, "activation", None)  # a GELU fused into the layer is applied after it again
                setattr(parent, name, linear if fused is None else torch.nn.Sequential(linear, fused))
    return model


def bfloat16_layer(linear: Any) -> Any:
    """An `nn.Linear` as a layer computing in bfloat16: prepacked for oneDNN where available (on BERT-base's layer
    shapes here faster than the unpacked bfloat16 product at most shapes, up to 3x on the feed-forward output; a few
    percent on the whole Detoxify twin), else `bfloat16_linear()`."""
    import torch

    if onednn_prepack_available():
        return prepacked_linear()(linear.weight, linear.bias, dtype=torch.bfloat16)
    return bfloat16_linear()(linear)


def prepacked_linear() -> type:
    """`metrics.onednn.PrepackedLinear` (imported on first use: torch is needed only by the full profile)."""
    from metrics.onednn import PrepackedLinear

    return PrepackedLinear
