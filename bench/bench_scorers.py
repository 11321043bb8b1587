"""Scorer throughput: light scorers' texts/s, and the full profile batched vs one text at a time.

Run from the repository root:
    python -m bench.bench_scorers            # both parts, ~3-4 minutes on 2 cores
    python -m bench.bench_scorers --light    # light scorers only (~30 s)
    python -m bench.bench_scorers --full --full-texts 32

Light part: realistic chatbot traffic (the demo generator's parsed prompts and responses), each
scorer on every distinct text once with a fresh scorer (cold memos), then on repeated traffic; the
baseline is the plain library call per text, measured in the same run. Full part: Detoxify with a
BERT-base-shaped classifier and GPT-2-small-shaped perplexity, random weights and locally trained
tokenizers (nothing downloaded), batched scoring vs a loop scoring one text per call.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # `python bench/bench_scorers.py` works too

from metrics.base import Scorer  # noqa: E402
from metrics.profiles import FullProfileOptions, build_profile  # noqa: E402
from testkit.tiny_models import build_causal_lm, build_detoxify_checkpoint, chat_texts  # noqa: E402

LIGHT_TARGET_RPS = 3_000  # embedded demo: parsing + 4 scores per request, end to end, 2 cores


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = f"{os.cpu_count()} cores ({usable} usable)"
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())  # other work on the machine skews timings
    return f"{platform.platform()} | {cpu} | {cores} | Python {platform.python_version()} | load average {load}"


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


def bench_full(count: int, folder: Path) -> None:
    print(f"\n== Full profile, real-sized shapes with random weights ({count} texts per row) ==")
    import torch

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CUDA: {torch.cuda.is_available()}, "
        f"fp32 matmul {matmul_gflops():.0f} GFLOP/s (2048x768 @ 768x3072, the size of a batched MLP layer)"
    )
    prompts, responses, source = traffic(4000)
    unique_prompts, unique_responses = distinct(prompts), distinct(responses)
    corpus = unique_prompts + unique_responses  # tokenizers learn the traffic's vocabulary, like real ones
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
    print(f"built a GPT-2-small-shaped LM in {seconds:.1f} s; peak RSS so far {peak_rss_mib():,.0f} MiB")
    options = FullProfileOptions(
        detoxify_checkpoint=str(detoxify.checkpoint),
        detoxify_hf_dir=str(detoxify.hf_dir),
        lm_model=str(lm),
        device="auto",
    )
    profile = build_profile("full", options)
    print(f"texts: {source} (distinct); each row scores the same texts batched, then one per call")
    print(
        f"{'scorer':<20}{'texts':<11}{'tokens/text':>12}{'batched t/s':>13}{'single t/s':>12}{'speed-up':>10}"
        f"{'max rel diff':>14}{'peak RSS MiB':>14}"
    )
    rows = (
        (profile.toxicity, "prompts", unique_prompts[:count]),
        (profile.toxicity, "responses", unique_responses[:count]),
        (profile.perplexity, "responses", unique_responses[:count]),
    )
    for scorer, label, texts in rows:
        compare_batching(scorer, label, texts, mean_tokens(scorer, texts))


def matmul_gflops(repeats: int = 20) -> float:
    """What this machine gives a batched layer right now: a yardstick for the texts/s below."""
    import torch

    left, right = torch.randn(2048, 768), torch.randn(768, 3072)
    left @ right  # warm up
    seconds, _ = timed(lambda: [left @ right for _ in range(repeats)])
    return 2 * 2048 * 768 * 3072 * repeats / seconds / 1e9


def mean_tokens(scorer: Scorer, texts: list[str]) -> float:
    scorer.score(["Load the model once."])
    tokenizer = scorer._tokenizer  # type: ignore[attr-defined]
    return sum(len(tokenizer(text)["input_ids"]) for text in texts) / len(texts)


def compare_batching(scorer: Scorer, label: str, texts: list[str], tokens: float) -> None:
    scorer.score(texts[:4])  # warm the kernels for a batch too
    batched_s, batched = timed(lambda: scorer.score(texts))
    single_s, single = timed(lambda: [scorer.score([text]).values[0] for text in texts])
    pairs = [(a, b) for a, b in zip(batched.values, single, strict=True) if a is not None and b is not None]
    worst = max(abs(a - b) / max(abs(b), 1e-12) for a, b in pairs)
    print(
        f"{scorer.id:<20}{label:<11}{tokens:>12.0f}{len(texts) / batched_s:>13.2f}{len(texts) / single_s:>12.2f}"
        f"{single_s / batched_s:>9.2f}x{worst:>14.1e}{peak_rss_mib():>14,.0f}",
        flush=True,
    )
    if len(pairs) != len(texts):
        print(f"  WARNING: {len(texts) - len(pairs)} texts got no value")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--light", action="store_true", help="only the light scorers")
    parser.add_argument("--full", action="store_true", help="only the full profile")
    parser.add_argument("--rows", type=int, default=20_000, help="demo requests for the light part")
    parser.add_argument("--full-texts", type=int, default=24, help="texts per full-profile row")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    if not args.full:
        bench_light(args.rows)
    if not args.light:
        with tempfile.TemporaryDirectory(prefix="bench_scorers_") as folder:
            bench_full(args.full_texts, Path(folder))
    print(f"\npeak memory (ru_maxrss): {peak_rss_mib():,.0f} MiB; load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
