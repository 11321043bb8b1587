"""A language model whose forward does more than its output layer (Cohere scales its logits by `logit_scale`)
is run whole: the perplexity scorer's shortcut (output layer only on predicted positions) must not apply to it. And
where the shortcut applies, its output layer fused with the log-sum-exp a vocabulary slice at a time (fp32 and int8)
scores as the whole layer does."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, CohereConfig, CohereForCausalLM

from metrics.base import gelu_algorithm, onednn_prepack_available, quantize_linear_layers
from metrics.lm_perplexity import VOCABULARY_SLICE, CausalLMPerplexityScorer, _head_scorer
from metrics.torch_layers import GELU_ROWS, SigmoidTanhGELU
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


# --- the output layer fused with the log-sum-exp, a vocabulary slice at a time --------------------------------------

WIDE_VOCABULARY = 5_000  # three slices of VOCABULARY_SLICE (2,048), the last one short


@pytest.mark.parametrize("whole", [False, True], ids=["fused-slices", "any-other-layer-whole"])
def test_output_layer_matches_float64_cross_entropy(whole: bool) -> None:
    torch.manual_seed(1)
    linear = torch.nn.Linear(16, WIDE_VOCABULARY)
    head = torch.nn.Sequential(linear) if whole else linear  # not a plain nn.Linear: run whole, WHOLE_HEAD_ROWS a time
    rows = torch.randn(300, 16) * 3
    edges = torch.tensor([0, VOCABULARY_SLICE - 1, VOCABULARY_SLICE, WIDE_VOCABULARY - 1])
    targets = torch.cat([edges, torch.randint(0, WIDE_VOCABULARY, (296,))])
    with torch.inference_mode():
        nll = _head_scorer(head)(rows, targets)
        logits = rows.double() @ linear.weight.double().T + linear.bias.double()
    assert len({int(t) // VOCABULARY_SLICE for t in targets}) == 3  # targets in every slice
    assert nll.double() == pytest.approx(F.cross_entropy(logits, targets, reduction="none"), rel=1e-5, abs=1e-5)


class _Holder(torch.nn.Module):
    """A module with a `device`, as `quantize_linear_layers` expects of a model."""

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer = layer
        self.device = torch.device("cpu")


def test_int8_output_layer_in_slices_equals_the_whole_quantised_layer() -> None:
    torch.manual_seed(2)
    head = quantize_linear_layers(_Holder(torch.nn.Linear(16, WIDE_VOCABULARY)))[0].layer
    rows = torch.randn(9, 16)
    targets = torch.tensor([0, 5, VOCABULARY_SLICE + 3, 3_000, 4_095, 4_096, 4_500, WIDE_VOCABULARY - 1, 17])
    with torch.inference_mode():
        nll = _head_scorer(head)(rows, targets)
        whole = F.cross_entropy(head(rows), targets, reduction="none")  # the same int8 layer, all logits at once
    assert nll == pytest.approx(whole, rel=1e-6, abs=1e-6)


@pytest.fixture(scope="module")
def wide_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 whose output layer spans several vocabulary slices."""
    return build_causal_lm(tmp_path_factory.mktemp("wide-lm") / "gpt2", n_positions=64, model_vocab=WIDE_VOCABULARY)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_wide_output_layer_scores_as_the_whole_model(wide_lm: Path, precision: str) -> None:
    scorer = CausalLMPerplexityScorer(str(wide_lm), device="cpu", precision=precision)
    values = scorer.score(TEXTS).values
    tokenizer = AutoTokenizer.from_pretrained(wide_lm)
    for text, value in zip(TEXTS, values, strict=True):
        ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer.encode(text, add_special_tokens=False)]])
        with torch.inference_mode():  # the scorer's own (int8: quantised) model, whole, its logits all at once
            logits = scorer._model(input_ids=ids, use_cache=False).logits
        expected = math.exp(F.cross_entropy(logits[0, :-1], ids[0, 1:]).item())
        assert value == pytest.approx(expected, rel=1e-5)


# --- GPT-2's GELU --------------------------------------------------------------------------------------------------


def tanh_gelu_float64(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's "gelu_new" as its paper writes it, in float64."""
    x = x.double()
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def test_sigmoid_tanh_gelu_is_the_tanh_gelu_computed_in_place() -> None:
    x = torch.linspace(-12.0, 12.0, (3 * GELU_ROWS + 5) * 70).reshape(3 * GELU_ROWS + 5, 70)[torch.randperm(389)]
    expected = tanh_gelu_float64(x)
    gelu = SigmoidTanhGELU()
    with torch.inference_mode():
        y = gelu(x)
    assert y.data_ptr() == x.data_ptr()  # in place: the feed-forward block's product output is used nowhere else
    torch.testing.assert_close(y.double(), expected, rtol=2e-6, atol=1e-6)
    assert (expected.abs() < 1e-3).any() and (expected > 11.0).any()  # both tails and the bend are covered
    assert gelu_algorithm(gelu) == "tanh"  # oneDNN fuses it as the tanh GELU where layers are prepacked


def test_sigmoid_tanh_gelu_recorded_by_autograd_leaves_its_input() -> None:
    x = torch.linspace(-4.0, 4.0, 64, requires_grad=True)
    y = SigmoidTanhGELU()(x)
    assert y.data_ptr() != x.data_ptr() and torch.equal(x.detach(), torch.linspace(-4.0, 4.0, 64))
    torch.testing.assert_close(y.detach().double(), tanh_gelu_float64(x.detach()), rtol=1e-5, atol=1e-6)


def test_gpt2_feed_forward_runs_the_in_place_gelu(wide_lm: Path) -> None:
    """Each feed-forward block's GELU is the in-place one; where its first product runs prepacked, oneDNN applies it
    (as the tanh GELU) to that product's output and the block's activation is the identity."""
    scorer = CausalLMPerplexityScorer(str(wide_lm), device="cpu")
    scorer.score(TEXTS)
    blocks = [block for block in scorer._model.modules() if type(block).__name__ == "GPT2MLP"]
    assert blocks
    for block in blocks:
        if onednn_prepack_available():
            assert isinstance(block.act, torch.nn.Identity) and block.c_fc.gelu == "tanh"
            assert type(block.c_fc.activation) is SigmoidTanhGELU
        else:
            assert type(block.act) is SigmoidTanhGELU
