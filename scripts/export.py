"""Merge a LoRA run into the thinker and write a standalone thinker folder.

    python scripts/export.py outputs/run/<time> exported/sft            # the run's final/ adapter
    python scripts/export.py outputs/run/<time>/checkpoint-500 exported/ckpt500 \
        --config outputs/run/<time>/config.yaml
    python scripts/export.py <adapter> exported/x --model-path /models/Qwen2.5-Omni-7B
    python scripts/export.py outputs/run/<time>/checkpoint-500 exported/x   # FSDP checkpoint too

The base model comes from the run's config.yaml (its ``model`` section), found next to the
adapter or one folder up, unless --config / --model-path say otherwise. The output loads with
``load_thinker`` and with ``Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from omegaconf import OmegaConf


def find_config(source: Path) -> Path:
    """The run's ``config.yaml``: beside ``source`` or in one of its two parents."""
    for folder in (source, source.parent, source.parent.parent):
        if (folder / "config.yaml").exists():
            return folder / "config.yaml"
    raise FileNotFoundError(f"no config.yaml at or above {source}; pass --config")


def main(argv: list[str] | None = None) -> Path:
    from audsemthinker.train.export import export_merged

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("source", type=Path, help="run folder, adapter folder or checkpoint")
    ap.add_argument("out_dir", type=Path, help="folder to write")
    ap.add_argument("--config", type=Path, help="the run's config.yaml (default: found)")
    ap.add_argument("--model-path", help="base model folder or hub id (overrides the config)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run_cfg = OmegaConf.load(args.config or find_config(args.source))
    model = run_cfg.model
    if args.model_path:
        model.name_or_path = args.model_path
    return export_merged(args.source, model, args.out_dir, lora_cfg=run_cfg.get("lora"))


if __name__ == "__main__":
    main()
