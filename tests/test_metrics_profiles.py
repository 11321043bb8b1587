"""Profiles: which scorer serves each metric, options from the environment, and cheap construction."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from data_access.config import SETTINGS, SettingError
from metrics.base import Scorer, native_bf16
from metrics.detoxify_toxicity import DetoxifyScorer
from metrics.lm_perplexity import CausalLMPerplexityScorer
from metrics.profanity import ProfanityScorer
from metrics.profiles import SETTING_OPTIONS, FullProfileOptions, build_profile
from metrics.readability import FleschKincaidScorer
from metrics.unigram_perplexity import UnigramPerplexityScorer
from testkit.processes import last_json_line, python_stdout

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_light_profile_scorers_and_ids() -> None:
    profile = build_profile("light")
    assert profile.name == "light"
    assert isinstance(profile.toxicity, ProfanityScorer)
    assert isinstance(profile.readability, FleschKincaidScorer)
    assert isinstance(profile.perplexity, UnigramPerplexityScorer)
    assert [s.id for s in (profile.toxicity, profile.readability, profile.perplexity)] == [
        "alt-profanity-check-1.9.1",
        "textstat-0.7.8",
        "wordfreq-unigram-3.1.1",
    ]
    assert [s.metric for s in (profile.toxicity, profile.readability, profile.perplexity)] == [
        "toxicity",
        "readability",
        "perplexity",
    ]
    assert all(isinstance(s, Scorer) for s in (profile.toxicity, profile.readability, profile.perplexity))


def test_light_profile_scores_every_metric() -> None:
    profile = build_profile("light")
    texts = ["Thanks for reaching out! I can reset your password for you.", None]
    for scorer in (profile.toxicity, profile.readability, profile.perplexity):
        scores = scorer.score(texts)
        assert scores.values[0] is not None and scores.errors[0] is None
        assert scores.values[1] is None and scores.errors[1] == "empty text"


def test_full_profile_takes_its_options() -> None:
    options = FullProfileOptions(
        detoxify_model="unbiased",
        detoxify_checkpoint="/models/detoxify.ckpt",
        detoxify_hf_dir="/models/roberta-base",
        lm_model="/models/my-lm/",
        device="cpu",
        detoxify_batch_size=8,
        lm_batch_size=2,
        lm_max_batch_tokens=512,
    )
    profile = build_profile("full", options)
    toxicity, perplexity = profile.toxicity, profile.perplexity
    assert isinstance(toxicity, DetoxifyScorer) and isinstance(perplexity, CausalLMPerplexityScorer)
    assert toxicity.model_type == "unbiased"
    assert (toxicity.checkpoint, toxicity.hf_dir, toxicity.device, toxicity.batch_size) == (
        "/models/detoxify.ckpt",
        "/models/roberta-base",
        "cpu",
        8,
    )
    assert perplexity.name == "/models/my-lm/"  # not a folder here, so the name is kept as given
    assert (perplexity.device, perplexity.batch_size, perplexity.max_batch_tokens) == ("cpu", 2, 512)
    assert isinstance(profile.readability, FleschKincaidScorer)


def test_lm_id_is_the_folder_basename_for_a_local_model(tmp_path: Path) -> None:
    folder = tmp_path / "my-finetuned-lm"
    folder.mkdir()
    assert CausalLMPerplexityScorer(str(folder) + "/").name == "my-finetuned-lm"


def test_options_from_the_environment() -> None:
    environ = {
        "INFERENCE_EXPLORER_DETOXIFY_MODEL": "multilingual",
        "INFERENCE_EXPLORER_DETOXIFY_CHECKPOINT": "/ckpt/multi.ckpt",
        "INFERENCE_EXPLORER_DETOXIFY_HF_DIR": " /hf/xlm-roberta-base ",
        "INFERENCE_EXPLORER_LM_MODEL": "distilgpt2",
        "INFERENCE_EXPLORER_DEVICE": "cuda:1",
        "INFERENCE_EXPLORER_PRECISION": "int8",
        "INFERENCE_EXPLORER_DETOXIFY_MAX_TOKENS": "256",
        "INFERENCE_EXPLORER_LM_MAX_TOKENS": " 128 ",
        "UNRELATED": "ignored",
    }
    assert FullProfileOptions.from_env(environ, secrets={}) == FullProfileOptions(
        detoxify_model="multilingual",
        detoxify_checkpoint="/ckpt/multi.ckpt",
        detoxify_hf_dir="/hf/xlm-roberta-base",
        lm_model="distilgpt2",
        device="cuda:1",
        precision="int8",
        detoxify_max_tokens=256,
        lm_max_tokens=128,
    )
    assert FullProfileOptions.from_env({"INFERENCE_EXPLORER_LM_MODEL": "  "}, secrets={}) == FullProfileOptions()


def test_options_from_the_secrets_file_and_the_environment_winning() -> None:
    secrets = {"app": {"precision": "int8", "lm_max_tokens": 256, "lm_model": "/models/gpt2"}}
    options = FullProfileOptions.from_env({"INFERENCE_EXPLORER_LM_MAX_TOKENS": "64"}, secrets=secrets)
    assert (options.precision, options.lm_max_tokens, options.lm_model) == ("int8", 64, "/models/gpt2")
    declared = {setting.key for setting in SETTINGS}
    assert set(SETTING_OPTIONS) <= declared  # every option an operator sets is a declared setting


def test_full_profile_without_options_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERENCE_EXPLORER_DETOXIFY_MODEL", "unbiased")
    monkeypatch.setenv("INFERENCE_EXPLORER_LM_MODEL", "distilgpt2")
    profile = build_profile("full")
    assert (profile.toxicity.model_type, profile.perplexity.name) == ("unbiased", "distilgpt2")


@pytest.mark.parametrize(
    ("precision", "detoxify", "lm"),
    [
        ("fp32", "fp32", "fp32"),
        ("int8", "int8", "int8"),  # both models, on every CPU
        # Detoxify's encoder in bf16; the language model has no bf16 twin and stays fp32 (its id says so)
        pytest.param("bf16", "bf16", "fp32", marks=pytest.mark.skipif(not native_bf16(), reason="no native bf16")),
    ],
)
def test_precision_setting_picks_each_model_scorers_scheme(precision: str, detoxify: str, lm: str) -> None:
    options = FullProfileOptions.from_env({"INFERENCE_EXPLORER_PRECISION": precision}, secrets={})
    profile = build_profile("full", options)
    assert (profile.toxicity.precision, profile.perplexity.precision) == (detoxify, lm)


@pytest.mark.skipif(native_bf16(), reason="this CPU multiplies bf16 natively (the error: test_metrics_full)")
def test_bf16_setting_is_refused_where_the_cpu_would_emulate_it() -> None:
    with pytest.raises(ValueError, match=r"^precision=bf16 \(INFERENCE_EXPLORER_PRECISION\)"):
        FullProfileOptions(precision="bf16")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"detoxify_model": "huge"}, "Unknown Detoxify model 'huge'"),
        ({"lm_model": " "}, "language model name is empty"),
        ({"lm_batch_size": 0}, "lm_batch_size must be at least 1"),
        ({"precision": "fp16"}, "Unknown precision 'fp16'; choose one of fp32, int8, bf16"),
        ({"lm_max_tokens": 1}, "lm_max_tokens must be at least 2 tokens"),
    ],
)
def test_bad_options_are_refused_with_a_clear_message(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FullProfileOptions(**options)  # type: ignore[arg-type]


def test_bad_environment_value_is_refused() -> None:
    with pytest.raises(SettingError, match="detoxify_model = 'toxic-bert' from the environment variable"):
        FullProfileOptions.from_env({"INFERENCE_EXPLORER_DETOXIFY_MODEL": "toxic-bert"}, secrets={})
    with pytest.raises(SettingError, match="INFERENCE_EXPLORER_LM_MAX_TOKENS is not accepted: expected a whole number"):
        FullProfileOptions.from_env({"INFERENCE_EXPLORER_LM_MAX_TOKENS": "lots"}, secrets={})
    with pytest.raises(SettingError, match="lm_max_tokens = 1 from the secrets file"):
        FullProfileOptions.from_env({}, secrets={"app": {"lm_max_tokens": 1}})


def test_unknown_profile_name() -> None:
    with pytest.raises(ValueError, match="Unknown scoring profile 'medium'; choose one of light, full"):
        build_profile("medium")


BUILD_SCRIPT = """
import json, sys
from metrics.profiles import build_profile
build_profile("light")
build_profile("full")
from textstat.backend.utils._get_cmudict import get_cmudict

heavy = ("torch", "transformers", "detoxify", "profanity_check", "sklearn", "wordfreq")
loaded = [name for name in heavy if name in sys.modules]
if get_cmudict.cache_info().currsize:  # textstat reads the pronouncing dictionary on first use
    loaded.append("cmudict data")
print(json.dumps(loaded))
"""


def test_building_profiles_loads_no_model() -> None:
    """Every model loads on its scorer's first `score` call, so building a profile is cheap."""
    out = python_stdout(["-c", BUILD_SCRIPT], cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert last_json_line(out) == []
