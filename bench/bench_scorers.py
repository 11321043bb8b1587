"""Scorer throughput: the light scorers' texts/s and the light profile end to end; the full profile against
the machine's fastest fp32 matrix-multiply peak, and its int8 (and bf16) twins.

Run from the repository root:
    python -m bench.bench_scorers            # both parts, ~5 minutes on 2 quiet cores (much longer under load)
    python -m bench.bench_scorers --light    # light scorers only (~30 s)
    python -m bench.bench_scorers --full --full-texts 100
    python -m bench.bench_scorers --full --models lm   # only the language model's section

Light part: realistic chatbot traffic (the demo generator's parsed prompts and responses), each scorer on every
distinct text once with a fresh scorer (cold memos), then on repeated traffic; the baseline is the plain library
call per text, measured in the same run; then `jobs.scoring.parse_and_score` end to end (target 3,000 requests/s).

Full part: Detoxify with a BERT-base-shaped classifier and GPT-2-small-shaped perplexity, random weights and locally
trained tokenizers (nothing downloaded), on distinct demo responses. For each model: fp32 in length-grouped batches,
fp32 one text per call (the baseline, same texts, same warm-up), the reduced-precision twins, each named by its scorer
id: precision=int8 for both models (dynamic quantisation, one text per pass; Detoxify's encoder only, its first
position and its head fp32) and, for Detoxify where the CPU multiplies bfloat16 natively, precision=bf16 (its encoder
in bfloat16, batched) and, where the scorers prepack for oneDNN, the fp32 scorer on torch's plain matmul
(`prepack=False`, same texts, warm-up and repetitions: what prepacking gains); texts/s, achieved GFLOP/s as a share of
the machine's fp32 matmul peak measured in the same run, padding overhead, peak RSS; then how far the variants' values
agree. Both sides of the share are best readings: a variant's rate is its best of 2 timed runs over all texts (A B C D
D C B A, after a warm-up), the peak the best of its timings (3 per shape, each after a warm-up, at the start and after
each pass over the variants); the mean rate over the runs is printed beside.
FLOP count: see `bench_full`. The peak is the faster of two fp32 paths on the models' own matrix shapes, both
measured at the start and after each pass over the variants: torch's default matmul (MKL here, which runs its AVX2
kernels on this AMD CPU) and oneDNN with prepacked weights (metrics.onednn.PrepackedLinear, the layer the fp32 scorers
run where `metrics.base.onednn_prepack_available()`); the run prints both and names the faster.
With random weights the scores hardly vary between texts, so a twin-vs-fp32 correlation compares rounding
noise with a tiny spread (the run prints the spread): read it with the relative difference, not alone. A real
Detoxify checkpoint spreads its scores over 0..1; so Detoxify's agreement is measured twice: on the random model
(random encoder, random head) and on "random encoder, fitted head", the same checkpoint with its toxicity output
fitted to a labelled set of our own (bench.fitted_head; none of its sentences is a demo text), scored by the same
scorer code with the same twin schemes (their ids name them). The
tokenizers are built from the traffic each run, the same in every process
(testkit.tiny_models builds the WordPiece vocabulary from sorted word counts), so the same traffic gives the same
scorer ids (they hash the tokenizer too). Before that, `tokenizers`' WordPiece trainer gave a slightly different
vocabulary each run and the random-head correlation moved between 0.978 and 0.984 in two quiet runs.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # `python bench/bench_scorers.py` works too

from bench.machine import describe  # noqa: E402
from bench.matmul_peak import fastest_matmul_peak, fp32_path  # noqa: E402
from metrics.base import Scorer, cpu_flags, native_bf16, onednn_prepack_available  # noqa: E402
from metrics.detoxify_toxicity import DetoxifyScorer  # noqa: E402
from metrics.identity import BF16, FP32, INT8  # noqa: E402
from metrics.lm_perplexity import CausalLMPerplexityScorer  # noqa: E402
from metrics.profiles import build_profile  # noqa: E402
from testkit.tiny_models import build_causal_lm, build_detoxify_checkpoint, chat_texts  # noqa: E402

LIGHT_TARGET_RPS = 3_000  # embedded demo: parsing + 4 scores per request, end to end, 2 cores


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def timed(run: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def traffic(rows: int) -> tuple[list[str | None], list[str | None], str]:
    """Prompts and responses of `rows` demo requests (repeats included), or synthetic chat if absent."""
    try:
        from data_access.demo import generate_payload
        from data_access.payload import parse_payload
    except ImportError as error:
        texts: list[str | None] = list(chat_texts(rows, seed=1))
        return texts, list(chat_texts(rows, seed=2)), f"synthetic chat texts (demo generator unavailable: {error})"
    parsed = parse_payload(generate_payload(rows))
    return parsed["prompt_text"].to_pylist(), parsed["response_text"].to_pylist(), "demo generator traffic"


def load_seconds(scorer: Scorer) -> float:
    return timed(lambda: scorer.score(["Load the model once."]))[0]


def distinct(texts: Sequence[str | None]) -> list[str]:
    return list(dict.fromkeys(t for t in texts if t and t.strip()))


# --- light -----------------------------------------------------------------------------------------


def naive_baselines() -> dict[str, Callable[[list[str]], list[float]]]:
    """The obvious library calls each light scorer replaces: per text, or one batch where the API takes one."""
    import profanity_check
    import textstat
    import wordfreq

    def unigram(texts: list[str]) -> list[float]:
        values = []
        for text in texts:
            tokens = wordfreq.tokenize(text, "en")
            logs = [math.log(wordfreq.word_frequency(t, "en", minimum=1e-8)) for t in tokens]
            values.append(math.exp(-sum(logs) / len(logs)) if logs else math.nan)
        return values

    return {
        "toxicity": lambda texts: profanity_check.predict_prob(texts).tolist(),
        "readability": lambda texts: [textstat.flesch_kincaid_grade(t) for t in texts],
        "perplexity": unigram,
    }


def bench_light(rows: int) -> None:
    print(f"\n== Light profile scorers ({rows:,} requests of chat traffic) ==")
    load_time, (prompts, responses, source) = timed(lambda: traffic(rows))
    print(f"texts: {source}, built and parsed in {load_time:.1f} s")
    texts_for = {"toxicity": prompts + responses, "readability": responses, "perplexity": responses}
    light = build_profile("light")
    loads = {metric: load_seconds(getattr(light, metric)) for metric in texts_for}  # before any library import
    baselines = naive_baselines()
    per_request: dict[str, float] = {}
    header = f"{'scorer':<26}{'load s':>8}{'distinct':>10}{'cold t/s':>11}{'naive t/s':>11}{'speed-up':>10}"
    print(header + f"{'traffic t/s':>13}")
    for metric in ("toxicity", "readability", "perplexity"):
        scorer: Scorer = getattr(light, metric)
        load = loads[metric]
        unique = distinct(texts_for[metric])
        cold, scores = timed(lambda s=scorer, u=unique: s.score(u))
        naive, expected = timed(lambda m=metric, u=unique: baselines[m](u))
        check_agreement(scorer.id, scores.values, expected)  # type: ignore[attr-defined]
        fresh: Scorer = getattr(build_profile("light"), metric)
        fresh.score(["Load the model once."])
        warm, _ = timed(lambda s=fresh, t=texts_for[metric]: s.score(t))
        rate = len(texts_for[metric]) / warm
        per_request[metric] = (2 if metric == "toxicity" else 1) * len(responses) / len(texts_for[metric]) / rate
        print(
            f"{scorer.id:<26}{load:>8.2f}{len(unique):>10,}{len(unique) / cold:>11,.0f}"
            f"{len(unique) / naive:>11,.0f}{naive / cold:>9.1f}x{rate:>13,.0f}"
        )
    seconds = sum(per_request.values())
    print(
        f"scoring only, 4 scores per request (2 toxicity, FK, perplexity): {1 / seconds:,.0f} requests/s "
        f"on one core with this traffic's repeats (target {LIGHT_TARGET_RPS:,}/s end to end on 2 cores)"
    )
    bench_new_light(prompts, responses)
    bench_end_to_end(rows)


# Each scorer added with issue 13, and the texts the job gives it.
NEW_SCORERS = (
    ("pii", "prompts + responses"),
    ("refusal", "responses"),
    ("injection", "prompts"),
    ("sentiment", "prompts"),
    ("language", "prompts + responses"),
)


def bench_new_light(prompts: list[str | None], responses: list[str | None]) -> None:
    """Each newer light scorer on its texts: distinct texts with a fresh scorer, then the traffic with repeats."""
    texts_for = {"prompts": prompts, "responses": responses, "prompts + responses": prompts + responses}
    print(f"{'scorer':<58}{'texts':>20}{'load s':>8}{'cold t/s':>10}{'traffic t/s':>13}")
    per_request = 0.0
    for name, which in NEW_SCORERS:
        scorer = getattr(build_profile("light"), name)
        load = load_seconds(scorer)
        unique = distinct(texts_for[which])
        cold, _ = timed(lambda s=scorer, u=unique: s.score(u))
        fresh = getattr(build_profile("light"), name)
        fresh.score(["Load the model once."])
        warm, _ = timed(lambda s=fresh, t=texts_for[which]: s.score(t))
        rate = len(texts_for[which]) / warm
        per_request += warm / len(responses)  # seconds per request for this scorer's share of the traffic
        print(f"{scorer.id:<58}{which:>20}{load:>8.2f}{len(unique) / cold:>10,.0f}{rate:>13,.0f}")
    print(f"the newer light scorers together: {1 / per_request:,.0f} requests/s on one core, this traffic's repeats")
    bench_language_batching(distinct(prompts + responses))


def bench_language_batching(unique: list[str]) -> None:
    """Language: our batch scoring vs py3langid's own classify, one text per call, on the same heads."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    from metrics.language import HEAD_CHARS, LanguageScorer

    scorer = LanguageScorer()
    scorer.labels(["Load the model once, then score."])
    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    wordy = [text for text, code in zip(unique, scorer.labels(unique).values, strict=True) if code is not None]
    batched, codes = timed(lambda: scorer.labels(wordy).values)
    naive, expected = timed(lambda: [identifier.classify(text[:HEAD_CHARS])[0] for text in wordy])
    same = sum(a == b for a, b in zip(codes, expected, strict=True))  # type: ignore[call-overload]
    print(
        f"language, {len(wordy):,} distinct texts: batched {len(wordy) / batched:,.0f} t/s vs py3langid.classify per "
        f"text {len(wordy) / naive:,.0f} t/s = {naive / batched:.1f}x; same code for {same:,} of {len(wordy):,}"
    )


def check_agreement(name: str, values: Sequence[float | None], expected: Sequence[float]) -> None:
    worst = 0.0
    for value, reference in zip(values, expected, strict=True):
        if value is None or math.isnan(reference):
            continue
        worst = max(worst, abs(value - reference) / max(abs(reference), 1e-12))
    if worst > 1e-9:
        print(f"  WARNING {name}: differs from the naive computation by up to {worst:.2e} (relative)")


def bench_end_to_end(rows: int) -> None:
    try:
        from data_access.demo import generate_payload
        from jobs.scoring import parse_and_score
    except ImportError as error:
        print(f"end to end: skipped ({error})")
        return
    payload = generate_payload(rows)
    profile = build_profile("light")
    for name in ("toxicity", "readability", "perplexity", *(name for name, _ in NEW_SCORERS)):
        getattr(profile, name).score(["Load the model once, then score."])
    profile.language.labels(["Load the model once, then score."])
    seconds, _ = timed(lambda: parse_and_score(payload, profile))
    print(
        f"end to end (jobs.scoring.parse_and_score: parse, the 4 scores above and the newer ones, one process): "
        f"{rows / seconds:,.0f} requests/s = {rows / seconds / LIGHT_TARGET_RPS:.1f}x the {LIGHT_TARGET_RPS:,}/s target"
    )


# --- full ------------------------------------------------------------------------------------------
#
# What the full profile achieves against what this machine can do. FLOPs of a model scorer: 2 per non-embedding
# weight per token (a multiply and an add in every dense layer; Kaplan et al. 2020's C = 2N per token, attention's
# own length-dependent products left out: under 3% at these lengths), plus, for the language model, its output
# layer over the vocabulary (vocab x width, tied to the embedding and so not among the non-embedding weights) at
# every position that predicts a token (a text's last position predicts nothing). Tokens are the text tokens each
# model reads (after the token cap), not the padding a batch adds; the count is the same for every variant. The
# yardstick is the best fp32 matrix multiply of the models' own shapes (bench.matmul_peak) measured in the same run.


MODELS = ("detoxify", "lm")  # --models: the full part's two model scorers


def bench_full(count: int, folder: Path, threads: int, models: Sequence[str] = MODELS) -> None:
    import torch

    torch.set_num_threads(threads)
    print(f"\n== Full profile, real-sized shapes with random weights ({count} distinct demo responses) ==")
    peak = fastest_matmul_peak()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CUDA: {torch.cuda.is_available()}; "
        f"fp32 matmul peak now {peak.describe()}; the fp32 scorers run {fp32_path()}; CPU vector extensions: "
        f"{vector_extensions()}"
    )
    print(
        "each variant's texts/s, GFLOP/s and share of the peak are its best timed run (of 2, A B C D D C B A), as the "
        "peak is the best of its timings (3 per matrix shape, at the start and after each pass over the variants); "
        "the mean over the runs is printed beside"
    )
    prompts, responses, source = traffic(4000)
    texts = distinct(responses)[:count]
    corpus = distinct(prompts) + distinct(responses)  # tokenizers learn the traffic's vocabulary, like real ones
    detoxify, lm = build_models(folder, corpus)
    print(f"texts: {source}; peak RSS so far {peak_rss_mib():,.0f} MiB")
    header = (
        f"{'scorer':<58}{'tokens/text':>12}{'texts/s':>9}{'mean t/s':>9}{'GFLOP/s':>9}{'of peak':>9}{'padding':>9}"
        f"{'peak RSS MiB':>14}"
    )
    sections = {
        "detoxify": (
            "detoxify (BERT-base shape)",
            lambda precision, prepack: detoxify_scorer(detoxify, precision, prepack),
            detoxify_twins(),
        ),
        "lm": ("perplexity (GPT-2-small shape)", lambda precision, prepack: lm_scorer(lm, precision, prepack), (INT8,)),
    }
    for name, build, precisions in (sections[model] for model in models):
        print(f"\n{name}")
        print(header)
        fp32 = build(FP32, True)
        per_token = flops_per_token(fp32)
        useful = sum(per_token[0] * tokens + per_token[1] * (tokens - 1) for tokens in model_tokens(fp32, texts))
        variants = {
            "grouped": Variant(fp32, texts, one_at_a_time=False),
            "single": Variant(fp32, texts, one_at_a_time=True),
        }
        for precision in precisions:  # the reduced-precision twins, each a scorer of its own (its id names it)
            variants[precision] = Variant(build(precision, True), texts, one_at_a_time=False)
        if onednn_prepack_available():  # what the prepacked layers gain: the same scorer on torch's default matmul
            variants["plain"] = Variant(build(FP32, False), texts, one_at_a_time=False, label=" plain matmul")
        # A B C D D C B A: the machine's load drifts, and each variant then sees the same average load.
        peaks = [peak]
        for order in (list(variants), list(reversed(variants))):
            for key in order:
                variants[key].run()
            peaks.append(fastest_matmul_peak())
        section_peak = max(peaks, key=lambda measured: measured.gflops)
        for variant in variants.values():
            variant.report(useful, section_peak.gflops)
        grouped, single = variants["grouped"], variants["single"]
        twins = [variants[precision] for precision in precisions]
        plain = variants.get("plain")
        print(
            f"  {per_token[0] / 1e6:,.0f} MFLOP per token position{head_note(per_token[1])}; "
            f"fp32 matmul peak {section_peak.describe()}; best measured around these rows: "
            f"{', '.join(f'{p.gflops:.0f}' for p in peaks)}; fp32 length-grouped vs one text per call: "
            f"{grouped.rate / single.rate:.2f}x; "
            + "; ".join(
                f"{twin_scheme(twin.scorer)} twin vs fp32 grouped: {twin.rate / grouped.rate:.2f}x texts/s "
                f"(target 1.5x), vs fp32 one per call: {twin.rate / single.rate:.2f}x"
                for twin in twins
            )
            + "; a twin's GFLOP/s counts the same fp32-equivalent FLOPs"
            + (f"; fp32 prepacked vs plain matmul: {grouped.rate / plain.rate:.2f}x texts/s" if plain else "")
        )
        report_agreement(grouped.values, single.values, twins)
        if plain:
            difference = max_relative(grouped.values, plain.values)
            print(f"  fp32 prepacked vs plain matmul: max relative difference {difference:.1e}")
    if "detoxify" in models:
        bench_fitted_head(detoxify, folder / "fitted", texts)


def vector_extensions() -> str:
    """The CPU features the full profile's kernels depend on (metrics.base picks its paths by them)."""
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")
    return ", ".join(f"{flag} {'yes' if flag in cpu_flags() else 'no'}" for flag in wanted)


def bench_fitted_head(files: object, folder: Path, texts: list[str]) -> None:
    """The int8-vs-fp32 agreement again, on a stand-in whose scores spread like a trained model's: the same random
    encoder with a classifier head fitted on a labelled set of our own (bench.fitted_head), never on these texts."""
    from bench.fitted_head import fit_toxicity_head, labelled_texts

    overlap = set(labelled_texts()[0]) & set(texts)
    if overlap:
        raise SystemExit(f"the labelled set shares {len(overlap)} texts with the demo responses; it must not")
    seconds, fitted = timed(lambda: fit_toxicity_head(files, folder))  # type: ignore[arg-type]
    print(
        f"\ndetoxify (BERT-base shape), random encoder, fitted head: the toxicity output refitted (logistic regression "
        f"on fp32 features) to {len(labelled_texts()[0])} labelled sentences of bench.fitted_head, none of them a demo "
        f"text, in {seconds:.1f} s; same scorer code, its own weights hash"
    )
    fp32 = detoxify_scorer(fitted, FP32)
    reference = fp32.score(texts).values
    for precision in detoxify_twins():
        twin = detoxify_scorer(fitted, precision)
        values = twin.score(texts).values
        print(f"{fp32.id} vs {twin.id}")
        print(f"  {twin_agreement(reference, values, twin_scheme(twin))}")


def detoxify_twins() -> tuple[str, ...]:
    """Detoxify's reduced-precision twins this CPU runs: int8 everywhere, bf16 where it multiplies bfloat16 natively."""
    return (INT8, BF16) if native_bf16() else (INT8,)


def build_models(folder: Path, corpus: list[str]) -> tuple[object, Path]:
    seconds, detoxify = timed(
        lambda: build_detoxify_checkpoint(
            folder / "detoxify",
            hidden_size=768,
            layers=12,
            heads=12,
            intermediate_size=3072,
            max_positions=512,
            tokenizer_vocab=16_000,
            model_vocab=30_522,
            initializer_range=0.02,
            corpus=corpus,
        )
    )
    print(f"built a BERT-base-shaped Detoxify checkpoint in {seconds:.1f} s")
    seconds, lm = timed(
        lambda: build_causal_lm(
            folder / "gpt2-small-shape",
            n_embd=768,
            n_layer=12,
            n_head=12,
            n_positions=1024,
            tokenizer_vocab=16_000,
            model_vocab=50_257,
            initializer_range=0.02,
            corpus=corpus,
        )
    )
    print(f"built a GPT-2-small-shaped LM in {seconds:.1f} s")
    return detoxify, lm


def detoxify_scorer(files: object, precision: str, prepack: bool = True) -> DetoxifyScorer:
    return DetoxifyScorer(
        checkpoint=str(files.checkpoint),  # type: ignore[attr-defined]
        hf_dir=str(files.hf_dir),  # type: ignore[attr-defined]
        device="cpu",
        precision=precision,
        prepack=prepack,
    )


def lm_scorer(folder: Path, precision: str, prepack: bool = True) -> CausalLMPerplexityScorer:
    return CausalLMPerplexityScorer(str(folder), device="cpu", precision=precision, prepack=prepack)


def flops_per_token(scorer: DetoxifyScorer | CausalLMPerplexityScorer) -> tuple[float, float]:
    """(FLOPs per token position the model reads, FLOPs per predicted token): 2 x the non-embedding weights for
    every position; for the LM, 2 x its output layer (vocabulary x width) for every position that predicts a
    token (all but the last: perplexity needs the logits nowhere else), 0 for Detoxify."""
    import torch

    scorer.score(["Load the model once."])
    model = scorer._model
    embedding = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    weights = sum(p.numel() for p in model.parameters() if id(p) not in embedding)
    if isinstance(scorer, CausalLMPerplexityScorer):
        return 2.0 * weights, 2.0 * model.get_output_embeddings().weight.numel()
    return 2.0 * weights, 0.0


class Variant:
    """One way of scoring the same texts; `run` times one scoring of all of them (after a warm-up), `report` prints
    texts/s and GFLOP/s on useful tokens of the best timed run (and the mean texts/s over all), the best run's share of
    the peak (itself a best reading) and the padding overhead over all runs."""

    def __init__(
        self,
        scorer: DetoxifyScorer | CausalLMPerplexityScorer,
        texts: list[str],
        one_at_a_time: bool,
        label: str = "",
    ):
        self.scorer, self.texts, self.one_at_a_time = scorer, texts, one_at_a_time
        self.label = label + (" one per call" if one_at_a_time else "")
        self.timings: list[float] = []  # seconds of each timed run over all texts
        self.padded = 0
        self.values: list[float | None] = []
        scorer.score(texts[:4])  # warm-up: load, first kernels

    @property
    def rate(self) -> float:
        """Texts/s of the best (fastest) timed run: the statistic the matmul peak takes too (bench.matmul_peak: the
        best of its timings), so a share of the peak compares best with best."""
        return len(self.texts) / min(self.timings)

    @property
    def mean_rate(self) -> float:
        return len(self.timings) * len(self.texts) / sum(self.timings)

    def run(self) -> None:
        import torch

        lock = threading.Lock()  # the int8 twins run their passes on worker threads (metrics.base.one_per_core)

        def count(_module: object, args: tuple[object, ...], kwargs: dict[str, object]) -> None:
            input_ids = kwargs.get("input_ids", args[0] if args else None)
            assert isinstance(input_ids, torch.Tensor)
            with lock:
                self.padded += input_ids.numel()

        hook = self.scorer._model.base_model.register_forward_pre_hook(count, with_kwargs=True)
        try:
            if self.one_at_a_time:
                seconds, values = timed(lambda: [self.scorer.score([text]).values[0] for text in self.texts])
            else:
                seconds, scores = timed(lambda: self.scorer.score(self.texts))
                values = scores.values  # type: ignore[attr-defined]
        finally:
            hook.remove()
        self.timings.append(seconds)
        self.values = list(values)  # type: ignore[arg-type]

    def report(self, flops: float, peak: float) -> None:
        """`flops`: the useful work of one scoring of all texts (`bench_full`), the same for every variant."""
        tokens = sum(model_tokens(self.scorer, self.texts))
        gflops = flops / min(self.timings) / 1e9
        label = f"{self.scorer.id}{self.label}"
        print(
            f"{label:<58}{tokens / len(self.texts):>12.0f}{self.rate:>9.2f}{self.mean_rate:>9.2f}{gflops:>9.1f}"
            f"{gflops / peak:>9.0%}{self.padded / (tokens * len(self.timings)) - 1:>9.1%}{peak_rss_mib():>14,.0f}",
            flush=True,
        )


def model_tokens(scorer: DetoxifyScorer | CausalLMPerplexityScorer, texts: list[str]) -> list[int]:
    """Positions the model runs for each text on its own: its tokens within the cap (the LM's start token
    included), i.e. no padding."""
    if isinstance(scorer, DetoxifyScorer):
        return [len(scorer._encode_all([text])[0]["input_ids"]) for text in texts]
    return [len(scorer._with_start(scorer._encode_all([text])[0])) for text in texts]


def head_note(per_prediction: float) -> str:
    return f" + {per_prediction / 1e6:,.0f} MFLOP per predicted token (output layer)" if per_prediction else ""


def report_agreement(grouped: list[float | None], single: list[float | None], twins: list[Variant]) -> None:
    import numpy as np

    pairs = [(g, s) for g, s in zip(grouped, single, strict=True) if None not in (g, s)]
    g, s = (np.array(column, dtype=float) for column in zip(*pairs, strict=True))
    print(f"  grouped vs one per call: max relative difference {np.max(np.abs(g - s) / np.abs(s)):.1e}")
    for twin in twins:
        print(f"  {twin_agreement(grouped, twin.values, twin_scheme(twin.scorer))}")


def twin_scheme(scorer: DetoxifyScorer | CausalLMPerplexityScorer) -> str:
    """The numeric scheme a scorer's id names (`int8-a8-fp32head`, `bf16-fp32head`, ...)."""
    return scorer.id.rpartition(":")[2]


def max_relative(values: list[float | None], reference: list[float | None]) -> float:
    pairs = [(v, r) for v, r in zip(values, reference, strict=True) if None not in (v, r)]
    return max(abs(v - r) / abs(r) for v, r in pairs)  # type: ignore[operator]


def twin_agreement(fp32: list[float | None], twin: list[float | None], scheme: str) -> str:
    """Pearson and Spearman correlation of the two variants' values, their largest relative difference and the
    spread of the fp32 values (the signal the correlation compares the rounding noise with)."""
    import numpy as np
    from scipy.stats import pearsonr, spearmanr

    pairs = [(f, q) for f, q in zip(fp32, twin, strict=True) if None not in (f, q)]
    f, q = (np.array(column, dtype=float) for column in zip(*pairs, strict=True))
    return (
        f"{scheme} twin vs fp32 on {len(pairs)} texts: Pearson {pearsonr(f, q)[0]:.4f}, "
        f"Spearman {spearmanr(f, q)[0]:.4f} "
        f"(target 0.99), max relative difference {np.max(np.abs(f - q) / np.abs(f)):.1e}; fp32 values span "
        f"{f.min():.4g} to {f.max():.4g} (standard deviation {f.std():.2g}, coefficient of variation "
        f"{f.std() / abs(f.mean()):.1e})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--light", action="store_true", help="only the light scorers")
    parser.add_argument("--full", action="store_true", help="only the full profile")
    parser.add_argument("--rows", type=int, default=20_000, help="demo requests for the light part")
    parser.add_argument("--full-texts", type=int, default=100, help="distinct demo responses per full-profile row")
    parser.add_argument(
        "--models", default=",".join(MODELS), help="full part: which model scorers, comma-separated (detoxify, lm)"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all cores)")
    args = parser.parse_args()
    print(f"machine: {describe()}")
    if not args.full:
        bench_light(args.rows)
    if not args.light:
        with tempfile.TemporaryDirectory(prefix="bench_scorers_") as folder:
            models = [model for model in args.models.split(",") if model]
            unknown = set(models) - set(MODELS)
            if unknown:
                parser.error(f"--models: unknown {', '.join(sorted(unknown))}; choose from {', '.join(MODELS)}")
            bench_full(args.full_texts, Path(folder), args.threads, models)
    print(f"\npeak memory (ru_maxrss): {peak_rss_mib():,.0f} MiB; machine at the end: {describe()}")


if __name__ == "__main__":
    main()
