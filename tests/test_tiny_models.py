"""testkit's tiny models are the same in every process: a model scorer's id hashes its tokenizer, so a test
tokenizer that changed between processes would give the same stand-in another id each run."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from testkit.processes import last_json_line, python_stdout
from testkit.tiny_models import WORDPIECE_SPECIALS, train_corpus, train_wordpiece_tokenizer, wordpiece_vocab

REPO_ROOT = Path(__file__).resolve().parent.parent

# Builds the Detoxify stand-in in a fresh interpreter and prints its tokenizer and its scorer id.
BUILD = """
import json, sys, tempfile
from pathlib import Path
sys.path.insert(0, {root!r})
from metrics.detoxify_toxicity import DetoxifyScorer
from testkit.tiny_models import build_detoxify_checkpoint
files = build_detoxify_checkpoint(Path(tempfile.mkdtemp(dir={tmp!r})), max_positions=32)
scorer = DetoxifyScorer(checkpoint=str(files.checkpoint), hf_dir=str(files.hf_dir))
print(json.dumps({{"tokenizer": (files.hf_dir / "tokenizer.json").read_text(encoding="utf-8"), "id": scorer.id}}))
"""


def build_in_a_fresh_process(tmp_path: Path, hash_seed: str) -> dict[str, str]:
    # Not -I, which would ignore PYTHONHASHSEED: Python's hash order differs for sure, and `tokenizers`' own
    # hash maps are seeded afresh in every process anyway. The checkout is on the path only through BUILD.
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    build = BUILD.format(root=str(REPO_ROOT), tmp=str(tmp_path))
    return last_json_line(python_stdout(["-s", "-c", build], cwd=tmp_path, env=env, timeout=300))


def test_two_processes_build_the_same_tokenizer_and_scorer_id(tmp_path: Path) -> None:
    first = build_in_a_fresh_process(tmp_path, "1")
    second = build_in_a_fresh_process(tmp_path, "2")
    assert first["tokenizer"] == second["tokenizer"]
    assert first["id"] == second["id"]
    assert first["id"].startswith("detoxify-")


def test_the_vocabulary_keeps_the_most_frequent_words_whole() -> None:
    words = Counter({"the": 5, "model": 3, "logs": 3, "retries": 1, "a": 9})
    vocab = wordpiece_vocab(words, vocab_size=len(WORDPIECE_SPECIALS) + 18)
    tokens = sorted(vocab, key=vocab.__getitem__)
    assert tokens[: len(WORDPIECE_SPECIALS)] == WORDPIECE_SPECIALS
    assert list(vocab.values()) == list(range(len(vocab)))
    alphabet = ["a", "l", "m", "r", "t", *sorted(f"##{char}" for char in set("heodelogsetries"))]
    assert tokens[len(WORDPIECE_SPECIALS) : len(WORDPIECE_SPECIALS) + len(alphabet)] == alphabet
    # 18 - 15 characters leave room for three words: by count, the tie (logs, model) in code-point order.
    assert tokens[len(WORDPIECE_SPECIALS) + len(alphabet) :] == ["the", "logs", "model"]


def test_every_corpus_word_tokenizes_without_unknowns() -> None:
    corpus = train_corpus()
    tokenizer = train_wordpiece_tokenizer(corpus, vocab_size=400, model_max_length=64)
    assert len(tokenizer) <= 400
    for text in corpus:
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.unk_token_id not in ids, text
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    # A frequent word is one token; a word the corpus never saw splits into its characters.
    assert tokenizer.tokenize("Thanks for reaching out!") == ["thanks", "for", "reaching", "out", "!"]
    assert "terse" not in tokenizer.get_vocab()
    assert tokenizer.tokenize("Terse") == ["t", "##e", "##r", "##s", "##e"]
