"""The full profile on tiny random models built here: Detoxify toxicity and causal-LM perplexity.

The models are saved in the real formats and loaded through `build_profile("full", options)`, the
production path; the numbers are checked against a hand-written forward pass per text.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import pickle
import shutil
import threading
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, GPT2LMHeadModel
from transformers.activations import GELUActivation, GELUTanh
from transformers.pytorch_utils import Conv1D

from metrics.base import (
    EMPTY_TEXT,
    Scores,
    bfloat16_encoder,
    bfloat16_layer,
    bfloat16_linear,
    full_range_dynamic_linear,
    gelu_algorithm,
    int8_weight_bits,
    length_batches,
    native_bf16,
    onednn_prepack_available,
    plain_linear_layers,
    prepack_linear_layers,
    prepacked_linear,
    quantize_linear_layers,
    require_native_bf16,
)
from metrics.detoxify_toxicity import DetoxifyScorer
from metrics.lm_perplexity import NO_TOKENS, CausalLMPerplexityScorer
from metrics.profiles import FullProfileOptions, Profile, build_profile
from testkit.tiny_models import (
    JIGSAW_CLASSES,
    DetoxifyFiles,
    build_causal_lm,
    build_detoxify_checkpoint,
    chat_texts,
)

INT8_SCHEME = f"int8-a8-w{int8_weight_bits()}pc"  # 8-bit activations, 7-bit weights where 8 would saturate
DETOXIFY_INT8 = f"{INT8_SCHEME}-fp32first-fp32head"  # precision=int8: encoder int8 (first position fp32), head fp32
DETOXIFY_BF16 = "bf16-fp32head"  # precision=bf16: the encoder bf16, head fp32, where the CPU has native bf16
WINDOW = 64  # both tiny models take 64 positions
LONE_SURROGATE = "this text carries a lone surrogate \ud800 from a JSON escape"  # tokenizers reject it
TEXTS = [*chat_texts(12, seed=3), "Hi", "You are useless, just answer the question!"]


@pytest.fixture(scope="session")
def tiny_detoxify(tmp_path_factory: pytest.TempPathFactory) -> DetoxifyFiles:
    return build_detoxify_checkpoint(tmp_path_factory.mktemp("detoxify"), max_positions=WINDOW)


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_causal_lm(tmp_path_factory.mktemp("lm") / "tiny-gpt2", n_positions=WINDOW)


@pytest.fixture(scope="session")
def full_profile(tiny_detoxify: DetoxifyFiles, tiny_lm: Path) -> Profile:
    # Small batches so a few texts already span several batches of different padded lengths.
    options = FullProfileOptions(
        detoxify_checkpoint=str(tiny_detoxify.checkpoint),
        detoxify_hf_dir=str(tiny_detoxify.hf_dir),
        lm_model=str(tiny_lm),
        device="auto",
        detoxify_batch_size=4,
        lm_batch_size=4,
        lm_max_batch_tokens=160,
    )
    return build_profile("full", options)


def one_at_a_time(scorer: DetoxifyScorer | CausalLMPerplexityScorer, texts: list[str]) -> list[float | None]:
    return [scorer.score([text]).values[0] for text in texts]


def assert_all_scored(scores: Scores, count: int) -> list[float]:
    assert scores.errors == [None] * count
    assert all(value is not None for value in scores.values)
    return [float(value) for value in scores.values if value is not None]


# --- Detoxify ---------------------------------------------------------------------------------------


def manual_toxicity(files: DetoxifyFiles, texts: list[str]) -> list[float]:
    """Sigmoid of the `toxic` logit, one text at a time, from the raw state dict and tokenizer.json."""
    checkpoint = torch.load(files.checkpoint, weights_only=False)
    model = BertForSequenceClassification(BertConfig.from_pretrained(files.hf_dir))
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    tokenizer = Tokenizer.from_file(str(files.hf_dir / "tokenizer.json"))
    column = JIGSAW_CLASSES.index("toxic")
    values = []
    for text in texts:
        ids = tokenizer.encode(text).ids
        if len(ids) > WINDOW:
            ids = [*ids[: WINDOW - 1], ids[-1]]  # keep [SEP] when cutting to the window, as HF truncation does
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits
        values.append(torch.sigmoid(logits[0, column]).item())
    return values


def weights_hash(state_dict: dict[str, torch.Tensor], config: str, tokenizer_dir: Path) -> str:
    """The id's weights hash, recomputed independently: blake2b over config, then each tensor in name order,
    then the tokenizer's definition (without a call's truncation and padding) as canonical JSON."""
    digest = hashlib.blake2b(config.encode(), digest_size=16)
    for name in sorted(state_dict):
        tensor = state_dict[name].contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.numpy().tobytes())
    spec = json.loads(AutoTokenizer.from_pretrained(tokenizer_dir).backend_tokenizer.to_str())
    spec = {key: value for key, value in spec.items() if key not in ("truncation", "padding")}
    digest.update(b"tokenizer|" + json.dumps(spec, sort_keys=True).encode())
    return "w" + digest.hexdigest()[:10]


def test_detoxify_id_names_package_model_weights_cap_and_variant(
    full_profile: Profile, tiny_detoxify: DetoxifyFiles
) -> None:
    assert full_profile.name == "full"
    assert full_profile.toxicity.metric == "toxicity"
    scorer = full_profile.toxicity
    assert isinstance(scorer, DetoxifyScorer)
    scorer_id = scorer.id  # loads the model
    expected = weights_hash(scorer._model.state_dict(), scorer._model.config.to_json_string(), tiny_detoxify.hf_dir)
    assert scorer_id == f"detoxify-0.5.4:original:{expected}:max{WINDOW}:fp32"


def test_detoxify_ids_tell_checkpoints_caps_and_int8_apart(tmp_path: Path, tiny_detoxify: DetoxifyFiles) -> None:
    other = build_detoxify_checkpoint(tmp_path / "other", max_positions=WINDOW, seed=1)

    def scorer_id(files: DetoxifyFiles, **options: object) -> str:
        return DetoxifyScorer(checkpoint=str(files.checkpoint), hf_dir=str(files.hf_dir), **options).id  # type: ignore[arg-type]

    same = scorer_id(tiny_detoxify)
    assert scorer_id(tiny_detoxify) == same  # a reload of the same checkpoint keeps its id
    assert scorer_id(other).split(":")[2] != same.split(":")[2]  # same shape, other weights: another id
    capped = scorer_id(tiny_detoxify, max_tokens=16)
    assert capped == same.replace(f":max{WINDOW}:", ":max16:")
    assert scorer_id(tiny_detoxify, max_tokens=10_000) == same  # a cap above the window is the window
    assert scorer_id(tiny_detoxify, precision="int8", device="cpu") == same.replace(":fp32", f":{DETOXIFY_INT8}")
    if native_bf16():
        assert scorer_id(tiny_detoxify, precision="bf16", device="cpu") == same.replace(":fp32", f":{DETOXIFY_BF16}")
    else:  # emulated bf16 is slower than fp32: the setting is refused, never silently swapped for another scheme
        with pytest.raises(ValueError, match=r"precision=bf16 \(INFERENCE_EXPLORER_PRECISION\)"):
            scorer_id(tiny_detoxify, precision="bf16", device="cpu")
    with pytest.raises(ValueError, match="Unknown precision 'fp16'"):
        DetoxifyScorer(precision="fp16")


def test_bf16_without_native_support_is_a_named_error() -> None:
    with pytest.raises(ValueError, match=r"^precision=bf16 \(INFERENCE_EXPLORER_PRECISION\) needs .*int8 or fp32\.$"):
        require_native_bf16(native=False)
    require_native_bf16(native=True)  # no error where the CPU has it


def test_detoxify_id_names_the_tokenizer(tmp_path: Path, tiny_detoxify: DetoxifyFiles) -> None:
    """The same weights read through a vocabulary with two tokens swapped are another scorer."""
    hf_dir = Path(shutil.copytree(tiny_detoxify.hf_dir, tmp_path / "hf"))
    spec = json.loads((hf_dir / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    first, second = sorted(vocab, key=vocab.get)[-2:]
    vocab[first], vocab[second] = vocab[second], vocab[first]
    (hf_dir / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")

    def scorer_id(folder: Path) -> str:
        return DetoxifyScorer(checkpoint=str(tiny_detoxify.checkpoint), hf_dir=str(folder)).id

    assert scorer_id(hf_dir) != scorer_id(tiny_detoxify.hf_dir)
    assert scorer_id(tiny_detoxify.hf_dir) == scorer_id(tiny_detoxify.hf_dir)  # a reload keeps its id


def test_detoxify_token_cap_truncates(tiny_detoxify: DetoxifyFiles) -> None:
    capped = DetoxifyScorer(checkpoint=str(tiny_detoxify.checkpoint), hf_dir=str(tiny_detoxify.hf_dir), max_tokens=8)
    long_text = TEXTS[0] + " " + TEXTS[1]
    tokenizer = Tokenizer.from_file(str(tiny_detoxify.hf_dir / "tokenizer.json"))
    ids = tokenizer.encode(long_text).ids
    cut = tokenizer.decode(ids[1:7])  # 8 tokens: [CLS], six text tokens, [SEP]
    assert len(tokenizer.encode(cut).ids) == 8
    assert capped.score([long_text]).values[0] == pytest.approx(manual_toxicity(tiny_detoxify, [cut])[0], abs=1e-5)


def test_detoxify_matches_a_manual_forward_pass(full_profile: Profile, tiny_detoxify: DetoxifyFiles) -> None:
    values = assert_all_scored(full_profile.toxicity.score(TEXTS), len(TEXTS))
    assert all(0.0 <= value <= 1.0 for value in values)
    assert values == pytest.approx(manual_toxicity(tiny_detoxify, TEXTS), abs=1e-5)
    assert max(values) - min(values) > 1e-3  # the random model tells texts apart, so the check has teeth


def test_detoxify_batched_equals_one_at_a_time(full_profile: Profile) -> None:
    scorer = full_profile.toxicity
    assert isinstance(scorer, DetoxifyScorer)
    batched = scorer.score(TEXTS).values
    assert batched == pytest.approx(one_at_a_time(scorer, TEXTS), rel=1e-4, abs=1e-6)


def test_detoxify_truncates_long_texts_to_the_window(full_profile: Profile, tiny_detoxify: DetoxifyFiles) -> None:
    long_text = " ".join(chat_texts(30, seed=5))
    assert len(Tokenizer.from_file(str(tiny_detoxify.hf_dir / "tokenizer.json")).encode(long_text).ids) > WINDOW
    value = full_profile.toxicity.score([long_text]).values[0]
    assert value == pytest.approx(manual_toxicity(tiny_detoxify, [long_text])[0], abs=1e-5)


def test_detoxify_failing_text_does_not_spoil_the_batch(full_profile: Profile) -> None:
    texts = [TEXTS[0], LONE_SURROGATE, "", TEXTS[1], None]
    scores = full_profile.toxicity.score(texts)
    assert scores.values[1] is None and scores.values[2] is None and scores.values[4] is None
    assert scores.errors[1] is not None and scores.errors[1].startswith("scorer failed: ")
    assert scores.errors[2] == scores.errors[4] == EMPTY_TEXT
    assert [scores.values[0], scores.values[3]] == pytest.approx(one_at_a_time(full_profile.toxicity, TEXTS[:2]))


def test_detoxify_loads_lazily_and_once(tiny_detoxify: DetoxifyFiles) -> None:
    scorer = DetoxifyScorer(checkpoint=str(tiny_detoxify.checkpoint), hf_dir=str(tiny_detoxify.hf_dir))
    assert scorer._model is None
    assert scorer.score([None, "  "]).errors == [EMPTY_TEXT, EMPTY_TEXT]  # nothing to score: nothing loaded
    assert scorer._model is None
    scorer.score(["first"])
    model = scorer._model
    scorer.score(["second"])
    assert model is not None and scorer._model is model


def test_detoxify_missing_checkpoint_is_a_load_error(tmp_path: Path, tiny_detoxify: DetoxifyFiles) -> None:
    scorer = DetoxifyScorer(checkpoint=str(tmp_path / "missing.ckpt"), hf_dir=str(tiny_detoxify.hf_dir))
    with pytest.raises(FileNotFoundError):
        scorer.score(["some text"])


def test_detoxify_rejects_a_file_that_is_no_detoxify_checkpoint(tmp_path: Path, tiny_detoxify: DetoxifyFiles) -> None:
    not_detoxify = tmp_path / "weights.ckpt"
    torch.save({"weights": torch.zeros(2)}, not_detoxify)
    scorer = DetoxifyScorer(checkpoint=str(not_detoxify), hf_dir=str(tiny_detoxify.hf_dir))
    with pytest.raises(ValueError, match="not a Detoxify checkpoint"):
        scorer.score(["some text"])


# --- causal-LM perplexity ---------------------------------------------------------------------------


def manual_perplexities(folder: Path, texts: list[str]) -> list[float]:
    """exp(HF's own mean loss) on <|endoftext|> + the text's tokens, one text at a time, cut to the window."""
    model = GPT2LMHeadModel.from_pretrained(folder)
    model.eval()
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    start = tokenizer.token_to_id("<|endoftext|>")
    values = []
    for text in texts:
        ids = [start, *tokenizer.encode(text, add_special_tokens=False).ids][:WINDOW]
        input_ids = torch.tensor([ids])
        with torch.no_grad():
            loss = model(input_ids=input_ids, labels=input_ids).loss
        values.append(math.exp(loss.item()))
    return values


def test_lm_id_names_library_folder_weights_cap_and_variant(full_profile: Profile, tiny_lm: Path) -> None:
    scorer = full_profile.perplexity
    assert isinstance(scorer, CausalLMPerplexityScorer)
    assert scorer.metric == "perplexity"
    model = GPT2LMHeadModel.from_pretrained(tiny_lm)
    expected = weights_hash(model.state_dict(), model.config.to_json_string(), tiny_lm)
    assert scorer.id == f"transformers-5.23.0:tiny-gpt2:{expected}:max{WINDOW}:fp32"
    int8 = CausalLMPerplexityScorer(str(tiny_lm), max_tokens=20, precision="int8", device="cpu")
    assert int8.id == scorer.id.replace(f":max{WINDOW}:fp32", f":max20:{INT8_SCHEME}")
    with pytest.raises(ValueError, match="Unknown precision 'bf16' for this scorer; choose one of fp32, int8"):
        CausalLMPerplexityScorer(str(tiny_lm), precision="bf16")  # no bf16 twin (the profile keeps it fp32)
    assert CausalLMPerplexityScorer("gpt2").name == "gpt2"


def test_lm_perplexity_matches_a_manual_loop(full_profile: Profile, tiny_lm: Path) -> None:
    values = assert_all_scored(full_profile.perplexity.score(TEXTS), len(TEXTS))
    assert all(value >= 1.0 for value in values)
    assert values == pytest.approx(manual_perplexities(tiny_lm, TEXTS), rel=1e-4)
    assert max(values) / min(values) > 1.05  # the random model tells texts apart, so the check has teeth


def test_lm_batched_equals_one_at_a_time(full_profile: Profile) -> None:
    scorer = full_profile.perplexity
    assert isinstance(scorer, CausalLMPerplexityScorer)
    texts = [*TEXTS, " ".join(TEXTS[:4])]  # lengths from one token to past the window share batches
    assert scorer.score(texts).values == pytest.approx(one_at_a_time(scorer, texts), rel=1e-4)


def test_lm_scores_a_one_token_text(full_profile: Profile, tiny_lm: Path) -> None:
    tokenizer = Tokenizer.from_file(str(tiny_lm / "tokenizer.json"))
    one_token = next(t for t in ("Hi", "I", "a", "the") if len(tokenizer.encode(t).ids) == 1)
    value = full_profile.perplexity.score([one_token]).values[0]
    assert value == pytest.approx(manual_perplexities(tiny_lm, [one_token])[0], rel=1e-5)


def test_lm_truncates_long_texts_to_the_window(full_profile: Profile, tiny_lm: Path) -> None:
    long_text = " ".join(chat_texts(30, seed=7))
    assert len(Tokenizer.from_file(str(tiny_lm / "tokenizer.json")).encode(long_text).ids) > WINDOW
    value = full_profile.perplexity.score([long_text]).values[0]
    assert value == pytest.approx(manual_perplexities(tiny_lm, [long_text])[0], rel=1e-4)


def test_lm_failing_text_does_not_spoil_the_batch(full_profile: Profile) -> None:
    texts = [TEXTS[0], LONE_SURROGATE, None, TEXTS[1], " "]
    scores = full_profile.perplexity.score(texts)
    assert [scores.values[i] for i in (1, 2, 4)] == [None, None, None]
    assert scores.errors[1] is not None and scores.errors[1].startswith("scorer failed: ")
    assert scores.errors[2] == scores.errors[4] == EMPTY_TEXT
    assert [scores.values[0], scores.values[3]] == pytest.approx(
        one_at_a_time(full_profile.perplexity, TEXTS[:2]), rel=1e-4
    )


def test_lm_without_a_start_token_needs_two_tokens(tiny_lm: Path) -> None:
    scorer = CausalLMPerplexityScorer(str(tiny_lm), device="cpu")
    scorer._load()
    scorer._start_id = None  # as for a tokenizer that names neither BOS nor EOS
    tokenizer = Tokenizer.from_file(str(tiny_lm / "tokenizer.json"))
    one_token = next(t for t in ("Hi", "I", "a", "the") if len(tokenizer.encode(t).ids) == 1)
    scores = scorer.score([one_token, TEXTS[0]])
    assert scores.values[0] is None and scores.errors[0] == NO_TOKENS
    assert scores.values[1] is not None


def test_full_profile_keeps_textstat_for_readability(full_profile: Profile) -> None:
    assert full_profile.readability.id == "textstat-0.7.8"
    assert build_profile("light").readability.id == full_profile.readability.id


# --- speed: length grouping, int8 ---------------------------------------------------------------------


def forward_shapes(model: torch.nn.Module) -> tuple[list[tuple[int, int]], torch.utils.hooks.RemovableHandle]:
    """Record the (texts, padded tokens) shape of every forward pass of `model`."""
    shapes: list[tuple[int, int]] = []

    def record(_module: torch.nn.Module, args: tuple[object, ...], kwargs: dict[str, torch.Tensor]) -> None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        assert isinstance(input_ids, torch.Tensor)
        shapes.append(tuple(input_ids.shape))  # type: ignore[arg-type]

    return shapes, model.register_forward_pre_hook(record, with_kwargs=True)


def sorted_batches(lengths: list[int], size: int, max_batch_tokens: int) -> list[tuple[int, int]]:
    """The shapes length grouping should give: lengths sorted, cut by `length_batches` (tested against a brute
    force in test_metrics_base), each batch padded to its longest."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [(len(run), max(lengths[i] for i in run)) for run in length_batches(order, lengths, size, max_batch_tokens)]


SHUFFLED = [chat_texts(40, seed=9)[i] for i in (5, 0, 17, 3, 33, 12, 8, 27, 1, 38, 21, 14)]


def test_detoxify_batches_texts_of_similar_token_length(tiny_detoxify: DetoxifyFiles) -> None:
    scorer = DetoxifyScorer(checkpoint=str(tiny_detoxify.checkpoint), hf_dir=str(tiny_detoxify.hf_dir), batch_size=4)
    scorer._load()
    tokenizer = Tokenizer.from_file(str(tiny_detoxify.hf_dir / "tokenizer.json"))
    lengths = [min(len(tokenizer.encode(text).ids), WINDOW) for text in SHUFFLED]
    assert len(set(lengths)) > 6  # lengths vary, so an unsorted batching would pad much more
    shapes, hook = forward_shapes(scorer._model.base_model)
    try:
        values = scorer.score(SHUFFLED).values
    finally:
        hook.remove()
    assert shapes == sorted_batches(lengths, 4, scorer.max_batch_tokens)
    assert values == pytest.approx(manual_toxicity(tiny_detoxify, SHUFFLED), abs=1e-5)  # back in input order


def test_lm_batches_texts_of_similar_token_length(tiny_lm: Path) -> None:
    scorer = CausalLMPerplexityScorer(str(tiny_lm), device="cpu", batch_size=4, max_batch_tokens=10_000)
    scorer._load()
    tokenizer = Tokenizer.from_file(str(tiny_lm / "tokenizer.json"))
    lengths = [min(1 + len(tokenizer.encode(text, add_special_tokens=False).ids), WINDOW) for text in SHUFFLED]
    shapes, hook = forward_shapes(scorer._model.base_model)
    try:
        values = scorer.score(SHUFFLED).values
    finally:
        hook.remove()
    assert shapes == sorted_batches(lengths, 4, scorer.max_batch_tokens)
    assert values == pytest.approx(manual_perplexities(tiny_lm, SHUFFLED), rel=1e-4)


def test_lm_padded_token_budget_splits_batches(tiny_lm: Path) -> None:
    scorer = CausalLMPerplexityScorer(str(tiny_lm), device="cpu", batch_size=16, max_batch_tokens=WINDOW)
    scorer._load()
    shapes, hook = forward_shapes(scorer._model.base_model)
    try:
        scorer.score(SHUFFLED)
    finally:
        hook.remove()
    assert sum(texts for texts, _ in shapes) == len(SHUFFLED)
    assert all(texts * tokens <= WINDOW or texts == 1 for texts, tokens in shapes)


@pytest.mark.parametrize(
    ("scorer_kind", "precision"),
    [
        ("detoxify", "int8"),
        pytest.param("detoxify", "bf16", marks=pytest.mark.skipif(not native_bf16(), reason="no native bf16")),
        ("lm", "int8"),
    ],
)
def test_reduced_precision_twin_keeps_input_order_and_stays_near_fp32(
    scorer_kind: str, precision: str, tiny_detoxify: DetoxifyFiles, tiny_lm: Path
) -> None:
    def build(precision: str) -> DetoxifyScorer | CausalLMPerplexityScorer:
        if scorer_kind == "detoxify":
            checkpoint, hf_dir = str(tiny_detoxify.checkpoint), str(tiny_detoxify.hf_dir)
            return DetoxifyScorer(checkpoint=checkpoint, hf_dir=hf_dir, device="cpu", batch_size=4, precision=precision)
        return CausalLMPerplexityScorer(str(tiny_lm), device="cpu", batch_size=4, precision=precision)

    fp32, twin = build("fp32"), build(precision)
    scheme = {"bf16": DETOXIFY_BF16, "int8": DETOXIFY_INT8 if scorer_kind == "detoxify" else INT8_SCHEME}[precision]
    assert twin.id.endswith(f":{scheme}") and fp32.id.endswith(":fp32")
    assert twin.id.removesuffix(scheme) == fp32.id.removesuffix("fp32")
    kinds = set(layer_kinds(twin._model).values())
    dynamic = "int8" in kinds
    assert dynamic == (precision == "int8") and ("bf16" in kinds) == (precision == "bf16")
    assert twin._texts_per_pass == (1 if dynamic else 4)  # int8 runs one text a pass, bf16 batches like fp32
    batched = twin.score(SHUFFLED).values
    # bf16: a batch's shape can change oneDNN's summation order, so an output may round to the neighbouring bf16 step
    assert batched == pytest.approx(one_at_a_time(twin, SHUFFLED), rel=1e-4 if dynamic else 1e-3, abs=1e-6)
    reference = fp32.score(SHUFFLED).values
    assert batched != reference  # really reduced-precision arithmetic ...
    # ... close to its fp32 twin. The tiny Detoxify stand-in (32 wide, init 0.3) moves by 0.004-0.06 under int8
    # depending on its random weights (0.026 with these, over scores spread ~0.4), so 0.05 absolute; now that its
    # tokenizer is the same in every process the outcome no longer changes between runs.
    assert batched == pytest.approx(reference, rel=0.05, abs=0.05)
    # A twin that has scored still copies and pickles (a test's copy, a scorer shipped to a worker), with its scores.
    for copied in (copy.deepcopy(twin), pickle.loads(pickle.dumps(twin))):
        assert copied.id == twin.id and set(layer_kinds(copied._model).values()) == kinds
        assert copied.score(SHUFFLED).values == pytest.approx(batched, rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("scorer_kind", ["detoxify", "lm"])
def test_int8_texts_run_one_per_core_with_the_values_of_one_thread(
    scorer_kind: str, tiny_detoxify: DetoxifyFiles, tiny_lm: Path
) -> None:
    """With 2 torch threads the int8 twin runs its one-text passes on 2 worker threads, each computing with one torch
    thread; the values equal those of the same twin run on one thread in the caller, and the count is restored."""
    if scorer_kind == "detoxify":
        files = tiny_detoxify
        twin: DetoxifyScorer | CausalLMPerplexityScorer = DetoxifyScorer(
            checkpoint=str(files.checkpoint), hf_dir=str(files.hf_dir), device="cpu", precision="int8"
        )
    else:
        twin = CausalLMPerplexityScorer(str(tiny_lm), device="cpu", precision="int8")
    twin.score(["Load the model once."])
    passes: list[tuple[int, int]] = []  # (thread, torch threads) of each forward pass
    hook = twin._model.base_model.register_forward_pre_hook(
        lambda *_: passes.append((threading.get_ident(), torch.get_num_threads()))
    )
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        parallel = twin.score(SHUFFLED).values
        assert torch.get_num_threads() == 2
        workers, passes[:] = list(passes), []
        torch.set_num_threads(1)
        alone = twin.score(SHUFFLED).values
    finally:
        hook.remove()
        torch.set_num_threads(threads)
    assert len(workers) == len(SHUFFLED) and {count for _, count in workers} == {1}
    assert len({thread for thread, _ in workers}) == 2 and threading.get_ident() not in dict(workers)
    assert passes == [(threading.get_ident(), 1)] * len(SHUFFLED)
    assert parallel == alone and None not in parallel


def test_int8_layers_quantise_activations_to_8_bits_and_weights_per_channel() -> None:
    """The layer's output matches an independent computation of the scheme its name states (the input rounded to 256
    steps between its min and max, 0 included; each output channel's weights to +-2^(bits-1) steps of their own
    scale; multiplied in float64) far closer than fp32 or a neighbouring scheme (7-bit activations, one weight scale
    per matrix): the same rounding, up to the kernel's float32 scales."""
    generator = torch.Generator().manual_seed(3)
    layer = torch.nn.Linear(256, 64)
    with torch.no_grad():
        layer.weight.mul_(torch.linspace(0.1, 3.0, 64).unsqueeze(1))  # channels of very different ranges
    inputs = torch.randn(32, 256, generator=generator)
    model = torch.nn.Sequential(layer)
    model.device = torch.device("cpu")  # type: ignore[assignment]
    quantized, scheme = quantize_linear_layers(copy.deepcopy(model))
    assert scheme == INT8_SCHEME
    assert isinstance(quantized[0], full_range_dynamic_linear())
    with torch.inference_mode():
        got = quantized(inputs).double()
        exact = layer(inputs).double()

    def distance(expected: torch.Tensor) -> float:
        return (got - expected).abs().mean().item()

    stated = distance(rounded_product(layer, inputs, input_levels=256, per_channel=True))
    others = [rounded_product(layer, inputs, input_levels=128, per_channel=True), exact]
    others.append(rounded_product(layer, inputs, input_levels=256, per_channel=False))
    assert stated < 0.05 * min(distance(other) for other in others)


def rounded_product(layer: torch.nn.Linear, inputs: torch.Tensor, input_levels: int, per_channel: bool) -> torch.Tensor:
    """`layer(inputs)` in float64 with the inputs rounded to `input_levels` steps over their range (0 included) and the
    weights to `int8_weight_bits()` bits, symmetric, with a scale per output channel or one for the matrix."""
    low, high = min(inputs.min().item(), 0.0), max(inputs.max().item(), 0.0)
    step = (high - low) / (input_levels - 1)
    zero = round(-low / step)
    rounded_inputs = ((inputs / step).round() + zero).clamp(0, input_levels - 1).sub(zero).double() * step
    weight = layer.weight.detach().double()
    bound = 2 ** (int8_weight_bits() - 1)
    scales = (weight.abs().amax(dim=1, keepdim=True) if per_channel else weight.abs().max()) / ((2 * bound - 1) / 2)
    rounded_weights = (weight / scales).round().clamp(-bound, bound - 1) * scales
    return rounded_inputs @ rounded_weights.t() + layer.bias.detach().double()


def test_int8_weights_leave_no_product_pair_to_saturate() -> None:
    """Full-range inputs against full-range weights: where FBGEMM adds pairs of 8-bit products in 16 bits (no VNNI),
    8-bit weights would saturate (the layer returned about half the true value); the scheme's weights do not."""
    layer = torch.nn.Linear(256, 4, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.weight[:, 0] = -1.0
    inputs = torch.ones(2, 256)
    inputs[:, 0] = 0.0  # zero point 0: every other input is the top code, 255
    model = torch.nn.Sequential(layer)
    model.device = torch.device("cpu")  # type: ignore[assignment]
    quantized, _ = quantize_linear_layers(model)
    with torch.inference_mode():
        got = quantized(inputs)
    assert got == pytest.approx(torch.full((2, 4), 255.0), rel=0.02)


def detoxify_model(files: DetoxifyFiles) -> tuple[torch.nn.Module, DetoxifyScorer]:
    """A fresh copy of the tiny Detoxify's fp32 model (plain layers, as torch's quantisation takes them), and an fp32
    scorer of it."""
    fp32 = DetoxifyScorer(checkpoint=str(files.checkpoint), hf_dir=str(files.hf_dir), device="cpu", prepack=False)
    fp32._load()
    return copy.deepcopy(fp32._model), fp32


def layer_kinds(model: torch.nn.Module) -> dict[str, str]:
    """What runs each linear layer: "int8" (torch's dynamic quantisation), "bf16" (weights stored in bfloat16) or
    "fp32"."""
    kinds = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.ao.nn.quantized.dynamic.Linear):
            kinds[name] = "int8"
        elif isinstance(module, torch.nn.Linear | bfloat16_linear() | prepacked_linear()):
            kinds[name] = {torch.float32: "fp32", torch.bfloat16: "bf16"}[module.weight.dtype]
    return kinds


def test_detoxify_int8_scheme_runs_the_layers_its_id_names(tiny_detoxify: DetoxifyFiles) -> None:
    """Only the encoder is quantised, pooler and classifier stay fp32; the values equal torch's quantize_dynamic on
    the same layers of a fresh copy."""
    model, fp32 = detoxify_model(tiny_detoxify)
    quantized, scheme = quantize_linear_layers(model, fp32_head=True)
    assert scheme == f"{INT8_SCHEME}-fp32head"
    kinds = layer_kinds(quantized)
    encoder = {name: kind for name, kind in kinds.items() if name.startswith("bert.encoder.")}
    assert len(encoder) == 6 * quantized.config.num_hidden_layers  # q, k, v, attention out, feed-forward in, out
    assert set(encoder.values()) == {"int8"}
    assert kinds["bert.pooler.dense"] == "fp32" and kinds["classifier"] == "fp32"
    expected_model = torch_quantized(detoxify_model(tiny_detoxify)[0], list(encoder))
    assert_scores_equal_the_model(fp32, quantized, expected_model, abs=1e-6)


def torch_quantized(model: torch.nn.Module, names: list[str]) -> torch.nn.Module:
    """`model` with the named linear layers quantised by torch's quantize_dynamic, configured by hand as the int8
    scheme states (8-bit activations, weights symmetric per output channel in `int8_weight_bits()` bits)."""
    bound = 2 ** (int8_weight_bits() - 1)
    weight = torch.ao.quantization.PerChannelMinMaxObserver.with_args(
        dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-bound, quant_max=bound - 1
    )
    activation = torch.ao.quantization.PlaceholderObserver.with_args(dtype=torch.quint8, is_dynamic=True)
    qconfig = torch.ao.quantization.QConfig(activation=activation, weight=weight)
    mapping = {torch.nn.Linear: full_range_dynamic_linear()}
    return torch.ao.quantization.quantize_dynamic(model, dict.fromkeys(names, qconfig), torch.qint8, mapping)


def test_detoxify_int8_twin_runs_its_first_position_in_fp32(tiny_detoxify: DetoxifyFiles) -> None:
    """precision=int8: every encoder layer int8; the attention output and both feed-forward layers (not query, key or
    value) recompute the first position in fp32. The values equal an independent computation: torch's quantize_dynamic
    on a fresh copy, those layers' output at position 0 replaced by the fp32 product of the original weights."""
    model, fp32 = detoxify_model(tiny_detoxify)
    quantized, scheme = quantize_linear_layers(model, fp32_head=True, fp32_first_token=True)
    assert scheme == DETOXIFY_INT8
    kinds = layer_kinds(quantized)
    encoder = {name: kind for name, kind in kinds.items() if name.startswith("bert.encoder.")}
    refined = {name.removesuffix(".fp32") for name, kind in encoder.items() if kind == "fp32"}
    names = ("attention.output.dense", "intermediate.dense", "output.dense")
    layers = quantized.config.num_hidden_layers
    assert refined == {f"bert.encoder.layer.{i}.{name}" for i in range(layers) for name in names}
    assert sum(kind == "int8" for kind in encoder.values()) == 6 * layers
    assert kinds["bert.pooler.dense"] == "fp32" and kinds["classifier"] == "fp32"
    original, _ = detoxify_model(tiny_detoxify)
    int8_layers = [
        name
        for name, module in original.named_modules()
        if name.startswith("bert.encoder.") and isinstance(module, torch.nn.Linear)
    ]
    expected_model = torch_quantized(copy.deepcopy(original), int8_layers)
    for name in refined:
        layer, fp32_layer = expected_model.get_submodule(name), original.get_submodule(name)
        layer.forward = lambda x, int8=layer.forward, exact=fp32_layer: torch.cat(
            [exact(x[..., :1, :]), int8(x)[..., 1:, :]], dim=-2
        )
    assert_scores_equal_the_model(fp32, quantized, expected_model, abs=1e-6)


@pytest.fixture(scope="module")
def tiny_detoxify_soft_attention(tmp_path_factory: pytest.TempPathFactory) -> DetoxifyFiles:
    """A tiny Detoxify with weights drawn 3x narrower than the shared fixture's (0.1 against 0.3; BERT's own is
    0.02): its attention spreads over the text as a trained BERT's mostly does, where the fixture's attends sharply."""
    return build_detoxify_checkpoint(
        tmp_path_factory.mktemp("detoxify-soft"), max_positions=WINDOW, initializer_range=0.1
    )


def test_int8_twin_with_its_first_position_in_fp32_is_closer_to_fp32(
    tiny_detoxify_soft_attention: DetoxifyFiles,
) -> None:
    """What the first position in fp32 is for: the int8 twin's error against fp32 well below the error of the same
    int8 encoder without it (measured: 0.12x the mean absolute error on this model, 0.66x on the sharply attending
    shared fixture; the bench measures the correlation on the real-sized stand-in)."""
    _, fp32 = detoxify_model(tiny_detoxify_soft_attention)
    texts = chat_texts(40, seed=5)
    reference = torch.tensor(fp32.score(texts).values)
    errors = {}
    for first in (False, True):
        model, scorer = detoxify_model(tiny_detoxify_soft_attention)
        scorer._model, scheme = quantize_linear_layers(model, fp32_head=True, fp32_first_token=first)
        scorer.precision = "int8"  # one text per pass, as the twin runs
        errors[scheme] = (torch.tensor(scorer.score(texts).values) - reference).abs().mean().item()
    assert 0 < errors[DETOXIFY_INT8] < 0.5 * errors[f"{INT8_SCHEME}-fp32head"]


def test_detoxify_bf16_scheme_runs_the_layers_its_id_names(tiny_detoxify: DetoxifyFiles) -> None:
    """Every encoder linear layer in bf16, pooler and classifier fp32; the values equal an independent computation:
    the fp32 model's encoder layers swapped by hand for bf16-rounded weights, bias and inputs multiplied in float64,
    the result rounded to bf16."""
    model, fp32 = detoxify_model(tiny_detoxify)
    converted, scheme = bfloat16_encoder(model)
    assert scheme == "bf16-fp32head"
    kinds = layer_kinds(converted)
    encoder = {name: kind for name, kind in kinds.items() if name.startswith("bert.encoder.")}
    assert len(encoder) == 6 * converted.config.num_hidden_layers and set(encoder.values()) == {"bf16"}
    assert kinds["bert.pooler.dense"] == "fp32" and kinds["classifier"] == "fp32"
    expected_model, _ = detoxify_model(tiny_detoxify)
    for name in encoder:
        layer = expected_model.get_submodule(name)
        weight, bias = (tensor.detach().to(torch.bfloat16).double() for tensor in (layer.weight, layer.bias))
        # Prepacked, the feed-forward block's GELU runs inside its first product, before the rounding to bf16.
        fused = onednn_prepack_available() and name.endswith("intermediate.dense")
        after = torch.nn.functional.gelu if fused else (lambda x: x)
        layer.forward = lambda x, w=weight, b=bias, f=after: (
            f(x.to(torch.bfloat16).double() @ w.T + b).to(torch.bfloat16).float()
        )
        if fused:
            expected_model.get_submodule(name.removesuffix(".dense")).intermediate_act_fn = torch.nn.Identity()
    # the summation order differs from oneDNN's, which can move a result by one bf16 step
    assert_scores_equal_the_model(fp32, converted, expected_model, abs=1e-3)


def assert_scores_equal_the_model(
    scorer: DetoxifyScorer, model: torch.nn.Module, expected_model: torch.nn.Module, abs: float
) -> None:
    scorer._model = model
    for text, value in zip(SHUFFLED[:6], one_at_a_time(scorer, SHUFFLED[:6]), strict=True):
        with torch.inference_mode():
            logit = expected_model(**scorer._tokenizer([text], return_tensors="pt")).logits[0, scorer._column]
        assert value == pytest.approx(torch.sigmoid(logit).item(), abs=abs)


def test_bf16_encoder_is_closer_to_fp32_than_an_int8_encoder(tiny_detoxify: DetoxifyFiles) -> None:
    """What the bf16 scheme is for, on the tiny model: its scores' error against fp32 is well below the error with the
    encoder in int8 (the bench measures the correlation on the real-sized stand-in)."""
    _, fp32 = detoxify_model(tiny_detoxify)
    texts = chat_texts(40, seed=5)
    reference = torch.tensor(fp32.score(texts).values)
    errors = {}
    for convert in (bfloat16_encoder, lambda model: quantize_linear_layers(model, fp32_head=True)):
        model, scorer = detoxify_model(tiny_detoxify)
        scorer._model, scheme = convert(model)
        errors[scheme] = (torch.tensor(scorer.score(texts).values) - reference).abs().mean().item()
    assert 0 < errors["bf16-fp32head"] < 0.5 * errors[f"{INT8_SCHEME}-fp32head"]


@pytest.mark.parametrize("build", [bfloat16_linear(), bfloat16_layer], ids=["unpacked", "as_used"])
def test_bfloat16_linear_computes_in_bfloat16(build: object) -> None:
    """Both bfloat16 layers: the unpacked one, and the one the int8 twin uses (prepacked where oneDNN is faster)."""
    generator = torch.Generator().manual_seed(4)
    layer = torch.nn.Linear(96, 32)
    inputs = torch.randn(5, 96, generator=generator)
    bf16 = build(layer)  # type: ignore[operator]
    weight, bias = (tensor.detach().to(torch.bfloat16).double() for tensor in (layer.weight, layer.bias))
    with torch.inference_mode():
        exact = layer(inputs)
        rounded = (inputs.to(torch.bfloat16).double() @ weight.T + bias).float()
        value = bf16(inputs)
    assert value.dtype == torch.float32 and bf16.weight.dtype == torch.bfloat16
    assert not torch.equal(value, exact)
    assert value == pytest.approx(rounded, rel=2**-7, abs=1e-6)  # within one bf16 rounding of the output


# --- the fastest fp32 path (oneDNN prepacked weights) ------------------------------------------------------------

needs_onednn = pytest.mark.skipif(not onednn_prepack_available(), reason="oneDNN prepacking is not faster on this CPU")


def fp32_scorer(kind: str, files: DetoxifyFiles, lm: Path, prepack: bool) -> DetoxifyScorer | CausalLMPerplexityScorer:
    if kind == "detoxify":
        checkpoint, hf_dir = str(files.checkpoint), str(files.hf_dir)
        return DetoxifyScorer(checkpoint=checkpoint, hf_dir=hf_dir, device="cpu", batch_size=4, prepack=prepack)
    return CausalLMPerplexityScorer(str(lm), device="cpu", batch_size=4, prepack=prepack)


def linear_layers(model: torch.nn.Module) -> dict[str, type]:
    kinds = (torch.nn.Linear, Conv1D, prepacked_linear())
    return {name: type(module) for name, module in model.named_modules() if isinstance(module, kinds)}


@pytest.mark.parametrize("kind", ["detoxify", "lm"])
def test_fp32_scorer_runs_the_fastest_path_with_the_plain_paths_scores_and_id(
    kind: str, tiny_detoxify: DetoxifyFiles, tiny_lm: Path
) -> None:
    """Where oneDNN prepacking is faster, every linear layer (GPT-2's output layer included) runs prepacked, else none;
    the scores equal the plain path's to 1e-5 relative (the same fp32 products summed in another order; measured
    1e-7..1e-6) and the id is the same."""
    fast, plain = (fp32_scorer(kind, tiny_detoxify, tiny_lm, prepack) for prepack in (True, False))
    assert fast.id == plain.id and fast.id.endswith(":fp32")
    layers = linear_layers(fast._model)
    expected = prepacked_linear() if onednn_prepack_available() else None
    assert set(layers.values()) == ({expected} if expected else set(linear_layers(plain._model).values()))
    assert prepacked_linear() not in linear_layers(plain._model).values()
    if expected:  # each feed-forward block's GELU runs inside its first product
        fused = [layer.gelu for layer in fast._model.modules() if isinstance(layer, prepacked_linear()) and layer.gelu]
        assert fused == [{"detoxify": "none", "lm": "tanh"}[kind]] * fast._model.config.num_hidden_layers
    if kind == "lm" and expected:
        head = fast._model.get_output_embeddings()
        assert isinstance(head, prepacked_linear())
        assert head.weight is fast._model.get_input_embeddings().weight  # still tied, not a copy
    assert fast._model.state_dict().keys() == plain._model.state_dict().keys()
    values = assert_all_scored(fast.score(SHUFFLED), len(SHUFFLED))
    assert values == pytest.approx(plain.score(SHUFFLED).values, rel=1e-5)
    assert values == pytest.approx(one_at_a_time(fast, SHUFFLED), rel=1e-5)


@needs_onednn
@pytest.mark.parametrize("kind", ["detoxify", "lm"])
def test_prepacked_scorer_copies_and_pickles_after_scoring(
    kind: str, tiny_detoxify: DetoxifyFiles, tiny_lm: Path
) -> None:
    """oneDNN's packed weights cannot be copied or pickled: a scorer that has scored (weights packed) still deep-copies
    and pickles (as tests and Spark's shipping do), and the copy packs again where it runs, with the same scores."""
    scorer = fp32_scorer(kind, tiny_detoxify, tiny_lm, prepack=True)
    expected = scorer.score(SHUFFLED).values
    packed = [layer for layer in scorer._model.modules() if isinstance(layer, prepacked_linear())]
    assert packed and all(layer._packed is not None for layer in packed)
    for copied in (copy.deepcopy(scorer), pickle.loads(pickle.dumps(scorer))):
        layers = [layer for layer in copied._model.modules() if isinstance(layer, prepacked_linear())]
        assert len(layers) == len(packed) and all(layer._packed is None for layer in layers)
        assert copied.id == scorer.id
        assert copied.score(SHUFFLED).values == pytest.approx(expected, rel=1e-6)


@needs_onednn
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prepacked_linear_equals_an_independent_product(dtype: torch.dtype) -> None:
    """A prepacked layer, from a linear layer and from a GPT-2 Conv1D (weight transposed), on 3-D inputs: the product
    in float64 of the inputs and weights rounded to `dtype`, within that dtype's rounding of the output."""
    generator = torch.Generator().manual_seed(9)
    linear = torch.nn.Linear(80, 48)
    conv = Conv1D(48, 80)
    conv.weight.data, conv.bias.data = linear.weight.data.t().contiguous(), linear.bias.data.clone()
    inputs = torch.randn(2, 7, 80, generator=generator)
    weight, bias = (tensor.detach().to(dtype).double() for tensor in (linear.weight, linear.bias))
    exact = (inputs.to(dtype).double() @ weight.T + bias).float()
    tolerance = {"rel": 1e-5, "abs": 1e-5} if dtype == torch.float32 else {"rel": 2**-7, "abs": 1e-3}
    layers = [prepacked_linear()(linear.weight, linear.bias, dtype=dtype)]
    layers.append(prepacked_linear()(conv.weight, conv.bias, dtype=dtype, transposed=True))
    for layer in layers:
        with torch.inference_mode():
            value = layer(inputs)
        assert value.dtype == torch.float32 and value.shape == (2, 7, 48)
        assert value.flatten().tolist() == pytest.approx(exact.flatten().tolist(), **tolerance)


@needs_onednn
@pytest.mark.parametrize(
    "activation", [GELUActivation(), GELUTanh(), torch.nn.GELU(), torch.nn.GELU(approximate="tanh")], ids=str
)
def test_a_gelu_fused_into_a_prepacked_layer_equals_it_applied_after(activation: torch.nn.Module) -> None:
    linear = torch.nn.Linear(64, 96)
    inputs = torch.randn(2, 9, 64, generator=torch.Generator().manual_seed(2))
    layer = prepacked_linear()(linear.weight, linear.bias)
    layer.fuse_gelu(activation, gelu_algorithm(activation))  # type: ignore[arg-type]
    with torch.inference_mode():
        expected = activation(linear(inputs))
        assert layer(inputs).flatten().tolist() == pytest.approx(expected.flatten().tolist(), rel=1e-5, abs=1e-5)
    assert gelu_algorithm(torch.nn.ReLU()) is None


@needs_onednn
def test_quantising_a_prepacked_model_equals_quantising_the_plain_one(tiny_lm: Path) -> None:
    """plain_linear_layers undoes the packing (and GPT-2's Conv1D), so int8 twins come out the same either way."""
    plain = GPT2LMHeadModel.from_pretrained(tiny_lm).eval()
    packed = prepack_linear_layers(copy.deepcopy(plain))
    assert prepacked_linear() in linear_layers(packed).values()
    unpacked = plain_linear_layers(copy.deepcopy(packed))
    assert set(linear_layers(unpacked).values()) == {torch.nn.Linear}
    probe = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    outputs = []
    for model in (plain, packed):
        quantized, _ = quantize_linear_layers(copy.deepcopy(model))
        with torch.inference_mode():
            outputs.append(quantized(input_ids=probe).logits)
    assert torch.equal(outputs[0], outputs[1])
