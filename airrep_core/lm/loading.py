"""Loading a causal LM and its tokenizer through the real ``from_pretrained`` path: a Hugging
Face hub id (offline when the files are cached) or a ``save_pretrained`` directory, with an
optional unmerged LoRA adapter (peft). The one loader of the target LM for fine-tuning, loss
evaluation and the model baselines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from airrep_core.runtime import resolve_device

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
"""The model weight dtypes a loader or loss backend accepts, by name."""


def require_dir_with(directory: Path, file_name: str, what: str) -> Path:
    """``directory`` as a ``Path``; ``FileNotFoundError`` naming it when ``file_name`` is missing."""
    directory = Path(directory)
    if not (directory / file_name).is_file():
        raise FileNotFoundError(f"{directory}: no {file_name}, so not a saved {what} directory")
    return directory


def load_causal_lm(
    name_or_path: str | Path,
    device: str | torch.device = "auto",
    *,
    revision: str = "",
    adapter_dir: Path | None = None,
    dtype: str = "float32",
) -> tuple[torch.nn.Module, Any]:
    """``(model, tokenizer)``: weights in ``dtype`` (one of ``DTYPES``) on
    ``resolve_device(device)``, eval mode; the tokenizer gets its EOS as pad token when it has
    none (for batching).

    Args:
        name_or_path: a local model directory (must hold ``config.json``) or a hub id.
        revision: hub revision (commit or tag); empty = the default branch.
        adapter_dir: a saved LoRA adapter applied unmerged on top (``PeftModel``).
    Raises:
        FileNotFoundError: a local path without ``config.json``, or an adapter directory without
            ``adapter_config.json``.
        ValueError: an unknown dtype, a model loadable from neither the disk nor the hub, or a
            tokenizer without an EOS token.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is invalid; allowed: {sorted(DTYPES)}")
    source = str(name_or_path)
    if Path(source).exists():
        source = str(require_dir_with(Path(source), "config.json", "model"))
    kwargs: dict[str, Any] = {"revision": revision} if revision else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=DTYPES[dtype], **kwargs)
    except OSError as e:
        raise ValueError(
            f"cannot load a causal LM from {source!r}: not a local model directory and not "
            f"loadable from the hub (offline: HF_HUB_OFFLINE=1 needs the files cached): {e}"
        ) from e
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the tokenizer of {source!r} has no EOS token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if adapter_dir is not None:
        from peft import PeftModel

        adapter_dir = require_dir_with(adapter_dir, "adapter_config.json", "LoRA adapter")
        model = PeftModel.from_pretrained(model, adapter_dir)
    target = device if isinstance(device, torch.device) else resolve_device(device)
    return model.to(target).eval(), tokenizer
