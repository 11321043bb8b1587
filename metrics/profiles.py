"""Scoring profiles: which scorer computes each metric.

- light: offline, pure-Python/scikit-learn scorers bundled with their packages (profanity-check,
  textstat, wordfreq unigrams); the embedded demo's default.
- full: Detoxify toxicity and a causal language model's perplexity (transformers, torch), with
  textstat for readability.

Building a profile loads nothing: each scorer loads its model on its first `score` call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from metrics.base import Scorer, require_native_bf16
from metrics.detoxify_toxicity import DETOXIFY_MODELS, DetoxifyScorer
from metrics.identity import BF16, FP32, INT8, PRECISIONS
from metrics.injection import InjectionScorer
from metrics.language import LanguageScorer
from metrics.lm_perplexity import CausalLMPerplexityScorer
from metrics.pii import PiiScorer
from metrics.profanity import ProfanityScorer
from metrics.rag_support import LexicalSupportScorer, SupportJudge
from metrics.readability import FleschKincaidScorer
from metrics.refusal import RefusalScorer
from metrics.sentiment import SentimentScorer
from metrics.unigram_perplexity import UnigramPerplexityScorer

PROFILE_NAMES = ("light", "full")
# Options an operator sets, each declared once as a setting of the same name in data_access.config.SETTINGS.
SETTING_OPTIONS = (
    "detoxify_model",
    "detoxify_checkpoint",
    "detoxify_hf_dir",
    "lm_model",
    "device",
    "precision",
    "detoxify_max_tokens",
    "lm_max_tokens",
)


@dataclass(frozen=True)
class Profile:
    name: str  # "light" | "full"
    toxicity: Scorer
    readability: Scorer
    perplexity: Scorer
    # Light and offline in both profiles: ship their rules, lexicons or models inside their packages.
    pii: PiiScorer = field(default_factory=PiiScorer)
    refusal: Scorer = field(default_factory=RefusalScorer)
    injection: Scorer = field(default_factory=InjectionScorer)
    sentiment: Scorer = field(default_factory=SentimentScorer)
    language: LanguageScorer = field(default_factory=LanguageScorer)
    rag_support: SupportJudge = field(default_factory=LexicalSupportScorer)


@dataclass(frozen=True)
class FullProfileOptions:
    detoxify_model: str = "original"  # "original" | "unbiased" | "multilingual" (or the "-small" ALBERTs)
    detoxify_checkpoint: str | None = None  # local Detoxify .ckpt; None downloads the released one
    detoxify_hf_dir: str | None = None  # local HF config + tokenizer folder, for loading offline
    lm_model: str = "gpt2"  # any local folder or model id AutoModelForCausalLM can load
    device: str = "auto"  # "auto" picks CUDA when torch sees it, else the CPU; or "cpu", "cuda:0", ...
    detoxify_batch_size: int = 32
    detoxify_max_batch_tokens: int = 8192
    lm_batch_size: int = 16
    lm_max_batch_tokens: int = 4096
    # "fp32"; "int8": both model scorers dynamically quantised (CPU); "bf16": Detoxify's encoder in bfloat16 (CPUs
    # that multiply it natively), the language model fp32. Each scheme is a scorer of its own, its id names it.
    precision: str = FP32
    detoxify_max_tokens: int | None = None  # token cap per text (None: the model's window); the id records it
    lm_max_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"Unknown precision '{self.precision}'; choose one of {', '.join(PRECISIONS)}.")
        if self.precision == BF16:
            require_native_bf16()
        if self.detoxify_model not in DETOXIFY_MODELS:
            choices = ", ".join(DETOXIFY_MODELS)
            raise ValueError(f"Unknown Detoxify model '{self.detoxify_model}'; choose one of {choices}.")
        if not self.lm_model.strip():
            raise ValueError("The language model name is empty.")
        for name in ("detoxify_batch_size", "detoxify_max_batch_tokens", "lm_batch_size", "lm_max_batch_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        for name in ("detoxify_max_tokens", "lm_max_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 2:
                raise ValueError(f"{name} must be at least 2 tokens, got {getattr(self, name)}.")

    @classmethod
    def from_settings(cls, settings: Any) -> FullProfileOptions:
        """Options from the app's settings (`data_access.config.Settings`); an unset one keeps its default."""
        chosen = {name: getattr(settings, name) for name in SETTING_OPTIONS if getattr(settings, name) is not None}
        return cls(**chosen)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, secrets: Mapping[str, Any] | None = None
    ) -> FullProfileOptions:
        """Options as the settings give them: INFERENCE_EXPLORER_DETOXIFY_MODEL, ..._PRECISION, ..._LM_MAX_TOKENS
        and the rest, else the secrets file's [app] keys of the same names (`secrets=None` reads the files).
        A value a setting does not accept raises `SettingError` naming it."""
        from data_access.config import load_settings  # the one declaration of every setting

        return cls.from_settings(load_settings(environ=environ, secrets=secrets))


def build_profile(name: str, options: FullProfileOptions | None = None) -> Profile:
    """The scorers of profile `name`; `options` set up the full profile (default: from the environment)."""
    if name == "light":
        return Profile(
            name="light",
            toxicity=ProfanityScorer(),
            readability=FleschKincaidScorer(),
            perplexity=UnigramPerplexityScorer(),
        )
    if name == "full":
        options = options if options is not None else FullProfileOptions.from_env()
        return Profile(
            name="full",
            toxicity=DetoxifyScorer(
                options.detoxify_model,
                checkpoint=options.detoxify_checkpoint,
                hf_dir=options.detoxify_hf_dir,
                device=options.device,
                batch_size=options.detoxify_batch_size,
                max_batch_tokens=options.detoxify_max_batch_tokens,
                max_tokens=options.detoxify_max_tokens,
                precision=options.precision,
            ),
            readability=FleschKincaidScorer(),
            perplexity=CausalLMPerplexityScorer(
                options.lm_model,
                device=options.device,
                batch_size=options.lm_batch_size,
                max_batch_tokens=options.lm_max_batch_tokens,
                max_tokens=options.lm_max_tokens,
                precision=INT8 if options.precision == INT8 else FP32,  # no bf16 twin: fp32 under bf16
            ),
        )
    raise ValueError(f"Unknown scoring profile '{name}'; choose one of {', '.join(PROFILE_NAMES)}.")
