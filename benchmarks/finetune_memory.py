"""GPU memory of fine-tuning QwenVLA on the published Qwen configurations (the table in docs/vla.md).

    .venv/bin/python -m benchmarks.finetune_memory [--batch 16] [--rank 16] [--cameras 2]

Each configuration (the published config.json fields kept in tests/vla/test_real_checkpoints.py)
is built on the meta device, so nothing is downloaded; `qrobot.vla.finetune.memory_estimate`
counts weights, gradients and AdamW state exactly and traces the loss for the activations.
Both modes use bf16: LoRA keeps the frozen backbone in bf16 and the adapters and heads in
float32, full fine-tuning keeps float32 weights under bf16 autocast (mixed precision).
"""

from __future__ import annotations

import argparse
import copy

from qrobot.vla.backbones import FAMILIES
from qrobot.vla.finetune import FinetuneSpec, memory_estimate
from tests.vla.test_real_checkpoints import PUBLISHED

GIB = 2**30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rank", type=int, default=16, help="LoRA rank")
    ap.add_argument("--cameras", type=int, default=2)
    args = ap.parse_args()
    print(f"batch {args.batch}, {args.cameras} cameras, AdamW, bf16; LoRA rank {args.rank}; GiB")
    print(
        "| configuration | mode | trainable | weights | gradients + AdamW | bf16 weight copies "
        "| activations | total | total with checkpointing |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for hub_id, (family, published) in PUBLISHED.items():
        config = FAMILIES[family].config_cls.from_dict(copy.deepcopy(published))
        for mode in ("lora", "full"):
            spec = FinetuneSpec(mode=mode, dtype="bf16", lora_rank=args.rank)
            e = memory_estimate(config, spec, batch=args.batch, cameras=args.cameras)
            plain, ckpt = e["activations_plain"], e["activations_checkpointed"]
            static = e["total_bytes"] - e["activation_bytes"]
            print(
                f"| {hub_id} ({e['backbone_params'] / 1e9:.2f} B) | {mode} | {e['trainable_params'] / 1e6:,.1f} M "
                f"| {e['weight_bytes'] / GIB:.1f} | {(e['gradient_bytes'] + e['optimizer_bytes']) / GIB:.1f} "
                f"| {e['autocast_copy_bytes'] / GIB:.1f} | {plain / GIB:.1f} ({ckpt / GIB:.1f} checkpointed) "
                f"| **{(static + plain) / GIB:.1f}** | **{(static + ckpt) / GIB:.1f}** |",
                flush=True,
            )


if __name__ == "__main__":
    main()
