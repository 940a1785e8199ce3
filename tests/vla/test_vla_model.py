"""QwenVLA on tiny configs of every Qwen family: real forward/backward passes, exact
save/load round trips, the genuine Qwen BPE, and the Qwen image-processor layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import Qwen2VLImageProcessor

from qrobot.scenario import load_scenario
from qrobot.vla.backbones import FAMILIES
from qrobot.vla.geometry import ray_config
from qrobot.vla.heads import KeypointPool
from qrobot.vla.model import Normalizer, QwenVLA, VLAConfig
from qrobot.vla.tokenizer import UNK, InstructionTokenizer
from qrobot.vla.vision import patchify

SIDES = {"qwen2.5-vl": 112, "qwen3-vl": 128, "qwen3.5": 128}
TEXTS = ["put the red cube in the white bowl", "place the blue cube into the orange bowl"]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_patchify_matches_the_qwen_image_processor(family: str) -> None:
    fam = FAMILIES[family]
    side = SIDES[family]
    img = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    proc = Qwen2VLImageProcessor(
        min_pixels=side * side,
        max_pixels=side * side,
        patch_size=fam.patch_size,
        merge_size=fam.merge,
        temporal_patch_size=2,
        image_mean=list(fam.mean),
        image_std=list(fam.std),
    )
    ref = proc(images=[img], return_tensors="pt")
    pv, grid = patchify(torch.from_numpy(img)[None], side, fam.patch_size, fam.merge, fam.mean, fam.std)
    assert torch.equal(grid, ref["image_grid_thw"])
    assert torch.allclose(pv, ref["pixel_values"], atol=1e-5)


def test_tokenizer_is_the_genuine_qwen_bpe_trimmed(tmp_path: Path) -> None:
    tok = InstructionTokenizer.from_corpus("qwen2.5-72b-instruct", TEXTS)
    assert tok.qwen_encode("put the red cube")[:2] == [628, 279]  # Qwen2 vocabulary ids
    ids = tok.encode("put the blue cube in the white bowl")
    assert UNK not in ids and tok.decode(ids) == "put the blue cube in the white bowl"
    assert tok.encode("juggle")[0] == UNK  # outside the corpus
    tok.save(tmp_path)
    again = InstructionTokenizer.load(tmp_path)
    assert again.qwen_ids == tok.qwen_ids and again.encode(TEXTS[0]) == tok.encode(TEXTS[0])
    assert tok.vocab_size == len(tok.qwen_ids) + 6
    q35 = InstructionTokenizer.from_corpus("qwen3.5-27b", TEXTS)  # Qwen3.5's own ranks
    assert q35.decode(q35.encode(TEXTS[1])) == TEXTS[1]


def _batch(b: int = 4) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "images": torch.randint(0, 256, (b, 2, 128, 128, 3), dtype=torch.uint8, generator=g),
        "texts": [TEXTS[i % 2] for i in range(b)],
        "state": torch.randn(b, 13, generator=g),
        "actions": torch.rand(b, 8, 5, generator=g) * 2 - 1,
        "waypoints": torch.rand(b, 8, 3, generator=g),
        # what the instruction names decides the grounding label (here: one vector per text)
        "grounding": torch.stack([torch.linspace(-0.8, 0.8, 8) * (1 - 2 * (i % 2)) for i in range(b)]),
        # where the scene camera sees the named thing; the wrist camera has no label
        "keypoint": torch.tensor([[[0.6 * (1 - 2 * (i % 2)), -0.3], [float("nan")] * 2] for i in range(b)]),
    }


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_tiny_family_trains_and_round_trips(family: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    fam = FAMILIES[family]
    tok = InstructionTokenizer.from_corpus(fam.bpe, TEXTS)
    rng = np.random.default_rng(0)
    rays = ray_config(load_scenario("pick_place").cameras, "panda", plane_z=0.02)
    model = QwenVLA(
        VLAConfig(
            backbone=f"tiny-{family}",
            family=family,
            image_side=SIDES[family],
            grounding_dim=8,
            spatial_pool=True,
            fine_grounding=True,
            rays=rays,
        ),
        tok,
        norm={
            "actions": Normalizer.fit(rng.normal(size=(100, 5))),
            "state": Normalizer.fit(rng.normal(size=(100, 13))),
            "grounding": Normalizer.fit(0.1 * rng.normal(size=(100, 8))),
        },
    )
    assert type(model.backbone) is fam.model_cls
    assert model.flow.context.in_features == model.backbone.config.text_config.hidden_size
    assert model.grounding.pool.proj.in_features == model.flow.context.in_features
    # fine grounding: soft-argmax keypoints on the per-patch embeddings of both cameras
    assert model.grounding.keypoints.feat[0].in_features == model.backbone.config.vision_config.hidden_size
    assert model.grounding.rays is not None  # ... placed on the table by both cameras' geometry
    patches = 2 * (SIDES[family] // fam.patch_size) ** 2
    batch = _batch()
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    losses, grounding, keypoint = [], [], []
    for _ in range(25):
        loss = model.loss(batch, torch.Generator().manual_seed(len(losses)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        grounding.append(model.last_losses["grounding"])
        keypoint.append(model.last_losses["keypoint"])
    assert model._patches.shape == (4 * patches, model.grounding.keypoints.feat[0].in_features)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])  # it learns the toy batch
    assert np.median(grounding[-5:]) < 0.8 * np.median(grounding[:5])  # median: lr 1e-3 spikes
    assert np.median(keypoint[-5:]) < 0.5 * np.median(keypoint[:5])  # keypoint 0 finds the labelled patch
    model.eval()
    model.save_pretrained(tmp_path, card={"data": "toy batch"})
    again = QwenVLA.from_pretrained(tmp_path)
    a = model.predict_chunk(batch["images"], batch["texts"], batch["state"], torch.Generator().manual_seed(3))
    b = again.predict_chunk(batch["images"], batch["texts"], batch["state"], torch.Generator().manual_seed(3))
    assert a.shape == (4, 8, 5) and torch.equal(a, b)
    assert again.last_grounding.shape == (4, 8) and torch.equal(again.last_grounding, model.last_grounding)
    w = again.predict_waypoints(batch["images"], batch["texts"], batch["state"])
    assert w.shape == (4, 8, 3) and torch.equal(
        w, model.predict_waypoints(batch["images"], batch["texts"], batch["state"])
    )
    np.testing.assert_array_equal(again.norm["actions"].q99, model.norm["actions"].q99)
    assert "toy batch" in (tmp_path / "README.md").read_text()


def test_insulation_keeps_the_action_gradient_out_of_the_backbone() -> None:
    torch.manual_seed(0)
    tok = InstructionTokenizer.from_corpus(FAMILIES["qwen2.5-vl"].bpe, TEXTS)
    model = QwenVLA(VLAConfig(grounding_dim=8, spatial_pool=True, fine_grounding=True), tok)
    full = {k: v[:2] for k, v in _batch().items() if k not in ("waypoints", "keypoint")}  # a tabletop batch
    grounding_only = {k: v for k, v in full.items() if k != "actions"}

    def grads(batch: dict, insulate: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        model.zero_grad()
        model.loss(batch, torch.Generator().manual_seed(0), insulate=insulate).backward()
        return model.backbone.model.visual.patch_embed.proj.weight.grad.clone(), model.flow.context.weight.grad

    reference, _ = grads(grounding_only, False)
    insulated, flow_grad = grads(full, True)
    shared, _ = grads(full, False)
    assert torch.allclose(insulated, reference, atol=1e-7)  # only the grounding loss trains the backbone
    assert flow_grad is not None and flow_grad.abs().sum() > 0  # the action expert still learns
    assert not torch.allclose(shared, reference, atol=1e-7)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_keypoint_coordinates_follow_the_processor_patch_order(family: str) -> None:
    fam = FAMILIES[family]
    side = SIDES[family]
    grid = side // fam.patch_size
    kp = KeypointPool(patch_dim=8, summary_dim=8, cameras=1, grid=grid, merge=fam.merge)
    for row, col in [(0, 0), (1, 0), (0, 3), (grid - 1, grid - 2), (2, 5)]:
        img = torch.zeros(1, side, side, 3, dtype=torch.uint8)
        p = fam.patch_size
        img[0, row * p : (row + 1) * p, col * p : (col + 1) * p, 0] = 255  # one red patch
        pix, _ = patchify(img, side, p, fam.merge, fam.mean, fam.std)
        hit = int(pix.sum(1).argmax())
        expected = torch.tensor([(col + 0.5) / grid * 2 - 1, (row + 0.5) / grid * 2 - 1])
        assert torch.allclose(kp.xy[hit], expected), (row, col, kp.xy[hit])


def test_normalizer_q01_q99() -> None:
    x = np.random.default_rng(0).uniform(-3, 5, size=(10_000, 2))
    n = Normalizer.fit(x)
    np.testing.assert_allclose(n.q01, [-2.92, -2.92], atol=0.05)
    y = n.normalize(x)
    assert y.min() == -1 and y.max() == 1
    np.testing.assert_allclose(n.unnormalize(n.normalize(x[:10] * 0.5)), x[:10] * 0.5, atol=1e-5)


def test_config_errors_say_how_to_fix() -> None:
    with pytest.raises(ValueError, match=r"multiple of 28 for qwen2\.5-vl; e\.g\. 112"):
        VLAConfig(family="qwen2.5-vl", image_side=128)
    with pytest.raises(ValueError, match="family must be one of"):
        VLAConfig(family="llava")
