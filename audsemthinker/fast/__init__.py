"""The exact fast paths of SFT and GRPO (torch, transformers and PEFT only, never trl).

The trainers reach them through one switch point each: ``train/sft_fast_trainer.py``
(``sft_trainer_class``) and ``train/grpo_fast_trainer.py`` (``grpo_trainer_class``).
"""
