"""Build small, randomly initialised models and locally trained tokenizers on disk, with no download.

They are saved in the same formats as the real ones (a Detoxify checkpoint plus an HF config/tokenizer
folder; a `save_pretrained` causal-LM folder), so tests and benchmarks load them through the
production code path. The sizes are parameters: the tests use tiny ones, the benchmark real shapes.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Jigsaw's class names as the released "original" Detoxify checkpoint lists them.
JIGSAW_CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
GPT2_SPECIAL = "<|endoftext|>"

_OPENERS = [
    "Sure, here is how to do that.",
    "Thanks for reaching out!",
    "I can help with that.",
    "Great question.",
    "Unfortunately I cannot access your account.",
]
_SUBJECTS = ["the model", "your endpoint", "the warehouse", "this request", "the cluster", "our support team"]
_VERBS = ["returns", "processes", "logs", "rejects", "retries", "serves", "updates"]
_OBJECTS = [
    "the latest version",
    "a JSON payload",
    "every streaming response",
    "the inference table",
    "a refund within five business days",
    "your password reset email",
    "the quarterly sales report",
]
_CLOSERS = [
    "Let me know if you have any other questions.",
    "Is there anything else I can help you with?",
    "Please try again in a few minutes.",
    "You can find more details in the documentation.",
]
_PROMPTS = [
    "How do I reset my password?",
    "Why is my endpoint returning errors?",
    "Can you summarise the quarterly report?",
    "What does this error mean: 429 Too Many Requests?",
    "You are useless, just answer the question!",
    "Explain retrieval augmented generation in simple terms.",
]


def chat_texts(count: int, seed: int = 0) -> list[str]:
    """Chatbot-like prompts and replies of one to six sentences, reproducible from `seed`."""
    rng = random.Random(seed)
    texts: list[str] = []
    for _ in range(count):
        if rng.random() < 0.3:
            texts.append(rng.choice(_PROMPTS))
            continue
        middle = [
            f"{rng.choice(_SUBJECTS).capitalize()} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}."
            for _ in range(rng.randint(0, 4))
        ]
        texts.append(" ".join([rng.choice(_OPENERS), *middle, rng.choice(_CLOSERS)]))
    return texts


def train_corpus(count: int = 600, seed: int = 0) -> list[str]:
    """Text to train tokenizers on: the chat texts plus every word list, so all of them get tokens."""
    return chat_texts(count, seed) + _OPENERS + _SUBJECTS + _VERBS + _OBJECTS + _CLOSERS + _PROMPTS


WORDPIECE_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def wordpiece_vocab(words: Counter[str], vocab_size: int) -> dict[str, int]:
    """A WordPiece vocabulary built deterministically from word counts.

    The specials, then every character (word-initial, then `##` continuations; sorted), then whole words by
    descending count, ties in code-point order, while `vocab_size` allows; any other word splits into characters.
    `tokenizers`' WordPieceTrainer is not used: it breaks ties in hash-map order, so the same corpus gave another
    vocabulary (and so another scorer id) in every process.
    """
    initials = sorted({word[0] for word in words})
    continuations = sorted({f"##{char}" for word in words for char in word[1:]})
    alphabet = [*WORDPIECE_SPECIALS, *initials, *continuations]
    whole = sorted((word for word in words if len(word) > 1), key=lambda word: (-words[word], word))
    tokens = alphabet + whole[: max(0, vocab_size - len(alphabet))]
    return {token: index for index, token in enumerate(tokens)}


def train_wordpiece_tokenizer(texts: list[str], vocab_size: int, model_max_length: int):
    """A lower-casing BERT WordPiece tokenizer ([CLS] text [SEP]) whose vocabulary comes from `texts`
    (`wordpiece_vocab`): the same texts give the same tokenizer in every process."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words = Counter(
        word for text in texts for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
    )
    vocab = wordpiece_vocab(words, vocab_size)
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer.decoder = decoders.WordPiece()
    return BertTokenizerFast(tokenizer_object=tokenizer, model_max_length=model_max_length)


def train_byte_bpe_tokenizer(texts: list[str], vocab_size: int, model_max_length: int):
    """A GPT-2 style byte-level BPE tokenizer with <|endoftext|> as BOS, EOS and UNK."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[GPT2_SPECIAL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer)
    return GPT2TokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=GPT2_SPECIAL,
        eos_token=GPT2_SPECIAL,
        unk_token=GPT2_SPECIAL,
        model_max_length=model_max_length,
    )


@dataclass(frozen=True)
class DetoxifyFiles:
    checkpoint: Path  # torch-saved dict in Detoxify's format
    hf_dir: Path  # HF config + tokenizer folder


def build_detoxify_checkpoint(
    folder: Path,
    *,
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 2,
    intermediate_size: int = 64,
    max_positions: int = 64,
    tokenizer_vocab: int = 400,
    model_vocab: int = 0,
    initializer_range: float = 0.3,
    seed: int = 0,
    corpus: list[str] | None = None,
) -> DetoxifyFiles:
    """A random BERT classifier saved as Detoxify saves `original`: checkpoint plus HF folder.

    `model_vocab` above the tokenizer's size only widens the embedding table (to mimic a real shape).
    `initializer_range` is wider than BERT's 0.02 so random outputs differ between texts.
    `corpus` trains the tokenizer (default: `train_corpus()`).
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    folder.mkdir(parents=True, exist_ok=True)
    hf_dir = folder / "hf"
    texts = corpus if corpus is not None else train_corpus()
    tokenizer = train_wordpiece_tokenizer(texts, tokenizer_vocab, model_max_length=max_positions)
    config = BertConfig(
        vocab_size=max(len(tokenizer), model_vocab),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_positions,
        num_labels=len(JIGSAW_CLASSES),
        initializer_range=initializer_range,
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    tokenizer.save_pretrained(hf_dir)
    config.save_pretrained(hf_dir)
    checkpoint = folder / "detoxify_tiny.ckpt"
    torch.save(
        {
            "config": {
                "arch": {
                    "args": {
                        "model_type": "bert-base-uncased",  # a hub id, as in the released checkpoint
                        "model_name": "BertForSequenceClassification",
                        "tokenizer_name": "BertTokenizer",
                        "num_classes": len(JIGSAW_CLASSES),
                    }
                },
                "dataset": {"args": {"classes": JIGSAW_CLASSES}},
            },
            "state_dict": model.state_dict(),
        },
        checkpoint,
    )
    return DetoxifyFiles(checkpoint=checkpoint, hf_dir=hf_dir)


def build_causal_lm(
    folder: Path,
    *,
    n_embd: int = 32,
    n_layer: int = 2,
    n_head: int = 2,
    n_positions: int = 64,
    tokenizer_vocab: int = 400,
    model_vocab: int = 0,
    initializer_range: float = 0.3,
    seed: int = 0,
    corpus: list[str] | None = None,
) -> Path:
    """A random GPT-2 with a locally trained byte-level BPE tokenizer, saved with `save_pretrained`.

    `model_vocab` above the tokenizer's size widens the LM head (to mimic GPT-2's 50,257 outputs).
    `initializer_range` is wider than GPT-2's 0.02 so random predictions differ between texts.
    `corpus` trains the tokenizer (default: `train_corpus()`).
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    folder.mkdir(parents=True, exist_ok=True)
    texts = corpus if corpus is not None else train_corpus()
    tokenizer = train_byte_bpe_tokenizer(texts, tokenizer_vocab, model_max_length=n_positions)
    special = tokenizer.convert_tokens_to_ids(GPT2_SPECIAL)
    config = GPT2Config(
        vocab_size=max(len(tokenizer), model_vocab),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=special,
        eos_token_id=special,
        initializer_range=initializer_range,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
