"""Production toxicity: Detoxify's `toxicity` output (sigmoid of the model's first-class logit), batched.

Loading offline. A Detoxify checkpoint is a torch-saved dict: `config.arch.args` names the transformers
model and tokenizer classes, the hub model id (`model_type`) and the class count; `config.dataset.args.
classes` lists the output classes; `state_dict` holds the weights. detoxify 0.5.4 fetches the config of
`model_type` from the hub even when `huggingface_config_path` is given (unitaryai/detoxify PR #126), so
with a checkpoint *and* a local HF folder we run detoxify's own `get_model_and_tokenizer` with the
folder in place of the hub id: config (with the checkpoint's class count) and tokenizer come from the
folder, weights from the checkpoint, nothing from the network. Otherwise `Detoxify(...)` loads as usual.

Identity: the id names detoxify's version, the model type, a hash of the weights, config and tokenizer
actually loaded, the token cap and the numeric variant (`detoxify-0.5.4:original:w3f9a1c2e7b:max512:fp32`), so it is
known only once the model is loaded (reading `id` loads it). `precision` picks the numeric scheme, each a scorer of
its own whose id names it: `fp32`; `int8`, the encoder's linear layers dynamically quantised, their outputs at the
first position (the one the classifier reads) recomputed in fp32 but for attention's query, key and value, and the
pooler and output layer (one position per text) in fp32, one text per forward pass
(`...:max512:int8-a8-w8pc-fp32first-fp32head`, `metrics.base.quantize_linear_layers`), on any CPU; `bf16`, the
encoder's linear layers in bfloat16 and the head fp32, batched like fp32 (`...:max512:bf16-fp32head`,
`metrics.base.bfloat16_encoder`), only where the CPU multiplies bfloat16 natively (elsewhere a ValueError naming the
setting: emulated bfloat16 is slower than fp32). Measured on a BERT-base-shaped random Detoxify (bench.bench_scorers,
demo texts): Pearson with fp32 0.998 for bf16 (AVX-512 machine), 0.985 for int8 without the fp32 first position
(`int8-a8-w8pc-fp32head`, rows scored before Dec 4 midday keep that id) and 0.9996 with it; their speed against fp32
is in the README.
The fp32 variant runs its linear layers through oneDNN with prepacked weights where that is faster
(`metrics.base.fastest_fp32`; the same id: the same products summed in another order), the bfloat16 layers likewise.

Speed: on a CPU the encoder is compute-bound, so what counts is how many token positions it runs. Every
distinct text is tokenized once (cut to the token cap), the texts are sorted by token count and batched in
that order under a text and a padded-token budget, so a batch pads only to its own longest text; results go
back to input order. A text gets the same number in any batch as on its own (padding is masked).
"""

from __future__ import annotations

from typing import Any

from metrics.base import (
    LazyModelScorer,
    Outcome,
    bfloat16_encoder,
    check_precision,
    fastest_fp32,
    isolate_failures,
    length_batches,
    quantize_linear_layers,
    require_native_bf16,
    resolve_device,
)
from metrics.identity import BF16, FP32, INT8, PRECISIONS, model_scorer_id, weights_digest

DETOXIFY_MODELS = ("original", "unbiased", "multilingual", "original-small", "unbiased-small")
TOXICITY_CLASS = "toxicity"
# detoxify renames the Jigsaw class names the same way when it loads a checkpoint.
CLASS_RENAMES = {"toxic": "toxicity", "identity_hate": "identity_attack", "severe_toxic": "severe_toxicity"}
# Models whose position ids start after the padding index, so fewer positions are usable.
PADDING_OFFSET_MODELS = {"roberta", "xlm-roberta", "camembert"}
UNBOUNDED_TOKENIZER = 1_000_000  # transformers' "no limit" sentinel is far above any real window


class DetoxifyScorer(LazyModelScorer):
    metric = "toxicity"

    def __init__(
        self,
        model_type: str = "original",
        checkpoint: str | None = None,
        hf_dir: str | None = None,
        device: str = "auto",
        batch_size: int = 32,
        max_batch_tokens: int = 8192,
        max_tokens: int | None = None,
        precision: str = FP32,
        prepack: bool = True,
    ) -> None:
        if model_type not in DETOXIFY_MODELS:
            choices = ", ".join(DETOXIFY_MODELS)
            raise ValueError(f"Unknown Detoxify model '{model_type}'; choose one of {choices}.")
        if batch_size < 1 or max_batch_tokens < 1:
            raise ValueError(
                f"batch_size and max_batch_tokens must be at least 1, got {batch_size}, {max_batch_tokens}"
            )
        if max_tokens is not None and max_tokens < 2:
            raise ValueError(f"max_tokens must be at least 2 (the special tokens), got {max_tokens}")
        self.model_type = model_type
        self.max_tokens = max_tokens  # None: the model's whole window
        self.precision = check_precision(precision, PRECISIONS)  # fp32, int8 or bf16 (see the module's docstring)
        self.prepack = prepack  # fp32: oneDNN prepacked linear layers where faster (metrics.base.fastest_fp32)
        self.checkpoint = checkpoint
        self.hf_dir = hf_dir
        self.device = device
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens  # padded tokens per forward pass (attention grows with length²)
        self._model: Any = None
        self._tokenizer: Any = None
        self._column = 0
        self._max_length = 512
        self._id = ""

    def _load(self) -> None:
        if self._model is not None:
            return
        device = resolve_device(self.device)
        if self.checkpoint is not None and self.hf_dir is not None:
            model, tokenizer, class_names = _load_local(self.checkpoint, self.hf_dir, device)
        else:
            from detoxify import Detoxify

            loaded = Detoxify(
                self.model_type,
                checkpoint=self.checkpoint,
                device=device,
                huggingface_config_path=self.hf_dir,
            )
            model, tokenizer, class_names = loaded.model, loaded.tokenizer, loaded.class_names
        if TOXICITY_CLASS not in class_names:
            raise ValueError(f"The Detoxify model has no '{TOXICITY_CLASS}' output (it has {class_names}).")
        self._column = class_names.index(TOXICITY_CLASS)
        window = _input_window(model.config, tokenizer)
        self._max_length = window if self.max_tokens is None else min(window, self.max_tokens)
        digest = weights_digest(model.state_dict(), model.config.to_json_string(), tokenizer)
        self._tokenizer = tokenizer
        model = model.to(device).eval()
        if self.precision == INT8:
            self._model, variant = quantize_linear_layers(model, fp32_head=True, fp32_first_token=True)
        elif self.precision == BF16:
            require_native_bf16()
            self._model, variant = bfloat16_encoder(model)
        else:
            self._model, variant = fastest_fp32(model, self.prepack), FP32
        self._id = model_scorer_id("detoxify", self.model_type, digest, self._max_length, variant)

    def _score_distinct(self, texts: list[str]) -> list[Outcome]:
        outcomes: list[Outcome] = [0.0] * len(texts)
        encoded: dict[int, dict[str, list[int]]] = {}
        for i, outcome in enumerate(isolate_failures(self._encode_all, texts)):
            if isinstance(outcome, BaseException):
                outcomes[i] = outcome
            else:
                encoded[i] = outcome
        lengths = {i: len(features["input_ids"]) for i, features in encoded.items()}
        order = sorted(encoded, key=lengths.__getitem__)
        batches = length_batches(order, lengths, self._texts_per_pass, self.max_batch_tokens)
        passes = self._run_passes(self._predict, [[encoded[i] for i in batch] for batch in batches])
        for batch, results in zip(batches, passes, strict=True):
            for i, outcome in zip(batch, results, strict=True):
                outcomes[i] = outcome
        return outcomes

    def _encode_all(self, texts: list[str]) -> list[dict[str, list[int]]]:
        """Each text's tokens (with the model's special tokens), cut to the cap; no padding yet."""
        encoded = self._tokenizer(texts, truncation=True, max_length=self._max_length)
        return [{key: encoded[key][row] for key in encoded} for row in range(len(texts))]

    def _predict(self, features: list[dict[str, list[int]]]) -> list[float]:
        import torch

        batch = self._tokenizer.pad(features, return_tensors="pt").to(self._model.device)
        with torch.inference_mode():
            logits = self._model(**batch).logits
        return torch.sigmoid(logits[:, self._column].float()).cpu().tolist()


def _load_local(checkpoint: str, hf_dir: str, device: str) -> tuple[Any, Any, list[str]]:
    import torch
    from detoxify.detoxify import get_model_and_tokenizer

    # As detoxify loads it: a pickled dict the operator chose, trusted like any model file.
    loaded = torch.load(checkpoint, map_location=device, weights_only=False)
    if not isinstance(loaded, dict) or "config" not in loaded or "state_dict" not in loaded:
        raise ValueError(f"{checkpoint} is not a Detoxify checkpoint: it lacks 'config' or 'state_dict'.")
    arch = {**loaded["config"]["arch"]["args"], "model_type": hf_dir}
    model, tokenizer = get_model_and_tokenizer(**arch, state_dict=loaded["state_dict"])
    classes = loaded["config"]["dataset"]["args"]["classes"]
    return model, tokenizer, [CLASS_RENAMES.get(name, name) for name in classes]


def _input_window(config: Any, tokenizer: Any) -> int:
    """The most tokens (specials included) the encoder accepts; longer texts are cut to it."""
    window = int(config.max_position_embeddings)
    if getattr(config, "model_type", None) in PADDING_OFFSET_MODELS:
        window -= int(config.pad_token_id) + 1
    tokenizer_limit = int(getattr(tokenizer, "model_max_length", UNBOUNDED_TOKENIZER))
    return min(window, tokenizer_limit) if tokenizer_limit < UNBOUNDED_TOKENIZER else window
