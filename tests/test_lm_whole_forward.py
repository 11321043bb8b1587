"""A language model whose forward does more than its output layer (Cohere scales its logits by `logit_scale`)
is run whole: the perplexity scorer's shortcut (output layer only on predicted positions) must not apply to it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, CohereConfig, CohereForCausalLM

from metrics.lm_perplexity import CausalLMPerplexityScorer
from testkit.tiny_models import build_causal_lm

TEXTS = ["The cat sat on the mat.", "Refunds are processed within five business days.", "ok"]


@pytest.fixture(scope="module")
def scaled_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Cohere model (logit_scale 3) with the tiny GPT-2's locally trained tokenizer."""
    folder = tmp_path_factory.mktemp("scaled-lm")
    tokenizer = AutoTokenizer.from_pretrained(build_causal_lm(folder / "gpt2", n_positions=64))
    torch.manual_seed(0)
    config = CohereConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        logit_scale=3.0,
        initializer_range=0.3,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=None,
    )
    CohereForCausalLM(config).eval().save_pretrained(folder / "cohere")
    tokenizer.save_pretrained(folder / "cohere")
    return folder / "cohere"


def test_scaled_logits_run_the_whole_model(scaled_lm: Path) -> None:
    scorer = CausalLMPerplexityScorer(str(scaled_lm), device="cpu")
    values = scorer.score(TEXTS).values
    model = CohereForCausalLM.from_pretrained(scaled_lm).eval()
    tokenizer = AutoTokenizer.from_pretrained(scaled_lm)
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    for text, value in zip(TEXTS, values, strict=True):
        ids = torch.tensor([[start, *tokenizer.encode(text, add_special_tokens=False)]])
        with torch.no_grad():
            expected = math.exp(model(input_ids=ids, labels=ids).loss.item())  # transformers' own loss
        assert value == pytest.approx(expected, rel=1e-5)  # the shortcut would drop the scale (3x the logits)
