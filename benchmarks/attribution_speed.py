"""Attribution speed and storage: AirRep (encode, then dot products) vs gradient featurisation.

For target LMs of three real shapes with random weights (only time is measured):

- ``qwen2-6m``: the calibration Qwen2 of DESIGN.md §6 (4 layers, width 256, MLP 768, vocab 8,192);
- ``smollm-135m``: SmolLM-135M's Llama shape (30 layers, width 576, 9/3 heads, MLP 1,536,
  vocab 49,152, tied);
- ``qwen2.5-0.5b``: Qwen2.5-0.5B's Qwen2 shape (24 layers, width 896, 14/2 heads, MLP 4,864,
  vocab 151,936, tied),

it times Grad-Dot, LoGra and TRAK with the ``paper`` preset (MLP linear layers, 16 x 16
Kronecker projection per layer, max 512 tokens, precision ``auto``: bf16 on GPU, float32 on
CPU): ``fit`` on the examples (the train-side featurisation, plus K-FAC factors or the TRAK
solve) and ``score`` of the same examples as queries (query featurisation, preconditioning, dot
products). AirRep is timed as the AirRep encoder (all-MiniLM-L6-v2 + its projection, same
precision rule, max 512 tokens) encoding the queries and scoring them against the stored train
embeddings, alone (``airrep``) and as the shipped recipe's hybrid score (``airrep+bm25+bag``): a
BM25 index over the response tokens the target LM reads, and the token bag appended to the
embedding (over a ``qwen2-6m``-shaped embedding table, width 256: at another target LM the bag is
that LM's width wide); the ratios are the hybrid's. Examples: real P3 examples with long
prompts (the lm.data tokens are counted and printed). Throughput = examples / seconds of the
query pass; storage = floats stored per training example.

Run from the repository root::

    .venv/bin/python -m benchmarks.attribution_speed
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, PretrainedConfig, Qwen2Config

from airrep_core.config.baselines import GradDotConfig, LograConfig, TrakConfig
from airrep_core.config.encoder import EncoderTrainConfig
from airrep_core.data.examples import Example
from airrep_core.encoder.model import AirRepEncoder
from airrep_core.encoder.token_bag import TokenBag
from airrep_core.lm.data import tokenize_example
from airrep_core.lm.tokenizer import train_bpe_tokenizer
from airrep_core.methods import GradientAttributor
from airrep_core.methods.airrep import AirRepAttributor

MAX_LENGTH = 512
LONG_PROMPT_TEMPLATES = (
    "cnn_dailymail_3_0_0_news_summary",
    "xsum_DOC_tldr",
    "samsum_Summarize_",
    "cosmos_qa_context_answer_to_question",
    "ropes_prompt_mix",
    "quoref_Find_Answer",
    "imdb_Reviewer_Enjoyment",
    "duorc_SelfRC_question_answering",
)


SHAPE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
)
TARGET_SHAPES: dict[str, tuple[type[PretrainedConfig], tuple[int | None, ...]]] = {
    # name: (config class, values of SHAPE_FIELDS; vocab None: the calibration tokenizer's)
    "qwen2-6m": (Qwen2Config, (None, 256, 768, 4, 4, 4)),
    "smollm-135m": (LlamaConfig, (49_152, 576, 1_536, 30, 9, 3)),
    "qwen2.5-0.5b": (Qwen2Config, (151_936, 896, 4_864, 24, 14, 2)),
}
TARGET_COMMON = {"tie_word_embeddings": True, "max_position_embeddings": 2048, "use_cache": False}


def target_configs(vocab_size: int) -> dict[str, PretrainedConfig]:
    """The three target-LM shapes of ``TARGET_SHAPES`` (``vocab_size`` only for the calibration
    model)."""
    configs = {}
    for name, (config_cls, shape) in TARGET_SHAPES.items():
        fields = dict(zip(SHAPE_FIELDS, shape, strict=True))
        fields["vocab_size"] = fields["vocab_size"] or vocab_size
        configs[name] = config_cls(**fields, **TARGET_COMMON)
    return configs


def data_dir() -> Path:
    """``$AIRREP_DATA_DIR``, default ``<repo>/../shared/data``."""
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return Path(os.environ.get("AIRREP_DATA_DIR", default))


def long_examples(count: int) -> list[Example]:
    """``count`` real P3 examples, round-robin over long-prompt templates."""
    per_template = -(-count // len(LONG_PROMPT_TEMPLATES))
    by_template = []
    for template in LONG_PROMPT_TEMPLATES:
        path = data_dir() / "flan_p3" / f"{template}.jsonl"
        rows = []
        with path.open() as lines:
            for line_number, line in enumerate(lines, start=1):
                row = json.loads(line)
                response = row["completion"].removesuffix("<|endoftext|>").strip()
                if response:
                    rows.append(Example(f"{template}:{line_number}", row["prompt"], response))
                if len(rows) == per_template:
                    break
        by_template.append(rows)
    mixed = [rows[i] for i in range(per_template) for rows in by_template if i < len(rows)]
    return mixed[:count]


@dataclass
class Timing:
    """One method on one model: throughput of the query pass and stored floats per example."""

    model: str
    n_parameters: int
    method: str
    floats_per_example: float
    fit_examples_per_second: float
    query_examples_per_second: float


def time_gradient_methods(
    name: str, config: PretrainedConfig, tokenizer, examples: Sequence[Example]
) -> list[Timing]:
    """Fit and score ``examples`` with Grad-Dot, LoGra and TRAK (paper preset) on a random model."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    n_parameters = sum(p.numel() for p in model.parameters())
    settings = {"batch_size": 4, "max_length": MAX_LENGTH}
    attributors = [
        GradientAttributor(model, tokenizer, GradDotConfig.preset("paper", **settings)),
        GradientAttributor(model, tokenizer, LograConfig.preset("paper", **settings)),
        GradientAttributor(model, tokenizer, TrakConfig.preset("paper", **settings)),
    ]
    attributors[0].featurizer.features(examples[:2])  # warm-up (allocator, autocast weight cache)
    timings = []
    for attributor in attributors:
        started = time.perf_counter()
        attributor.fit(examples)
        fitted = time.perf_counter()
        attributor.score(examples)
        scored = time.perf_counter()
        timings.append(
            Timing(
                name,
                n_parameters,
                attributor.name,
                attributor.storage_floats_per_example,
                len(examples) / (fitted - started),
                len(examples) / (scored - fitted),
            )
        )
        print(
            f"  {name} {attributor.name}: {timings[-1].query_examples_per_second:.3f} ex/s",
            flush=True,
        )
    del model, attributors
    return timings


def time_airrep(
    examples: Sequence[Example],
    tokenizer: object,
    lexical_weight: float = 0.0,
    token_bag: TokenBag | None = None,
) -> Timing:
    """The AirRep encoder (MiniLM + its projection, the ``mini`` recipe's text view) behind the
    evaluation's attributor: ``fit`` encodes the train side; ``score`` encodes the queries and
    takes dot products. With ``lexical_weight`` > 0 it is the hybrid score (plus a BM25 index
    over the target LM's ``tokenizer`` pieces, the recipe's lexical term, and its scores), with
    ``token_bag`` the bag appended to every embedding."""
    recipe = EncoderTrainConfig.preset("mini")
    encoder = AirRepEncoder.from_backbone(
        "all-MiniLM-L6-v2",
        max_length=MAX_LENGTH,
        projection_init="identity",
        normalize=True,
        text_view=recipe.text_view,
        lexical=recipe.lexical,
        lexical_tokenizer=tokenizer,
        token_bag=token_bag,
    )
    encoder.lexical_weight = lexical_weight
    encoder.encode_examples(examples[:8], precision="auto")  # warm-up
    attributor = AirRepAttributor(encoder, "attention", batch_size=32, precision="auto")
    started = time.perf_counter()
    attributor.fit(examples)
    fitted = time.perf_counter()
    scores = attributor.score(examples)
    scored = time.perf_counter()
    assert scores.shape == (len(examples), len(examples))
    n_parameters = sum(p.numel() for p in encoder.parameters())
    return Timing(
        "(encoder)",
        n_parameters,
        "airrep+bm25+bag" if token_bag else "airrep+bm25" if lexical_weight else "airrep",
        attributor.storage_floats_per_example,
        len(examples) / (fitted - started),
        len(examples) / (scored - fitted),
    )


def format_table(airrep: Timing, timings: Sequence[Timing], plain: Timing | None = None) -> str:
    """The table: per model and method, throughput, storage, and the ratios of ``airrep`` (the
    shipped score, the hybrid when it is the default) to each gradient method; ``plain`` is the
    dot product alone, listed for reference."""
    header = (
        f"{'target LM':<14} {'params':>7} {'method':<15} {'floats/ex':>9} {'fit ex/s':>9} "
        f"{'query ex/s':>10} {'AirRep x faster':>15} {'AirRep x less storage':>21}"
    )
    lines = [header, "-" * len(header)]
    for row in (plain, airrep) if plain is not None else (airrep,):
        lines.append(
            f"{'any':<14} {row.n_parameters / 1e6:>6.0f}M {row.method:<15} "
            f"{row.floats_per_example:>9.0f} {row.fit_examples_per_second:>9.2f} "
            f"{row.query_examples_per_second:>10.2f} "
            f"{airrep.query_examples_per_second / row.query_examples_per_second:>15.1f} "
            f"{row.floats_per_example / airrep.floats_per_example:>21.1f}"
        )
    for t in timings:
        lines.append(
            f"{t.model:<14} {t.n_parameters / 1e6:>6.0f}M {t.method:<15} {t.floats_per_example:>9.0f} "
            f"{t.fit_examples_per_second:>9.3f} {t.query_examples_per_second:>10.3f} "
            f"{airrep.query_examples_per_second / t.query_examples_per_second:>15.1f} "
            f"{t.floats_per_example / airrep.floats_per_example:>21.1f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--airrep-examples", type=int, default=64)
    parser.add_argument("--gradient-examples", type=int, default=8, help="per model up to 135M")
    parser.add_argument("--large-examples", type=int, default=4, help="for the 0.5B model")
    parser.add_argument("--models", default="qwen2-6m,smollm-135m,qwen2.5-0.5b")
    args = parser.parse_args()
    started = time.perf_counter()
    examples = long_examples(max(args.airrep_examples, args.gradient_examples))
    tokenizer = train_bpe_tokenizer((f"{e.prompt} {e.response}" for e in long_examples(400)), 8192)
    lengths = [len(tokenize_example(tokenizer, e.prompt, e.response, MAX_LENGTH)) for e in examples]
    print(
        f"torch threads: {torch.get_num_threads()}; target-LM tokens per example: mean {np.mean(lengths):.0f}"
    )
    plain = time_airrep(examples[: args.airrep_examples], tokenizer)
    table = torch.randn(len(tokenizer), 256).numpy()  # qwen2-6m's width; only time is measured
    recipe = EncoderTrainConfig.preset("mini")
    bag = TokenBag(
        tokenizer,
        table,
        recipe.lexical.lm_max_length,
        max_query_tokens=recipe.token_bag_max_query_tokens,
    )
    bag.fit(examples[: args.airrep_examples])
    airrep = time_airrep(examples[: args.airrep_examples], tokenizer, 1.0, bag)
    for row in (plain, airrep):
        print(f"  {row.method}: {row.query_examples_per_second:.2f} ex/s", flush=True)
    configs = target_configs(len(tokenizer))
    timings = []
    for name in args.models.split(","):
        count = args.large_examples if name == "qwen2.5-0.5b" else args.gradient_examples
        timings += time_gradient_methods(name, configs[name], tokenizer, examples[:count])
    print(format_table(airrep, timings, plain))
    print(f"(total {time.perf_counter() - started:.0f} s)")
    print(
        "reproduce: .venv/bin/python -m benchmarks.attribution_speed "
        f"--airrep-examples {args.airrep_examples} --gradient-examples {args.gradient_examples} "
        f"--large-examples {args.large_examples} --models {args.models}"
    )


if __name__ == "__main__":
    main()
