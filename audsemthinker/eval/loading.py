"""The model an evaluation runs: loaded once, only when a benchmark needs new predictions."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from audsemthinker.eval.settings import (
    EvalSettings,
)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------
def load_model(cfg: DictConfig, settings: EvalSettings):
    """Load the thinker named by ``cfg.model`` (hub id or folder), plus ``eval.adapter`` if set.

    Returns:
        ``(model, processor)``; the model in eval mode on ``settings.device``.
    """
    import torch

    from audsemthinker.config import to_dataclass
    from audsemthinker.model.loader import ModelConfig, check_token_ids, load_thinker
    from audsemthinker.model.processor import build_processor

    device = settings.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    mcfg = to_dataclass(cfg.model, ModelConfig)
    model = load_thinker(mcfg, device=device)
    processor = build_processor(mcfg.name_or_path)
    check_token_ids(model, processor.tokenizer)
    if settings.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, settings.adapter, is_trainable=False)
        if settings.merge_adapter:
            model = model.merge_and_unload()
        log.info("evaluating adapter %s on %s", settings.adapter, mcfg.name_or_path)
    return model.eval(), processor


class LazyModel:
    """Loads the model on first use, so re-scoring a finished evaluation loads nothing."""

    def __init__(self, cfg, settings, model=None, processor=None):
        self.cfg, self.settings, self.pair = cfg, settings, None
        if model is not None:
            if processor is None:
                raise ValueError("run_eval: pass the processor together with the model")
            self.pair = (model.eval(), processor)
        elif processor is not None:
            raise ValueError("run_eval: a processor without a model")

    def get(self):
        if self.pair is None:
            self.pair = load_model(self.cfg, self.settings)
        return self.pair


def model_info(cfg: DictConfig, settings: EvalSettings, label: str | None = None) -> dict:
    """What was evaluated: the base (hub id or folder), the adapter, the dtype, and the label
    of a model handed over in memory (whose weights the path alone does not name)."""
    return {"name_or_path": str(cfg.model.name_or_path), "adapter": settings.adapter,
            "dtype": str(cfg.model.get("dtype")), "in_memory": label}
