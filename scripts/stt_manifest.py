"""Write the tensor manifest of a Kyutai STT release from its config.json, with moshi 0.2.13.

The manifest is built by the public reference code, not by ours: moshi's ``LMModel`` is made
on the meta device from the config's model keys (as ``moshi.models.loaders`` does, minus the
file look-ups), and every parameter's name and shape is written out under the name it has in
a released file. moshi 0.2.13 names a layer's attention projections ``in_projs.0`` /
``out_projs.0`` in memory and renames the file's ``in_proj_weight`` / ``out_proj.weight`` at
load (``StreamingMultiheadAttention._load_hook``); Kyutai's files use the latter (the
transformers conversion script reads ``in_proj_weight`` from them), so those are written. Our loader's layout is
tested against these files (tests/engine/stt/test_stt_checkpoint.py).

    python scripts/stt_manifest.py tests/data/stt/stt-2.6b-en.config.json \
        tests/data/stt/stt-2.6b-en_manifest.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch

# keys of config.json that moshi's CheckpointInfo pops before building the LM
_NOT_MODEL_KEYS = (
    "moshi_name",
    "mimi_name",
    "mimi_config_name",
    "tokenizer_name",
    "lora_name",
    "model_type",
    "lm_gen_config",
    "tts_config",
    "stt_config",
    "model_id",
)


def _file_name(name: str) -> str:
    """moshi's in-memory name -> the released file's (one projection per step: ``.0`` only)."""
    for memory, file in ((".in_projs.", ".in_proj_weight"), (".out_projs.", ".out_proj.weight")):
        if memory in name:
            head, _, tail = name.partition(memory)
            if tail != "0.weight":
                raise ValueError(f"{name}: per-step projections are not an STT layout")
            return head + file
    return name


def moshi_manifest(config: dict[str, Any]) -> dict[str, Any]:
    """Names/shapes of moshi's LMModel for a release config.json (meta device, no weights)."""
    from moshi.models.lm import LMModel

    kwargs = {k: v for k, v in config.items() if k not in _NOT_MODEL_KEYS}
    if kwargs.pop("conditioners", None):
        raise ValueError("this STT manifest builder handles no conditioners")
    with torch.device("meta"):
        model = LMModel(device="meta", dtype=torch.bfloat16, **kwargs)
    tensors = {_file_name(name): list(t.shape) for name, t in model.state_dict().items()}
    tensors = dict(sorted(tensors.items()))
    return {
        "dtype": "bfloat16",
        "num_params": sum(math.prod(s) for s in tensors.values()),
        "tensors": tensors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--source", default="", help="where the config values come from")
    args = parser.parse_args()
    manifest = moshi_manifest(json.loads(args.config.read_text()))
    manifest = {"source": args.source, **manifest}
    args.out.write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{args.out}: {len(manifest['tensors'])} tensors, {manifest['num_params']} parameters")


if __name__ == "__main__":
    main()
