"""Fine-tuning a real Qwen backbone: LoRA (`peft`) or full, bf16, activation checkpointing.

- `FinetuneSpec` + `prepare(model, spec)`: what trains (LoRA on the language model's
  attention and MLP projections with the vision tower and embeddings frozen, or every
  weight), in which precision, with or without checkpointing, on which device.
- `save(model, dir)`: a LoRA model is saved as the usual VLA files with the backbone as a
  PEFT adapter in DIR/backbone_adapter/ (the base is the one `vla_config.json` names);
  `QwenVLA.from_pretrained(dir)` reloads it through `checkpoint.load_backbone` ->
  `apply_adapter` (merged into the base weights).
- `memory_estimate(config, spec, batch)`: the GPU memory a step needs, from a published
  configuration built on the meta device (weights, gradients, AdamW state, activations
  traced through a real forward pass of QwenVLA's loss).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from qrobot.errors import QrobotError

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PretrainedConfig

    from qrobot.vla.backbones import Backbone
    from qrobot.vla.model import QwenVLA

ADAPTER_DIR = "backbone_adapter"
MODES = ("none", "lora", "full")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# LoRA targets: the language model's projections in every Qwen VL family (attention, Qwen3.5's
# linear attention, the MLP); the vision tower's own blocks (qkv/proj, gate/up/down in
# Qwen2.5-VL) stay frozen, so the match is anchored on model.language_model.
LANGUAGE_PROJECTIONS = (
    r".*\.language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|linear_attn\.(in_proj_qkv|in_proj_z|out_proj)"
    r"|mlp\.(gate|up|down)_proj)"
)
_WRAPPER = "_qrobot_peft"  # the backbone's PeftModel, kept in its __dict__ (not a registered submodule)


@dataclass(frozen=True)
class FinetuneSpec:
    mode: str = "none"  # none: train everything as built (tiny backbones from scratch); lora; full
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str = LANGUAGE_PROJECTIONS  # a regex on module names (peft matches it whole)
    dtype: str = "fp32"  # bf16: autocast; under LoRA the frozen backbone is also stored in bf16
    gradient_checkpointing: bool = False
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise QrobotError(f"finetune mode {self.mode!r}; accepted: {', '.join(MODES)}")
        if self.dtype not in DTYPES:
            raise QrobotError(f"dtype {self.dtype!r}; accepted: {', '.join(DTYPES)}")
        if not 1 <= self.lora_rank <= 4096 or self.lora_alpha <= 0 or not 0 <= self.lora_dropout < 1:
            raise QrobotError(
                f"LoRA rank {self.lora_rank} (1-4096), alpha {self.lora_alpha} (> 0), dropout {self.lora_dropout} (0-1)"
            )


def _peft() -> Any:
    try:
        import peft
    except ImportError:
        raise QrobotError("LoRA needs peft: pip install 'qrobot[finetune]'") from None
    return peft


def lora_config(spec: FinetuneSpec) -> Any:
    return _peft().LoraConfig(
        r=spec.lora_rank,
        lora_alpha=spec.lora_alpha,
        lora_dropout=spec.lora_dropout,
        target_modules=spec.target_modules,
        bias="none",
    )


def prepare(model: QwenVLA, spec: FinetuneSpec) -> QwenVLA:
    """Set `model` up for training as `spec` says, in place; returns it. The heads always
    train, in float32."""
    from qrobot.vla.backbones import TINY

    backbone = model.backbone
    if spec.mode == "lora" and model.config.backbone in TINY:
        raise QrobotError(
            f"LoRA needs a pretrained backbone (a checkpoint directory or a hub id), not {model.config.backbone}"
        )
    if spec.mode == "lora" and _wrapper(backbone) is None:  # (models of several embodiments share one)
        backbone.requires_grad_(False)
        if spec.dtype == "bf16":  # frozen: stored in bf16; the adapters stay float32 (peft casts them)
            backbone.to(torch.bfloat16)  # type: ignore[arg-type]
        wrapper = _peft().get_peft_model(backbone, lora_config(spec))  # injects into `backbone` in place
        wrapper.peft_config["default"].base_model_name_or_path = model.config.backbone
        backbone.__dict__[_WRAPPER] = wrapper
    elif spec.mode != "lora":  # none / full: every weight trains (full on a real checkpoint is exactly that)
        backbone.requires_grad_(True)
    if spec.gradient_checkpointing and not backbone.is_activation_checkpointing:  # non-reentrant
        backbone.activation_checkpointing_enable({"use_reentrant": False})
    return model.to(torch.device(spec.device)).train()


def _wrapper(backbone: nn.Module) -> PeftModel | None:
    return backbone.__dict__.get(_WRAPPER)


def autocast(spec: FinetuneSpec) -> contextlib.AbstractContextManager[Any]:
    """The context the loss runs in: bf16 autocast on the spec's device, or nothing."""
    if spec.dtype == "bf16":
        return torch.autocast(torch.device(spec.device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


@contextlib.contextmanager
def _backbone_unsaved(backbone: nn.Module) -> Iterator[None]:
    backbone.__dict__["save_pretrained"] = lambda *args, **kwargs: None  # shadows the method
    try:
        yield
    finally:
        del backbone.__dict__["save_pretrained"]


def save(models: QwenVLA | list[QwenVLA], directory: str | Path) -> None:
    """`save_pretrained` of one model (or `multi.save_models` of several sharing a backbone),
    except that a LoRA backbone is saved as its adapter alone (DIR/backbone_adapter/, PEFT's
    format) instead of DIR/backbone/."""
    import shutil

    d = Path(directory)
    group = models if isinstance(models, list) else [models]

    def write() -> None:
        if len(group) == 1:
            group[0].save_pretrained(d)
        else:
            from qrobot.vla.multi import save_models

            save_models(d, group)

    wrapper = _wrapper(group[0].backbone)
    if wrapper is None:
        write()
        if (d / ADAPTER_DIR).is_dir():  # from an earlier LoRA save here: it would win on load
            shutil.rmtree(d / ADAPTER_DIR)
        return
    with _backbone_unsaved(group[0].backbone):
        write()
    wrapper.save_pretrained(str(d / ADAPTER_DIR))


def _check_fit(result: Any, directory: Path) -> None:
    bad = {k: v for k, v in (("missing", result.missing_keys), ("unexpected", result.unexpected_keys)) if v}
    if bad:
        what = "; ".join(f"{k} keys: {sorted(v)[:3]}" for k, v in bad.items())
        raise QrobotError(f"{directory}: adapter does not fit the base backbone ({what})")


def apply_adapter(base: nn.Module, directory: Path) -> Any:
    """`base` with the PEFT adapter in `directory` loaded (every adapter weight present and
    of its shape) and merged into its weights: a plain model of the base's class."""
    peft = _peft()
    try:
        wrapper = peft.PeftModel(base, peft.PeftConfig.from_pretrained(str(directory)))
        result = wrapper.load_adapter(str(directory), "default")
    except QrobotError:
        raise
    except Exception as exc:  # missing/garbled files, shapes that do not fit the base
        raise QrobotError(f"{directory}: cannot load the adapter ({str(exc).splitlines()[0][:200]})") from None
    _check_fit(result, directory)
    return wrapper.merge_and_unload()


def restore(models: list[QwenVLA], directory: Path) -> None:
    """Resuming: what `save` wrote to `directory` into models `prepare` set up (sharing one
    backbone): under LoRA the adapter weights and each model's heads, otherwise whole models."""
    from qrobot.vla.checkpoint import load_heads
    from qrobot.vla.model import QwenVLA
    from qrobot.vla.multi import embodiment_dir

    wrapper = _wrapper(models[0].backbone)
    if wrapper is None:
        for m in models:
            m.load_state_dict(QwenVLA.from_pretrained(directory, robot=m.config.robot or None).state_dict())
        return
    peft, adapter = _peft(), Path(directory) / ADAPTER_DIR
    try:
        weights = peft.load_peft_weights(str(adapter))
    except Exception as exc:
        raise QrobotError(f"{adapter}: cannot load the adapter ({str(exc).splitlines()[0][:200]})") from None
    result = peft.set_peft_model_state_dict(wrapper, weights)
    _check_fit(type(result)([k for k in result.missing_keys if ".lora_" in k], result.unexpected_keys), adapter)
    for m in models:
        load_heads(m, embodiment_dir(Path(directory), m.config.robot or None) / "heads.safetensors")


class _Ids:
    """A stand-in tokenizer for the memory trace (the weights never see real text)."""

    vocab_size = 1000

    def encode(self, text: str) -> list[int]:
        return list(range(100, 112))

    def save(self, directory: Path) -> None:
        raise NotImplementedError


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def memory_estimate(
    config: PretrainedConfig, spec: FinetuneSpec, batch: int = 16, cameras: int = 2, trace: bool = True
) -> dict[str, int]:
    """Bytes a training step of QwenVLA on `config` takes under `spec` (AdamW, batch of
    `batch` samples of `cameras` frames at the side training would pick for the family's
    published image processor). Weights, gradients and optimizer state are exact; the
    activations are what autograd saves in a forward pass of the loss traced on the meta
    device (with checkpointing: every checkpointed layer's input plus the largest layer's
    saved tensors, which its recomputation holds), excluding the CUDA context and allocator slack."""
    from transformers import Qwen2VLImageProcessorPil
    from transformers.modeling_layers import GradientCheckpointingLayer

    from qrobot.vla import hub
    from qrobot.vla.backbones import family_of
    from qrobot.vla.model import QwenVLA, VLAConfig

    fam = family_of(config)
    settings = hub.settings_of(Qwen2VLImageProcessorPil(**hub.PUBLISHED_PREPROCESSOR[fam.name]))
    side = max(settings.min_side, settings.side_multiple * 4)  # what train.py picks for a real checkpoint
    names = ["scene", "wrist", "left", "right"][:cameras]
    with torch.device("meta"):
        backbone = cast("Backbone", hub.meta_backbone(config))
        vla = QwenVLA(
            VLAConfig(backbone="meta", family=fam.name, cameras=names, image_side=side), _Ids(), backbone=backbone
        )
        n_backbone = sum(p.numel() for p in backbone.parameters())
        n_heads = sum(p.numel() for p in vla.parameters()) - n_backbone
        if spec.mode == "lora":
            backbone.requires_grad_(False)
            _peft().get_peft_model(backbone, lora_config(spec))
    params = list(vla.parameters())
    n_train = sum(p.numel() for p in params if p.requires_grad)
    n_frozen = sum(p.numel() for p in params) - n_train
    low = spec.dtype == "bf16"
    out = {
        "backbone_params": n_backbone,
        "head_params": n_heads,
        "trainable_params": n_train,
        "weight_bytes": (2 if low and spec.mode == "lora" else 4) * n_frozen + 4 * n_train,
        "gradient_bytes": 4 * n_train,
        "optimizer_bytes": 8 * n_train,  # AdamW: exp_avg and exp_avg_sq in float32
        "autocast_copy_bytes": 2 * n_train if low else 0,  # bf16 casts of trainable weights, cached per step
        "activation_bytes": 0,
    }
    if trace:  # both figures come from one trace; activation_bytes is the one `spec` asks for
        plain, ckpt = _activations(vla, spec.dtype, batch, side, len(names), GradientCheckpointingLayer)
        out |= {"activations_plain": plain, "activations_checkpointed": ckpt}
        out["activation_bytes"] = ckpt if spec.gradient_checkpointing else plain
    out["total_bytes"] = sum(v for k, v in out.items() if k.endswith("_bytes"))
    return out


def _activations(vla: QwenVLA, dtype_name: str, batch: int, side: int, cams: int, layer_cls: type) -> tuple[int, int]:
    """Bytes autograd saves for backward in one traced loss pass, without and with activation
    checkpointing (see memory_estimate)."""
    from qrobot.vla import hub

    # autocast cannot run on meta: a bf16 estimate traces a bf16 backbone, whose hidden states
    # reach the float32 heads as autocast would hand them over
    vla.backbone.to(DTYPES[dtype_name])  # type: ignore[arg-type]
    weights = {id(p) for p in vla.parameters()}
    seen: dict[int, torch.Tensor] = {}  # base tensor id -> tensor (kept alive: ids stay unique)
    saved: dict[int, int] = {}  # checkpointable layer (id; -1 outside any) -> bytes saved inside it
    inputs: dict[int, int] = {}  # layer -> bytes of its input (what checkpointing keeps)
    current: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        base = t._base if t._base is not None else t
        if id(base) not in weights and id(base) not in seen:
            seen[id(base)] = base
            key = current[-1] if current else -1
            saved[key] = saved.get(key, 0) + _nbytes(base)
        return t

    def enter(module: nn.Module, args: tuple, kwargs: dict) -> None:
        current.append(id(module))
        hidden = args[0] if args else kwargs.get("hidden_states")
        inputs[id(module)] = _nbytes(hidden) if isinstance(hidden, torch.Tensor) else 0

    def leave(*_: Any) -> None:
        current.pop()

    def to_heads(module: nn.Module, args: tuple, out: Any) -> None:
        out.last_hidden_state = out.last_hidden_state.float()

    layers = [m for m in vla.modules() if isinstance(m, layer_cls)]
    handles = [m.register_forward_pre_hook(enter, with_kwargs=True) for m in layers]
    handles += [m.register_forward_hook(leave) for m in layers] + [vla.backbone.model.register_forward_hook(to_heads)]
    g = torch.Generator().manual_seed(0)
    sample = {
        "images": torch.randint(0, 256, (batch, cams, side, side, 3), dtype=torch.uint8, generator=g),
        "texts": ["put the red cube in the white bowl"] * batch,
        "state": torch.zeros(batch, vla.config.state_dim),
        "actions": torch.zeros(batch, vla.config.chunk, vla.config.action_dim),
    }
    try:
        with hub.MetaTrace(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            vla.loss(sample)
    finally:
        for h in handles:
            h.remove()
    outside = saved.pop(-1, 0)
    # a checkpointed layer keeps its input (if it needs a backward at all) and recomputes the rest
    kept = sum(inputs[k] for k, v in saved.items() if v)
    return outside + sum(saved.values()), outside + kept + max(saved.values(), default=0)
