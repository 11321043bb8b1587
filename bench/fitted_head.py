"""A Detoxify stand-in whose scores spread like a trained model's: the benchmark's random BERT-base encoder with the
toxicity output of its classifier fitted on the fp32 features of a labelled set written here.

Why: with random weights every text scores within about 1% of the same value, so an int8-vs-fp32 correlation
compares rounding noise with almost no signal; a released Detoxify checkpoint spreads its scores over 0..1. Only
the classifier's toxicity row and bias change (a logistic regression on the features the classifier reads, i.e.
the fp32 pooler output, L2-penalised); the encoder, the pooler and the scorer code stay as they are, so the fitted
checkpoint is loaded and quantised exactly as a user's would be and gets its own weights hash, hence its own id.

The labelled set: hostile and friendly sentences composed from the fragments below (written for this benchmark,
not taken from any corpus). None of them is a demo response, the texts the correlation is measured on; the
benchmark checks that.
"""

from __future__ import annotations

from pathlib import Path

from metrics.detoxify_toxicity import DetoxifyScorer
from testkit.tiny_models import DetoxifyFiles

HOSTILE_OPENERS = (
    "You are",
    "Honestly you're",
    "Everyone knows you are",
    "Shut up, you",
    "Only",
    "Stop talking, you",
    "What a",
    "Get lost, you",
)
HOSTILE_ENDINGS = (
    "a pathetic idiot.",
    "worthless garbage and a waste of space.",
    "the dumbest moron I have ever met.",
    "a disgusting liar.",
    "stupid trash nobody wants around.",
    "an ignorant fool who should be ashamed.",
    "a useless clown.",
    "vile scum.",
)
FRIENDLY_OPENERS = (
    "Thanks,",
    "I really appreciate that,",
    "Good morning,",
    "Happy to help,",
    "That sounds great,",
    "Nice work,",
    "Sure thing,",
    "Of course,",
)
FRIENDLY_ENDINGS = (
    "the report is attached below.",
    "let me know if the schedule works for you.",
    "the recipe needs two cups of flour.",
    "your order ships on Tuesday.",
    "here is a summary of the meeting.",
    "the weather should clear up by noon.",
    "I will update the spreadsheet today.",
    "the library opens at nine.",
)
L2_PENALTY = 0.04  # on the mean log-loss; keeps the head's scores inside 0..1 without saturating at either end


def labelled_texts() -> tuple[list[str], list[int]]:
    """64 hostile (1) and 64 friendly (0) sentences."""
    hostile = [f"{opener} {ending}" for opener in HOSTILE_OPENERS for ending in HOSTILE_ENDINGS]
    friendly = [f"{opener} {ending}" for opener in FRIENDLY_OPENERS for ending in FRIENDLY_ENDINGS]
    return hostile + friendly, [1] * len(hostile) + [0] * len(friendly)


def fit_toxicity_head(files: DetoxifyFiles, folder: Path) -> DetoxifyFiles:
    """A copy of the checkpoint in `folder` with the toxicity row of the classifier fitted on `labelled_texts()`."""
    import torch

    texts, labels = labelled_texts()
    # The plain fp32 path: the fitted weights (and so the stand-in's id) the same on every CPU.
    scorer = DetoxifyScorer(checkpoint=str(files.checkpoint), hf_dir=str(files.hf_dir), device="cpu", prepack=False)
    scorer._load()
    features: list[torch.Tensor] = []
    hook = scorer._model.classifier.register_forward_pre_hook(lambda _m, args: features.append(args[0].clone()))
    batch = scorer._tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    try:
        with torch.inference_mode():  # one pass, rows in input order; padding is masked
            scorer._model(**batch)
    finally:
        hook.remove()
    weight, bias = logistic_regression(features[0], torch.tensor(labels, dtype=torch.float32))
    loaded = torch.load(files.checkpoint, map_location="cpu", weights_only=False)
    state = loaded["state_dict"]
    state["classifier.weight"][scorer._column] = weight
    state["classifier.bias"][scorer._column] = bias
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / "detoxify_fitted_head.ckpt"
    torch.save(loaded, checkpoint)
    return DetoxifyFiles(checkpoint=checkpoint, hf_dir=files.hf_dir)


def logistic_regression(features: object, labels: object) -> tuple[object, float]:
    """Weights and bias minimising the mean log-loss plus L2_PENALTY x |weights|^2 (L-BFGS, float64)."""
    import torch

    x, y = features.double(), labels.double()  # type: ignore[attr-defined]
    weight = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=500, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(x @ weight + bias, y)
        value = value + L2_PENALTY * weight.square().sum()
        value.backward()
        return value

    optimizer.step(loss)
    return weight.detach().float(), float(bias.detach())
