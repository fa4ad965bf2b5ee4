"""The ``data`` keys and the ``model`` and ``lora`` sections."""

from __future__ import annotations

from dataclasses import dataclass, field

DATA_KEYS = ("builder", "out_dir", "strict", "kwargs", "audio", "tokenizer", "report_name")


@dataclass
class ModelConfig:
    """The ``model`` config group (see ``configs/model/*.yaml``)."""

    name_or_path: str = "Qwen/Qwen2.5-Omni-7B"
    dtype: str = "bfloat16"
    attn_implementation: str = "auto"
    trust_remote_code: bool = False
    revision: str | None = None
    tiny: bool = False  # build the tiny random checkpoint at name_or_path if it is missing
    pretrain: str | None = None  # with tiny: pretrain it first (audsemthinker.train.tiny_base)
    gradient_checkpointing: bool = False


@dataclass
class LoraSettings:
    """The ``lora`` config group. ``preset: none`` means full fine-tuning."""

    preset: str = "released"
    target_modules: list[str] = field(default_factory=list)  # regexes; used when preset=custom
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    bias: str = "none"
    freeze_audio_encoder: bool = False
    freeze_vision: bool = True
