"""The new scorers against labelled sets written for this project (tests/labelled/): precision and recall
are printed (pytest -s) and held above a floor, per scorer and, for PII, per kind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from metrics.base import EMPTY_TEXT
from metrics.injection import FLAG_AT, InjectionScorer, attack_corpus, attack_rules
from metrics.language import LanguageScorer
from metrics.pii import KINDS, PiiScorer
from metrics.rag_support import NO_CONTEXT, LexicalSupportScorer, SupportJudge
from metrics.refusal import RefusalScorer
from metrics.sentiment import NEGATIVE_AT, SentimentScorer
from tests.labelled import injection, language, pii, rag_support, refusal, sentiment

MIN_CASES = 50


def precision_recall(predicted: list[bool], expected: list[bool]) -> tuple[float, float]:
    true_positives = sum(p and e for p, e in zip(predicted, expected, strict=True))
    flagged, positives = sum(predicted), sum(expected)
    return (true_positives / flagged if flagged else 0.0), (true_positives / positives if positives else 0.0)


def check(name: str, predicted: list[bool], expected: list[bool], floor: float) -> None:
    assert len(expected) >= MIN_CASES and 0 < sum(expected) < len(expected)  # positives and negatives
    precision, recall = precision_recall(predicted, expected)
    print(f"{name}: {len(expected)} cases, precision {precision:.2f}, recall {recall:.2f} (floor {floor:.2f})")
    assert precision >= floor and recall >= floor, (name, precision, recall)


def test_precision_recall_helper_counts_by_hand() -> None:
    assert precision_recall([True, True, False, False], [True, False, True, False]) == (0.5, 0.5)


def test_pii_labelled_set() -> None:
    scorer = PiiScorer()
    texts = [text for text, _ in pii.CASES]
    counts = scorer.score(texts).values
    check("pii (any)", [bool(c) for c in counts], [bool(kinds) for _, kinds in pii.CASES], floor=0.95)
    found = scorer.kinds(texts)
    for kind in KINDS:
        predicted = [kind in (f or "").split(",") for f in found]
        expected = [kind in kinds for _, kinds in pii.CASES]
        precision, recall = precision_recall(predicted, expected)
        print(f"  pii {kind}: precision {precision:.2f}, recall {recall:.2f}")
        assert precision >= 0.9 and recall >= 0.75, (kind, precision, recall)


def test_pii_counts_every_finding_and_says_no_ner_was_used() -> None:
    scorer = PiiScorer()
    scores = scorer.score(["a@example.com, b@example.com and 4111 1111 1111 1111", "Hello Jane Smith", None])
    assert scores.values == [3.0, 0.0, None] and scores.errors[2] == EMPTY_TEXT
    assert scorer.kinds(["a@example.com, 4111 1111 1111 1111", "none here", " "]) == ["email,card", "", None]
    assert scorer.id.endswith(":no-ner") and "python-stdnum-" in scorer.id and "phonenumbers-" in scorer.id


def test_pii_preconditions_hold_wherever_a_pattern_finds_something() -> None:
    """The cheap checks that let PII skip a pattern never skip one that would have found a valid value."""
    from metrics.pii import _DIGIT_RUN

    scorer = PiiScorer()
    scorer._load()
    phones = ["+1 (415) 555-2671", "+44 (20) 7946 0958", "(212)555-0123", "+33.1.42.68.53.00", "650 253 0000"]
    texts = [text for text, _ in pii.CASES] + [f"call {phone} now" for phone in phones]
    holds = {"@": lambda t: "@" in t, ":": lambda t: ":" in t, "digits": lambda t: bool(_DIGIT_RUN.search(t))}
    checked: set[str] = set()
    for text in texts:
        for kind, pattern, needs in scorer._patterns():
            for match in pattern.finditer(text):
                if needs and scorer._valid(kind, match.group()):
                    assert holds[needs](text), (kind, text)
                    checked.add(kind)
    assert checked == {"email", "card", "national_id", "ip", "phone"}  # every gated kind occurs: the check has teeth
    assert [kind for kind in scorer.kinds([f"call {phone} now" for phone in phones])] == ["phone"] * len(phones)


def test_refusal_labelled_set() -> None:
    values = RefusalScorer().score([text for text, _ in refusal.CASES]).values
    check("refusal", [v == 1.0 for v in values], [label for _, label in refusal.CASES], floor=0.9)


def test_injection_labelled_set() -> None:
    values = InjectionScorer().score([text for text, _ in injection.CASES]).values
    check("injection", [v >= FLAG_AT for v in values], [label for _, label in injection.CASES], floor=0.85)


def test_injection_rules_each_catch_an_attack_and_no_benign_prompt() -> None:
    rules = attack_rules()
    assert len(rules) >= 9
    for name, pattern in rules.items():
        rule = re.compile(pattern, re.IGNORECASE)
        hits = [label for text, label in injection.CASES if rule.search(text)]
        assert hits and all(hits), (name, hits)  # fires on a labelled attack, never on a labelled benign prompt


def test_injection_rules_file_errors_name_the_line(tmp_path: Path) -> None:
    broken = tmp_path / "rules.txt"
    broken.write_text("# comment\nok_rule: \\bfoo\\b\nno separator here\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"rules\.txt:3: expected a new rule"):
        attack_rules(broken)
    broken.write_text("twice: a\ntwice: b\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"rules\.txt:2"):
        attack_rules(broken)


def test_injection_set_is_not_the_corpus() -> None:
    corpus = {line.lower() for line in attack_corpus()}
    assert len(corpus) >= 50
    assert not corpus & {text.lower() for text, _ in injection.CASES}


def test_sentiment_labelled_set() -> None:
    values = SentimentScorer().score([text for text, _ in sentiment.CASES]).values
    assert all(-1.0 <= v <= 1.0 for v in values)
    check("sentiment (negative)", [v <= NEGATIVE_AT for v in values], [neg for _, neg in sentiment.CASES], 0.9)


def test_language_labelled_set() -> None:
    labels = LanguageScorer().labels([text for text, _ in language.CASES]).values
    expected = [code for _, code in language.CASES]
    accuracy = sum(got == want for got, want in zip(labels, expected, strict=True)) / len(expected)
    print(f"language: {len(expected)} cases in {len(set(expected))} languages, accuracy {accuracy:.2f}")
    assert accuracy >= 0.9
    check("language (English vs not)", [got == "en" for got in labels], [want == "en" for want in expected], 0.9)


def test_language_needs_letters() -> None:
    labels = LanguageScorer().labels(["12345 678", "", "Bonjour, je voudrais annuler ma commande."])
    assert labels.values == [None, None, "fr"] and labels.errors[:2] == ["no words", EMPTY_TEXT]


def test_language_batch_agrees_with_py3langid_one_text_at_a_time() -> None:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    from metrics.language import HEAD_CHARS
    from testkit.tiny_models import chat_texts

    reference = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    texts = [text for text, _ in language.CASES] + chat_texts(40, seed=11)
    texts += ["ÉCRIVEZ-MOI EN FRANÇAIS, S'IL VOUS PLAÎT", "long " * 200, "a lone surrogate \ud800 in some words"]
    scorer = LanguageScorer()
    labels, confidences = scorer.labels(texts).values, scorer.score(texts).values
    expected = [reference.classify(text[:HEAD_CHARS]) for text in texts]
    assert labels == [code for code, _ in expected]
    assert confidences == pytest.approx([confidence for _, confidence in expected], abs=1e-5)
    assert len(set(labels)) > 5  # many languages, so agreeing is not luck


def test_rag_support_labelled_set() -> None:
    scorer = LexicalSupportScorer()
    assert isinstance(scorer, SupportJudge)  # the interface a model-based judge implements too
    values = scorer.score_pairs([r for r, _, _ in rag_support.CASES], [c for _, c, _ in rag_support.CASES]).values
    check("rag support (lexical)", [v >= 0.5 for v in values], [ok for _, _, ok in rag_support.CASES], 0.9)


def test_rag_support_counts_content_words_by_hand() -> None:
    scorer = LexicalSupportScorer()
    # content tokens of the response: refund, take, 5, days, 90 -> 4 of 5 in the context
    scores = scorer.score_pairs(["Refunds take 5 days, or 90."] * 2 + [None], ["A refund can take 5 days.", "", "x"])
    assert scores.values[0] == pytest.approx(4 / 5)
    assert scores.values[1] is None and scores.errors[1] == NO_CONTEXT
    assert scores.values[2] is None and scores.errors[2] == EMPTY_TEXT


def test_overview_counts_attempts_and_refusals_at_the_scorers_thresholds() -> None:
    from core.comparison import MEASURES

    thresholds = {measure.metric: measure.threshold for measure in MEASURES}
    assert thresholds["prompt_injection"] == FLAG_AT
    assert thresholds["response_refusal"] == 0.5  # refusals are 0 or 1
    assert thresholds["response_pii_count"] == thresholds["prompt_pii_count"] == 1.0  # at least one finding
