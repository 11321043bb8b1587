"""Exact scorer ids: what produced a number, precisely enough that two different scorers never share an id.

A light scorer's id is its package and version (`alt-profanity-check-1.9.1`). A model scorer's id also names
the model, a short hash of the weights, config and tokenizer it loaded, the token cap it truncates to, and its numeric
variant, e.g. `detoxify-0.5.4:original:w3f9a1c2e7b:max512:fp32`. Two checkpoints of the same architecture get
different hashes, so the pages (which group and filter every metric by its scorer id) never pool them.
Rows scored under an older, shorter id (`detoxify-original`, `profanity-check-1.9.1`) keep that id and stay
readable as a scorer of their own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

DIGEST_CHARS = 10  # 40 bits: enough to tell the checkpoints one team ever deploys apart
FP32 = "fp32"
# A precision setting's value, and in the ids of rows scored before Dec 3 evening torch's default dynamic quantisation:
# int8 weights, one scale per matrix, activations quantised per forward pass to 7 bits (`int8`), or 8 (`int8-a8`).
# Now metrics.base.int8_scheme names it: `int8-a8-w7pc` / `int8-a8-w8pc` (8-bit activations, 7- or 8-bit weights with
# a scale per output channel).
INT8 = "int8"
INT8_A8 = "int8-a8"
FP32_HEAD = "-fp32head"  # appended when only the encoder is quantised and a classifier's head stays fp32
# appended before it when each quantised layer's output at a text's first position (the one a classifier reads) is
# recomputed in fp32 (metrics.base.first_token_fp32): Detoxify's int8 twin from Dec 4, `int8-a8-w8pc-fp32first-fp32head`
FP32_FIRST = "-fp32first"
# Detoxify's twin where the CPU multiplies bfloat16 natively (metrics.base.bfloat16_encoder): the encoder's linear
# layers in bfloat16, its head fp32: `bf16-fp32head`. Rows scored by its earlier scheme keep their id
# (`int8-a8qkv-bf16-fp32head`: query, key and value int8, the rest of the encoder bfloat16).
BF16 = "bf16"
# The precision setting's values (data_access.config declares the setting with them; metrics.profiles maps each to the
# model scorers' schemes): fp32; int8, both model scorers dynamically quantised; bf16, Detoxify's encoder in bfloat16
# where the CPU multiplies it natively (the language model stays fp32).
PRECISIONS = (FP32, INT8, BF16)


def package_version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def package_id(package: str) -> str:
    """`package-version`, the id of a scorer that is a package's bundled model or formula."""
    return f"{package}-{package_version(package)}"


def weights_digest(state_dict: Mapping[str, Any], config: str, tokenizer: Any) -> str:
    """A short hash of a model's config, every tensor (name, dtype, shape, bytes) in name order, and its tokenizer:
    the same weights read through another vocabulary are another scorer."""
    import torch  # only model scorers get here

    digest = hashlib.blake2b(config.encode(), digest_size=16)
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        if tensor.numel():  # raw bytes whatever the dtype (numpy has no bfloat16)
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    digest.update(b"tokenizer|" + tokenizer_spec(tokenizer).encode())
    return "w" + digest.hexdigest()[:DIGEST_CHARS]


def tokenizer_spec(tokenizer: Any) -> str:
    """A tokenizer as canonical JSON: a fast tokenizer's whole definition (normaliser, pre-tokeniser, vocabulary,
    merges) without the truncation and padding a call sets; else its vocabulary in id order."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return json.dumps(sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]))
    spec = json.loads(backend.to_str())
    spec.pop("truncation", None)
    spec.pop("padding", None)
    return json.dumps(spec, sort_keys=True)


def model_scorer_id(package: str, model: str, digest: str, max_tokens: int, variant: str) -> str:
    """E.g. `transformers-5.23.0:gpt2:w0a1b2c3d4e:max1024:int8-a8-w7pc`."""
    return f"{package_id(package)}:{model}:{digest}:max{max_tokens}:{variant}"
