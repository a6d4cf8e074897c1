"""The base LM θ₀: a scratch Qwen2 with a corpus-trained BPE tokenizer, warmed up, saved as a
normal Hugging Face directory; or any model directory through ``from_pretrained``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lm_fixtures import read_p3_pairs
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from airrep_core.config.labels import BaseModelConfig
from airrep_core.data.examples import Example
from airrep_core.data.sampling import partition_corpus
from airrep_core.errors import ConfigError
from airrep_core.lm.base_model import (
    BaseModelReport,
    build_base_model,
    init_scratch_model,
    select_warmup_examples,
)
from airrep_core.lm.tokenizer import EOS_TOKEN, train_bpe_tokenizer
from airrep_core.lm.warmup import block_loss, pack_blocks, warm_up, warmup_text

CONFIG = BaseModelConfig.preset("tiny")
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_scratch_model_is_a_normal_hf_directory_and_warm_up_lowers_heldout_loss(
    corpus: list[Example], built: tuple[Path, BaseModelReport]
) -> None:
    out, report = built
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.model_type == "qwen2"
    assert model.config.num_hidden_layers == CONFIG.n_layers
    assert model.config.hidden_size // model.config.num_attention_heads == 32
    assert tokenizer.eos_token == EOS_TOKEN and len(tokenizer) <= CONFIG.vocab_size
    assert report.n_parameters == sum(p.numel() for p in model.parameters())
    assert report.heldout_loss_after < report.heldout_loss_before - 0.3
    # The saved weights are the reported best checkpoint: reloaded, they give its held-out loss.
    _, heldout = select_warmup_examples(corpus, CONFIG)
    blocks = pack_blocks(tokenizer, [warmup_text(e) for e in heldout], CONFIG.block_size)
    reloaded_loss = block_loss(model, blocks, CONFIG.batch_size, CPU, "float32")
    assert reloaded_loss == pytest.approx(report.heldout_loss_after, abs=1e-4)


def test_build_is_deterministic(
    corpus: list[Example], built: tuple[Path, BaseModelReport], tmp_path: Path
) -> None:
    out, report = built
    again = build_base_model(list(reversed(corpus)), CONFIG, tmp_path)
    assert again.heldout_curve == report.heldout_curve
    first, second = load_file(out / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_warm_up_uses_only_the_base_share(corpus: list[Example]) -> None:
    warmup, heldout = select_warmup_examples(corpus, CONFIG)
    base_ids, label_ids = partition_corpus([e.example_id for e in corpus], CONFIG.corpus_share)
    used = {e.example_id for e in warmup + heldout}
    assert used <= set(base_ids) and not used & set(label_ids)
    assert not {e.example_id for e in warmup} & {e.example_id for e in heldout}
    assert len(heldout) == CONFIG.n_heldout_examples
    assert len(warmup) == min(CONFIG.n_warmup_examples, len(base_ids) - len(heldout))


def test_warm_up_stops_when_heldout_loss_stops_improving(corpus: list[Example]) -> None:
    config = CONFIG.replace(min_improvement=100.0, patience=2, eval_every=3, max_steps=50)
    warmup, heldout = select_warmup_examples(corpus, config)
    tokenizer = train_bpe_tokenizer([warmup_text(e) for e in warmup], config.vocab_size)
    torch.manual_seed(0)
    model = init_scratch_model(config, tokenizer)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    train = pack_blocks(tokenizer, [warmup_text(e) for e in warmup], config.block_size)
    held = pack_blocks(tokenizer, [warmup_text(e) for e in heldout], config.block_size)
    result = warm_up(model, train, held, config, CPU)
    assert result.stopped_early and result.steps == 6
    assert [step for step, _ in result.heldout_curve] == [0, 3, 6]
    # No evaluation beat the start by 100 nats, so the best checkpoint is the initial one.
    assert result.best_loss == result.heldout_curve[0][1]
    assert all(torch.equal(initial[k], v) for k, v in model.state_dict().items())


def test_a_model_directory_loads_through_from_pretrained(
    corpus: list[Example], built: tuple[Path, BaseModelReport], tmp_path: Path
) -> None:
    out, _ = built
    config = BaseModelConfig(model=str(out), corpus_share=0.0)
    report = build_base_model(corpus, config, tmp_path)
    assert report.heldout_loss_before is None and report.model == str(out)
    first, second = load_file(out / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    assert all(torch.equal(first[name], second[name]) for name in first)
    with pytest.raises(ValueError, match="cannot load a causal LM"):
        build_base_model(corpus, BaseModelConfig(model=str(tmp_path / "missing")), tmp_path)


def test_tokenizer_is_byte_level_and_lossless() -> None:
    texts = [warmup_text(Example("x", p, r)) for p, r in read_p3_pairs(0, 4)]
    tokenizer = train_bpe_tokenizer(texts, 500)
    odd = "Ünïcödé ✓ — 数字 12345\n\ttabs"
    assert tokenizer.decode(tokenizer(odd)["input_ids"]) == odd
    assert len(tokenizer) <= 500 and tokenizer.pad_token_id == tokenizer.eos_token_id


def test_config_keeps_head_size_usable_by_vllm() -> None:
    with pytest.raises(ConfigError, match="head size >= 32"):
        BaseModelConfig(hidden_size=64, n_heads=4)
    with pytest.raises(ConfigError, match="n_kv_heads"):
        BaseModelConfig(n_heads=4, n_kv_heads=3)
