"""The Qwen vision-language-action model: backbones, heads, data, training."""

from transformers.utils import logging as _hf_logging

_hf_logging.disable_progress_bar()  # checkpoint loading bars would interleave with run output
