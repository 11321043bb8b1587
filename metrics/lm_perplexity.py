"""Production perplexity: a causal language model's PP = exp(mean negative log-likelihood per token).

Each text is encoded without special tokens and the model's start token (BOS, else EOS, as GPT-2
uses) is put in front, so every text token is predicted, a one-token text included. Texts longer
than the model's window are cut to it. Distinct texts are sorted by token count and batched under a
token budget with right padding; the attention mask keeps padding out of every real position, and the
loss reads only positions that predict a real token, so a text gets the same number in any batch as on
its own. The output layer runs on those positions only (see `_token_nll`), vocabulary-major
(`_nll_vocabulary_major`), and GPT-2's GELU runs as torch's fused kernel (`fuse_gelu`). Where oneDNN with prepacked
weights is faster (`metrics.base.fastest_fp32`), every linear layer and the output layer run through it (the output
layer then rows-major: oneDNN's prepacked product beats the vocabulary-major one); same id, the same products summed
in another order.

Identity: `transformers-5.23.0:gpt2:w0a1b2c3d4e:max1024:fp32` names the library, the model (a hub id or a
folder's name), a hash of the weights, config and tokenizer loaded, the token cap and the numeric variant; reading
`id` loads the model. `precision="int8"` is the dynamically quantised variant, a scorer of its own whose id
names the scheme (`...:int8-a8-w7pc`, see `metrics.base.quantize_linear_layers`),
run one text per forward pass (see `LazyModelScorer._texts_per_pass`). There is no bfloat16 variant: under the
precision setting `bf16` (Detoxify's) this scorer runs fp32 (`metrics.profiles`).
"""

from __future__ import annotations

import os
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
HEAD_ROWS = 128  # positions per pass of the output layer: 128 x 50,257 logits (GPT-2) are 26 MB


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
        self._head: Any = None  # the output layer, run apart from the body (see `_token_nll`), or None
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
        self._head = self._model.get_output_embeddings() if head_of_base else None

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
        for batch in length_batches(scoreable, lengths, self._texts_per_pass, self.max_batch_tokens):
            results = isolate_failures(self._perplexities, [encoded[i] for i in batch])
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
        attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
        for row, ids in enumerate(sequences):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        # Position t predicts token t+1 where that token is real; the start token is never predicted.
        predicting = attention_mask[:, 1:].bool()
        targets = input_ids[:, 1:][predicting]
        row_of = torch.arange(len(sequences)).unsqueeze(1).expand_as(predicting)[predicting]
        with torch.inference_mode():
            nll = self._token_nll(input_ids.to(device), attention_mask.to(device), predicting.to(device), targets)
            sums = torch.zeros(len(sequences), dtype=torch.float64).index_add_(0, row_of, nll.double().cpu())
        return torch.exp(sums / predicting.sum(dim=1)).tolist()

    def _token_nll(self, input_ids: Any, attention_mask: Any, predicting: Any, targets: Any) -> Any:
        """Negative log-likelihood of each predicted token, in (text, position) order.

        The output layer (vocabulary x width, a third of GPT-2-small's arithmetic) runs only on the positions that
        predict a real token, not on padding or each text's last position, and HEAD_ROWS at a time, so its logits
        (a row is 200 KB for GPT-2) are consumed while still in cache instead of filling memory batch-wide.
        """
        import torch
        import torch.nn.functional as F

        targets = targets.to(input_ids.device)
        if self._head is None:  # a model whose forward does more than its output layer: use its logits as they are
            logits = self._model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
            return F.cross_entropy(logits[:, :-1][predicting].float(), targets, reduction="none")
        # No key/value cache: nothing is generated, and filling it costs a copy per layer.
        hidden = self._model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        rows = hidden.last_hidden_state[:, :-1][predicting]
        score = _nll_vocabulary_major if type(self._head) is torch.nn.Linear else _nll
        return torch.cat(
            [
                score(self._head, chunk, chunk_targets)
                for chunk, chunk_targets in zip(rows.split(HEAD_ROWS), targets.split(HEAD_ROWS), strict=True)
            ]
        )


def _nll(head: Any, rows: Any, targets: Any) -> Any:
    """-log softmax(head(rows))[target] per row, the logits laid out as the layer gives them (rows x vocabulary)."""
    import torch.nn.functional as F

    return F.cross_entropy(head(rows).float(), targets, reduction="none")


def _nll_vocabulary_major(head: Any, rows: Any, targets: Any) -> Any:
    """`_nll` for a plain linear output layer, its logits computed as weight @ rows^T (vocabulary x rows): the same
    products, but the 50,257-row weight is the matrix product's long side, which runs the head 1.4x faster here
    (measured on 2 cores, GPT-2-small's head on 128-row chunks: 130 vs 93 GFLOP/s with the log-softmax) than
    rows @ weight^T; the log-sum-exp then reduces over the vocabulary, the first dimension."""
    import torch

    logits = head.weight @ rows.T
    if head.bias is not None:
        logits = logits + head.bias.unsqueeze(1)
    logits = logits.float()
    return torch.logsumexp(logits, dim=0) - logits.gather(0, targets.unsqueeze(0)).squeeze(0)


def fuse_gelu(model: Any) -> Any:
    """GPT-2's "gelu_new" is the tanh GELU written as eight tensor operations, each a pass over the widest
    activations; torch's own tanh GELU computes the same formula in one pass (same values to float rounding)."""
    from transformers.activations import GELUTanh, NewGELUActivation

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, NewGELUActivation):
                setattr(parent, name, GELUTanh())
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
