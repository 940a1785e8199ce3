"""Fine-tuning a real backbone (qrobot/vla/finetune.py), on the CPU.

Tiny checkpoints of each family are saved as a hub checkpoint is (weights, the genuine
tokenizer, the published image processor) and taken through the path `qrobot train
--backbone DIR` takes: QwenVLA built from the directory, `prepare` (LoRA or full, bf16,
activation checkpointing), real optimizer steps, `finetune.save`, `QwenVLA.from_pretrained`.
The memory estimate is checked against the published configurations on the meta device.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from qrobot.errors import QrobotError
from qrobot.vla import hub
from qrobot.vla.backbones import FAMILIES
from qrobot.vla.finetune import (
    ADAPTER_DIR,
    FinetuneSpec,
    autocast,
    memory_estimate,
    prepare,
    restore,
    save,
    trainable,
)
from qrobot.vla.model import QwenVLA, VLAConfig
from qrobot.vla.tokenizer import InstructionTokenizer, TextTokenizer, tokenizer_for
from tests.vla.test_real_checkpoints import PARAMS_B, PUBLISHED, TEXTS

TUNED = ["qwen2.5-vl", "qwen3-vl"]  # the families of the published checkpoints a GPU user fine-tunes
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """A tiny checkpoint directory per family, written once for the module when first asked for."""
    root, made = tmp_path_factory.mktemp("bases"), {}

    def base(family: str) -> Path:
        if family not in made:
            torch.manual_seed(0)
            made[family] = root / family
            hub.write_tiny_checkpoint(family, made[family])
        return made[family]

    return base


@pytest.fixture
def base_dir(request: pytest.FixtureRequest, bases: Callable[[str], Path]) -> Path:
    return bases(request.param)


def _vla(ckpt: Path) -> QwenVLA:
    """What train.py builds for `--backbone DIR`: the checkpoint's processor picks the side,
    its own tokenizer, the backbone through from_pretrained."""
    settings = hub.image_settings(ckpt)
    family = hub.checkpoint_family(ckpt, settings).name
    side = max(settings.min_side, settings.side_multiple * 4)
    config = VLAConfig(backbone=str(ckpt), family=family, image_side=side, cameras=["scene"])
    return QwenVLA(config, _tokenizer(str(ckpt)))


@functools.lru_cache(maxsize=4)
def _tokenizer(ckpt: str) -> TextTokenizer:
    return tokenizer_for(ckpt)  # AutoTokenizer on the checkpoint: seconds, so once per family


def _batch(vla: QwenVLA, b: int = 2) -> dict:
    g = torch.Generator().manual_seed(0)
    side = vla.config.image_side
    return {
        "images": torch.randint(0, 256, (b, 1, side, side, 3), dtype=torch.uint8, generator=g),
        "texts": [TEXTS[i % 2] for i in range(b)],
        "state": torch.rand(b, 13, generator=g) * 2 - 1,
        "actions": torch.rand(b, 8, 5, generator=g) * 2 - 1,
        "waypoints": torch.rand(b, 8, 3, generator=g) * 2 - 1,
    }


def _steps(vla: QwenVLA, spec: FinetuneSpec, n: int = 3) -> list[float]:
    opt = torch.optim.AdamW(trainable(vla), lr=1e-2)
    batch, losses = _batch(vla), []
    for i in range(n):
        with autocast(spec):
            loss = vla.loss(batch, torch.Generator().manual_seed(i))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _plain(name: str) -> str:
    return name.replace(".base_layer", "")


@pytest.mark.parametrize("base_dir", TUNED, indirect=True)
def test_lora_trains_only_adapters_and_heads_and_round_trips(base_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    vla = _vla(base_dir)
    before = {k: v.clone() for k, v in vla.backbone.state_dict().items()}
    prepare(vla, FinetuneSpec(mode="lora", lora_rank=4, lora_alpha=8, lora_dropout=0.0))
    train = {n for n, p in vla.named_parameters() if p.requires_grad}
    lora = {n for n in train if n.startswith("backbone.")}
    assert train - lora and all(n.split(".")[0] in ("flow", "waypoint", "grounding") for n in train - lora)
    assert all(".language_model.layers." in n and ".lora_" in n for n in lora)
    layers = vla.backbone.config.text_config.num_hidden_layers
    assert len(lora) == 2 * len(PROJECTIONS) * layers  # A and B on every projection of every layer
    adapters0 = {n: p.detach().clone() for n, p in vla.named_parameters() if n in lora}

    losses = _steps(vla, FinetuneSpec(mode="lora"))
    assert all(torch.isfinite(torch.tensor(losses)))
    after = vla.backbone.state_dict()
    base_now = {_plain(k): v for k, v in after.items() if ".lora_" not in k}
    assert base_now.keys() == before.keys() and all(torch.equal(before[k], base_now[k]) for k in before)
    changed = [n for n, p in vla.named_parameters() if n in lora and not torch.equal(p, adapters0[n])]
    assert len(changed) == len(lora)  # every A and B moved

    vla.eval()
    batch = _batch(vla)
    want = vla.predict_chunk(batch["images"], batch["texts"], batch["state"], torch.Generator().manual_seed(1))
    with torch.no_grad():
        ctx_want, _ = vla.encode(batch["images"], batch["texts"])
    out = tmp_path / "ckpt"
    save(vla, out)
    assert not (out / "backbone").exists() and (out / ADAPTER_DIR / "adapter_model.safetensors").is_file()
    adapter_bytes = (out / ADAPTER_DIR / "adapter_model.safetensors").stat().st_size
    assert adapter_bytes < 0.1 * sum(f.stat().st_size for f in base_dir.glob("*.safetensors"))

    with torch.no_grad():  # resuming: the saved adapter and heads back into the live model
        for p in trainable(vla):
            p.add_(1.0)
    restore([vla], out)
    again_live = vla.predict_chunk(batch["images"], batch["texts"], batch["state"], torch.Generator().manual_seed(1))
    assert torch.equal(again_live, want)

    again = QwenVLA.from_pretrained(out)  # base from vla_config.json's backbone, adapter merged
    assert type(again.backbone) is type(vla.backbone)  # the family's own class, the adapter merged in
    assert not any(".lora_" in n for n, _ in again.named_parameters())
    with torch.no_grad():
        ctx_got, _ = again.encode(batch["images"], batch["texts"])
    got = again.predict_chunk(batch["images"], batch["texts"], batch["state"], torch.Generator().manual_seed(1))
    torch.testing.assert_close(ctx_got, ctx_want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_lora_models_of_two_embodiments_share_one_adapter(bases: Callable[[str], Path], tmp_path: Path) -> None:
    torch.manual_seed(0)
    arm = _vla(bases("qwen2.5-vl"))
    base = dataclasses.replace(arm.config, robot="diffbot", tasks=["pointnav"])
    arm.config = dataclasses.replace(arm.config, robot="panda", tasks=["pick_place"])
    nav = QwenVLA(base, arm.tokenizer, backbone=arm.backbone)
    spec = FinetuneSpec(mode="lora", lora_rank=2)
    for m in (arm, nav):
        prepare(m, spec)  # the shared backbone gets its adapters once
    assert sum(".lora_A." in n for n, _ in arm.backbone.named_parameters()) == 2 * len(PROJECTIONS)
    _steps(arm, spec, n=1)
    _steps(nav, spec, n=1)
    save([arm, nav], tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / ADAPTER_DIR).is_dir() and not (tmp_path / "ckpt" / "backbone").exists()
    batch = _batch(nav.eval())
    again = QwenVLA.from_pretrained(tmp_path / "ckpt", robot="diffbot")  # the arm's model loads the same way
    want = nav.predict_waypoints(batch["images"], batch["texts"], batch["state"])
    got = again.predict_waypoints(batch["images"], batch["texts"], batch["state"])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_a_broken_adapter_is_one_error(bases: Callable[[str], Path], tmp_path: Path) -> None:
    tiny = QwenVLA(VLAConfig(), InstructionTokenizer.from_corpus("qwen2.5-72b-instruct", TEXTS))
    with pytest.raises(QrobotError, match="LoRA needs a pretrained backbone"):
        prepare(tiny, FinetuneSpec(mode="lora"))
    vla = _vla(bases("qwen2.5-vl"))
    prepare(vla, FinetuneSpec(mode="lora", lora_rank=2))
    save(vla, tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / ADAPTER_DIR / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    with pytest.raises(QrobotError, match=ADAPTER_DIR):
        QwenVLA.from_pretrained(tmp_path / "ckpt")


@pytest.mark.parametrize("base_dir", ["qwen3-vl"], indirect=True)
def test_full_finetune_trains_every_backbone_weight(base_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    vla = _vla(base_dir)
    vla.backbone.requires_grad_(False)  # prepare must undo this
    prepare(vla, FinetuneSpec(mode="full"))
    assert all(p.requires_grad for p in vla.parameters())
    visual0 = vla.backbone.model.visual.patch_embed.proj.weight.detach().clone()
    assert all(torch.isfinite(torch.tensor(_steps(vla, FinetuneSpec(mode="full"), n=2))))
    assert not torch.equal(visual0, vla.backbone.model.visual.patch_embed.proj.weight)  # the vision tower trains
    (tmp_path / "ckpt" / ADAPTER_DIR).mkdir(parents=True)  # left by an earlier LoRA save here
    save(vla.eval(), tmp_path / "ckpt")  # the whole backbone (its round trip: test_real_checkpoints)
    assert (tmp_path / "ckpt" / "backbone").is_dir() and not (tmp_path / "ckpt" / ADAPTER_DIR).exists()


@pytest.mark.parametrize("mode", ["lora", "full"])
@pytest.mark.parametrize("base_dir", ["qwen2.5-vl"], indirect=True)
def test_bf16_runs_on_the_cpu(base_dir: Path, mode: str) -> None:
    torch.manual_seed(0)
    vla = _vla(base_dir)
    spec = FinetuneSpec(mode=mode, dtype="bf16", lora_rank=4)
    prepare(vla, spec)
    dtypes = {n: p.dtype for n, p in vla.named_parameters()}
    assert all(d == torch.float32 for n, d in dtypes.items() if not n.startswith("backbone."))  # heads
    if mode == "lora":  # frozen base in bf16, adapters in float32
        assert {d for n, d in dtypes.items() if n.startswith("backbone.") and ".lora_" not in n} == {torch.bfloat16}
        assert {d for n, d in dtypes.items() if ".lora_" in n} == {torch.float32}
    else:  # mixed precision: float32 weights, bf16 compute
        assert set(dtypes.values()) == {torch.float32}
    losses = _steps(vla, spec, n=2)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in trainable(vla))


@pytest.mark.parametrize("base_dir", TUNED, indirect=True)
def test_gradient_checkpointing_gives_the_same_gradients(base_dir: Path) -> None:
    torch.manual_seed(0)
    vla = _vla(base_dir)
    prepare(vla, FinetuneSpec(mode="lora", lora_rank=4, lora_dropout=0.0, gradient_checkpointing=True))
    backbone = vla.backbone
    assert backbone.is_activation_checkpointing
    first = backbone.model.language_model.layers[0]
    assert first.gradient_checkpointing
    calls = []
    first.self_attn.register_forward_pre_hook(lambda *_: calls.append(1))  # inside the checkpointed forward
    batch = _batch(vla)

    def grads() -> dict[str, torch.Tensor]:
        vla.zero_grad()
        calls.clear()
        vla.loss(batch, torch.Generator().manual_seed(0)).backward()
        return {n: p.grad.clone() for n, p in vla.named_parameters() if p.grad is not None}

    with_ckpt, recomputed = grads(), len(calls)
    backbone.activation_checkpointing_disable()
    assert not backbone.is_activation_checkpointing
    without, once = grads(), len(calls)
    assert (recomputed, once) == (2, 1)  # the layer ran again in the backward pass
    assert with_ckpt.keys() == without.keys() and any(".lora_" in n for n in with_ckpt)
    for n in with_ckpt:
        torch.testing.assert_close(with_ckpt[n], without[n], rtol=1e-5, atol=1e-7)


def _lora_params(config, rank: int) -> int:
    """r * (in + out) over the seven projections of every language-model layer, from the config."""
    text = config.text_config
    d, heads, kv = text.hidden_size, text.num_attention_heads, text.num_key_value_heads
    head = getattr(text, "head_dim", None) or d // heads
    ff = text.intermediate_size
    per_layer = (d + heads * head) * 2 + (d + kv * head) * 2 + (d + ff) * 2 + (ff + d)
    return rank * per_layer * text.num_hidden_layers


@pytest.mark.parametrize("hub_id", ["Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen3-VL-2B-Instruct"])
def test_memory_estimate_of_the_published_configs(hub_id: str) -> None:
    family, published = PUBLISHED[hub_id]
    config = FAMILIES[family].config_cls.from_dict(copy.deepcopy(published))
    n = sum(p.numel() for p in hub.meta_backbone(config).parameters())  # independently, as test_real_checkpoints
    lo, hi = PARAMS_B[hub_id]
    assert lo <= n / 1e9 <= hi
    full = memory_estimate(config, FinetuneSpec(mode="full", dtype="bf16"), trace=False)
    lora = memory_estimate(config, FinetuneSpec(mode="lora", dtype="bf16", lora_rank=16), trace=False)
    heads = full["head_params"]
    assert full["backbone_params"] == lora["backbone_params"] == n and 0 < heads < 0.01 * n
    assert full["trainable_params"] == n + heads
    assert lora["trainable_params"] == _lora_params(config, 16) + heads
    assert lora["weight_bytes"] == 2 * n + 4 * lora["trainable_params"]  # frozen base in bf16
    assert full["weight_bytes"] == 4 * (n + heads)  # float32 master weights
    state = {k: v["gradient_bytes"] + v["optimizer_bytes"] for k, v in (("lora", lora), ("full", full))}
    assert state["full"] == 12 * (n + heads) and state["lora"] < state["full"] / 50

    if family == "qwen3-vl":  # the activations: one trace of the loss at batch 16 (two cameras)
        traced = memory_estimate(config, FinetuneSpec(mode="lora", dtype="bf16", gradient_checkpointing=True))
        text = config.text_config
        tokens = 2 * ((256 // 32) ** 2 + 2) + 24  # 256 px frames (the processor's floor), 24 text tokens
        layer_input = 16 * tokens * text.hidden_size * 2  # bf16 hidden states of one layer
        plain, ckpt = traced["activations_plain"], traced["activations_checkpointed"]
        assert ckpt == traced["activation_bytes"]
        assert text.num_hidden_layers * layer_input <= ckpt < plain  # LoRA needs every layer's input back
        assert traced["total_bytes"] == sum(v for k, v in traced.items() if k.endswith("_bytes") and k != "total_bytes")


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--finetune", "lora"], "LoRA needs a pretrained backbone"),
        (["--finetune", "half"], "invalid choice"),
        (["--lora-rank", "8"], "applies to --finetune lora only"),
        (["--lora-rank", "0"], "positive integer"),
        (["--device", "gpu"], "accepted: cpu, cuda"),
    ]
    + ([] if torch.cuda.is_available() else [(["--device", "cuda"], "--device: cuda")]),
)
def test_train_flags_are_checked_before_anything_runs(
    flags: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from qrobot.cli import main

    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "meta.json").write_text("{}")
    argv = ["train", "--dataset", str(tmp_path / "ds"), "--out", str(tmp_path / "out"), *flags]
    with pytest.raises(SystemExit) if "choice" in says or "positive" in says else contextlib.nullcontext():
        assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
