"""Production perplexity: a causal language model's PP = exp(mean negative log-likelihood per token).

Each text is encoded without special tokens and the model's start token (BOS, else EOS, as GPT-2
uses) is put in front, so every text token is predicted, a one-token text included. Texts longer
than the model's window are cut to it. Distinct texts are sorted by token count and batched under a
token budget with right padding; causality keeps padding out of every real position (padding follows
each text: no attention mask is needed), and the loss reads only positions that predict a real token,
so a text gets the same number in any batch as on its own. The output layer runs on those positions
only (see `_token_nll`), a slice of the vocabulary at a time fused with the log-sum-exp, so the logits
never fill memory (`_nll_of_slices`; fp32 vocabulary-major), and GPT-2's GELU runs in place as x sigmoid(2z)
(`fuse_gelu`). Where oneDNN with prepacked weights is faster (`metrics.base.fastest_fp32`),
every linear layer and the output layer run through it (the output layer then whole and rows-major:
oneDNN's prepacked product beat the vocabulary-major one); same id, the same products summed in
another order.

Identity: `transformers-5.23.0:gpt2:w0a1b2c3d4e:max1024:fp32` names the library, the model (a hub id or a
folder's name), a hash of the weights, config and tokenizer loaded, the token cap and the numeric variant; reading
`id` loads the model. `precision="int8"` is the dynamically quantised variant, a scorer of its own whose id
names the scheme (`...:int8-a8-w7pc`, see `metrics.base.quantize_linear_layers`), run one text per forward pass
(see `LazyModelScorer._texts_per_pass`), a pass per core (`metrics.base.one_per_core`). There is no bfloat16 variant:
under the precision setting `bf16` (Detoxify's) this scorer runs fp32 (`metrics.profiles`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from metrics.base import (
    LazyModelScorer,
    Outcome,
    UnscorableText,
    check_precision,
    fastest_fp32,
    isolate_failures,
    length_batches,
    quantize_linear_layers,
    resolve_device,
)
from metrics.identity import FP32, INT8, model_scorer_id, weights_digest

UNBOUNDED_TOKENIZER = 1_000_000  # transformers' "no limit" sentinel is far above any real window
NO_TOKENS = "no tokens"
HEAD_ROWS = 512  # positions per pass of the output layer: each pass reads its weight (GPT-2: 154 MB) once
WHOLE_HEAD_ROWS = 128  # rows per product of an output layer run whole (`_nll`): 128 x 50,257 logits are 26 MB
VOCABULARY_SLICE = 2048  # vocabulary entries per product of the fused output layer: 2,048 x 512 logits are 4 MB


class CausalLMPerplexityScorer(LazyModelScorer):
    metric = "perplexity"

    def __init__(
        self,
        model: str = "gpt2",
        device: str = "auto",
        batch_size: int = 16,
        max_batch_tokens: int = 4096,
        max_tokens: int | None = None,
        precision: str = FP32,
        prepack: bool = True,
    ) -> None:
        if batch_size < 1 or max_batch_tokens < 1:
            raise ValueError("batch_size and max_batch_tokens must be at least 1")
        if max_tokens is not None and max_tokens < 2:
            raise ValueError(f"max_tokens must be at least 2 (the start token and one more), got {max_tokens}")
        self.name = os.path.basename(os.path.normpath(model)) if os.path.isdir(model) else model
        self.model = model
        self.max_tokens = max_tokens  # None: the model's whole window
        self.precision = check_precision(precision, (FP32, INT8))
        self.prepack = prepack  # fp32: oneDNN prepacked linear layers where faster (metrics.base.fastest_fp32)
        self._id = ""
        self.device = device
        self.batch_size = batch_size
        # Caps padded tokens per forward pass: the logits alone are tokens × vocabulary floats.
        self.max_batch_tokens = max_batch_tokens
        self._model: Any = None
        # The output layer, run apart from the body on the rows that predict a token (`_token_nll`), or None.
        self._score_head: Callable[[Any, Any], Any] | None = None
        self._tokenizer: Any = None
        self._start_id: int | None = None
        self._pad_id = 0
        self._window = 1024

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = resolve_device(self.device)
        tokenizer = AutoTokenizer.from_pretrained(self.model)
        # transformers 5 keeps a checkpoint's own dtype; half precision is slow or unsupported on CPUs.
        dtype = torch.float32 if torch.device(device).type == "cpu" else "auto"
        model = fuse_gelu(AutoModelForCausalLM.from_pretrained(self.model, dtype=dtype).to(device).eval())
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self._start_id = start
        # Padding fills with a token the model surely knows (a tokenizer's pad id may lie outside the
        # model's vocabulary); which one does not matter, padded positions are masked out.
        self._pad_id = start if start is not None else 0
        window = _context_window(model.config, tokenizer)
        self._window = window if self.max_tokens is None else min(window, self.max_tokens)
        digest = weights_digest(model.state_dict(), model.config.to_json_string(), tokenizer)
        self._tokenizer = tokenizer
        head_of_base = _logits_are_head_of_base(model)  # checked on the plain model, before anything is packed
        self._model, variant = (
            quantize_linear_layers(model) if self.precision == INT8 else (fastest_fp32(model, self.prepack), FP32)
        )
        self._id = model_scorer_id("transformers", self.name, digest, self._window, variant)
        self._score_head = _head_scorer(self._model.get_output_embeddings()) if head_of_base else None

    def _score_distinct(self, texts: list[str]) -> list[Outcome]:
        outcomes: list[Outcome] = [0.0] * len(texts)
        encoded: dict[int, list[int]] = {}
        for i, outcome in enumerate(isolate_failures(self._encode_all, texts)):
            if isinstance(outcome, BaseException):
                outcomes[i] = outcome
            else:
                encoded[i] = self._with_start(outcome)
        for i, ids in encoded.items():
            if len(ids) < 2:
                outcomes[i] = UnscorableText(NO_TOKENS)
        scoreable = sorted((i for i in encoded if len(encoded[i]) >= 2), key=lambda i: len(encoded[i]))
        lengths = {i: len(ids) for i, ids in encoded.items()}
        batches = length_batches(scoreable, lengths, self._texts_per_pass, self.max_batch_tokens)
        passes = self._run_passes(self._perplexities, [[encoded[i] for i in batch] for batch in batches])
        for batch, results in zip(batches, passes, strict=True):
            for i, outcome in zip(batch, results, strict=True):
                outcomes[i] = outcome
        return outcomes

    def _encode_all(self, texts: list[str]) -> list[list[int]]:
        room = self._window - (1 if self._start_id is not None else 0)  # the start token takes a position
        return self._tokenizer(texts, add_special_tokens=False, truncation=True, max_length=room)["input_ids"]

    def _with_start(self, ids: Any) -> list[int]:
        with_start = [self._start_id, *ids] if self._start_id is not None else list(ids)
        return with_start[: self._window]

    def _perplexities(self, sequences: list[list[int]]) -> list[float]:
        import torch

        device = self._model.device
        longest = max(len(ids) for ids in sequences)
        input_ids = torch.full((len(sequences), longest), self._pad_id, dtype=torch.long)
        real = torch.zeros((len(sequences), longest), dtype=torch.bool)
        for row, ids in enumerate(sequences):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            real[row, : len(ids)] = True
        # Position t predicts token t+1 where that token is real; the start token is never predicted.
        predicting = real[:, 1:]
        targets = input_ids[:, 1:][predicting]
        row_of = torch.arange(len(sequences)).unsqueeze(1).expand_as(predicting)[predicting]
        with torch.inference_mode():
            nll = self._token_nll(input_ids.to(device), predicting.to(device), targets)
            sums = torch.zeros(len(sequences), dtype=torch.float64).index_add_(0, row_of, nll.double().cpu())
        return torch.exp(sums / predicting.sum(dim=1)).tolist()

    def _token_nll(self, input_ids: Any, predicting: Any, targets: Any) -> Any:
        """Negative log-likelihood of each predicted token, in (text, position) order.

        No attention mask: padding only follows a text, and the model's causal mask already keeps every position
        from attending to any later one, so no real position sees padding. Without a padding mask, attention runs
        as a plain causal product (`is_causal`), which skips the blocks above the diagonal and builds no mask.

        The output layer (vocabulary x width, a third of GPT-2-small's arithmetic) runs only on the positions that
        predict a real token, not on padding or each text's last position, HEAD_ROWS at a time (`_head_scorer`).
        """
        import torch
        import torch.nn.functional as F

        targets = targets.to(input_ids.device)
        if self._score_head is None:  # a model whose forward does more than its output layer: its logits as they are
            logits = self._model(input_ids=input_ids, use_cache=False).logits
            return F.cross_entropy(logits[:, :-1][predicting].float(), targets, reduction="none")
        # No key/value cache: nothing is generated, and filling it costs a copy per layer.
        hidden = self._model.base_model(input_ids=input_ids, use_cache=False)
        rows = hidden.last_hidden_state[:, :-1][predicting]
        return torch.cat(
            [
                self._score_head(chunk, chunk_targets)
                for chunk, chunk_targets in zip(rows.split(HEAD_ROWS), targets.split(HEAD_ROWS), strict=True)
            ]
        )


def _head_scorer(head: Any) -> Callable[[Any, Any], Any]:
    """The output layer's `_nll` for (rows, targets): a plain linear layer vocabulary-major and a dynamically quantised
    one as int8 slices, both fused with the log-sum-exp (`_nll_of_slices`); any other layer (oneDNN's prepacked)
    whole."""
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    if type(head) is torch.nn.Linear:
        return functools.partial(_nll_vocabulary_major, head)
    if isinstance(head, DynamicLinear):
        return functools.partial(_nll_sliced_layers, _quantized_slices(head))
    return functools.partial(_nll, head)


def _nll(head: Any, rows: Any, targets: Any) -> Any:
    """-log softmax(head(rows))[target] per row, the logits laid out as the layer gives them (rows x vocabulary),
    WHOLE_HEAD_ROWS rows at a time."""
    import torch
    import torch.nn.functional as F

    pairs = zip(rows.split(WHOLE_HEAD_ROWS), targets.split(WHOLE_HEAD_ROWS), strict=True)
    return torch.cat([F.cross_entropy(head(chunk).float(), chosen, reduction="none") for chunk, chosen in pairs])


def _nll_vocabulary_major(head: Any, rows: Any, targets: Any) -> Any:
    """`_nll` for a plain linear output layer: `_nll_of_slices` over `_vocabulary_major_slices`."""
    return _nll_of_slices(_vocabulary_major_slices(head, rows), targets, vocabulary_dim=0)


def _nll_sliced_layers(slices: list[tuple[int, Any]], rows: Any, targets: Any) -> Any:
    """`_nll` for an output layer split into layers of consecutive vocabulary entries, (first entry, layer) each
    (`_quantized_slices`): their logits rows x slice, consumed by `_nll_of_slices` one slice at a time."""
    return _nll_of_slices(((start, layer(rows)) for start, layer in slices), targets, vocabulary_dim=1)


def _vocabulary_major_slices(head: Any, rows: Any) -> Iterator[tuple[int, Any]]:
    """A plain linear layer's logits VOCABULARY_SLICE vocabulary entries at a time, as (first entry, slice x rows):
    weight slice @ rows^T, into one block reused for every slice, so it stays in cache while it is consumed. The
    long weight is the product's first operand (vocabulary-major), which MKL runs far faster than rows @ weight^T."""
    import torch

    weight, bias, columns = head.weight, head.bias, rows.T
    block = rows.new_empty(min(VOCABULARY_SLICE, len(weight)), len(rows))
    for start in range(0, len(weight), VOCABULARY_SLICE):
        part = weight[start : start + VOCABULARY_SLICE]
        logits = torch.mm(part, columns, out=block[: len(part)])
        if bias is not None:
            logits += bias[start : start + len(part)].unsqueeze(1)
        yield start, logits


def _nll_of_slices(slices: Iterable[tuple[int, Any]], targets: Any, vocabulary_dim: int) -> Any:
    """-log softmax(logits)[target] per row, the logits given as consecutive vocabulary slices (first entry, logits)
    that are consumed (overwritten) here: an online log-sum-exp (running maximum, rescaled running sum) and each
    target's logit picked from its slice. The same log-sum-exp as over whole logits, summed in another order, without
    the whole logits in memory: measured on 2 cores with MKL, GPT-2-small's fp32 head on 512 rows with the
    log-sum-exp ran at 161 GFLOP/s in 2,048-entry slices, against 120 on whole 512 x 50,257 logits (a fresh 100 MB
    buffer each, then torch.logsumexp's four passes over memory)."""
    import torch

    peak: Any = None
    total: Any = None
    chosen: Any = None
    for start, block in slices:
        logits = block.float()  # a no-op in fp32; a half-precision model's log-sum-exp still runs in fp32
        width = logits.shape[vocabulary_dim]
        inside = (targets >= start) & (targets < start + width)
        index = (targets - start).clamp(0, width - 1).unsqueeze(vocabulary_dim)
        picked = logits.gather(vocabulary_dim, index).squeeze(vocabulary_dim)
        chosen = picked if chosen is None else torch.where(inside, picked, chosen)
        top = logits.amax(dim=vocabulary_dim)
        top = top if peak is None else torch.maximum(peak, top)
        summed = logits.sub_(top.unsqueeze(vocabulary_dim)).exp_().sum(dim=vocabulary_dim)
        total = summed if total is None else total.mul_(torch.exp(peak - top)).add_(summed)
        peak = top
    return peak + torch.log(total) - chosen


def _quantized_slices(head: Any) -> list[tuple[int, Any]]:
    """A dynamically quantised output layer as layers of VOCABULARY_SLICE consecutive vocabulary entries each, (first
    entry, layer), for `_nll_sliced_layers`: the same int8 weights with their per-channel scales, sliced; the
    activations' scale is taken from the same rows in every slice, so each logit equals the whole layer's."""
    weight, bias = head._packed_params._weight_bias()
    slices = []
    for start in range(0, len(weight), VOCABULARY_SLICE):
        part = weight[start : start + VOCABULARY_SLICE]
        layer = type(head)(head.in_features, len(part), bias_=bias is not None, dtype=weight.dtype)
        layer.set_weight_bias(part, None if bias is None else bias[start : start + len(part)])
        slices.append((start, layer))
    return slices


def fuse_gelu(model: Any) -> Any:
    """GPT-2's "gelu_new" is the tanh GELU written as eight tensor operations, each a pass over the widest
    activations. In a feed-forward block of `metrics.base.LINEAR_THEN_ACTIVATION` (GPT-2's MLP), whose GELU input is
    its first product's output and used nowhere else, it becomes `metrics.torch_layers.SigmoidTanhGELU`, computed in
    place; anywhere else torch's own tanh GELU (one pass). Same function, values equal to float rounding: the scorer id
    stays. (Imported here, on first use: torch is needed only by the full profile.)"""
    from transformers.activations import GELUTanh, NewGELUActivation

    from metrics.base import LINEAR_THEN_ACTIVATION
    from metrics.torch_layers import SigmoidTanhGELU

    for parent in list(model.modules()):
        in_place = LINEAR_THEN_ACTIVATION.get(type(parent).__name__, ("", ""))[1]
        for name, child in list(parent.named_children()):
            if isinstance(child, NewGELUActivation | GELUTanh):
                setattr(parent, name, SigmoidTanhGELU() if name == in_place else GELUTanh())
    return model


def _logits_are_head_of_base(model: Any) -> bool:
    """Whether the model's logits are its output layer applied to its base model's last hidden state (checked on
    a probe sequence): some models scale or cap their logits inside `forward`, and those run whole."""
    import torch

    head = model.get_output_embeddings()
    base = getattr(model, "base_model", None)
    if head is None or base is None or base is model:
        return False
    probe = torch.arange(1, 5, device=model.device).unsqueeze(0) % model.config.vocab_size
    try:
        with torch.inference_mode():
            full = model(input_ids=probe, use_cache=False).logits
            split = head(base(input_ids=probe, use_cache=False).last_hidden_state)
    except Exception:
        return False
    return full.shape == split.shape and torch.allclose(full, split, rtol=1e-4, atol=1e-5)


def _context_window(config: Any, tokenizer: Any) -> int:
    """The most positions the model takes (GPT-2: n_positions, most others: max_position_embeddings)."""
    window = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    tokenizer_limit = int(getattr(tokenizer, "model_max_length", UNBOUNDED_TOKENIZER))
    limits = [int(limit) for limit in (window, tokenizer_limit) if limit and int(limit) < UNBOUNDED_TOKENIZER]
    if not limits:
        raise ValueError("The language model config has no n_positions or max_position_embeddings.")
    return min(limits)
