"""Training: SFT (``train.sft``), GRPO (``train.grpo``), shared helpers (``train.common``) and
LoRA export (``train.export``).

Import-light on purpose (nothing is imported here): importing a submodule pulls in TRL and
torch only when a trainer is actually built.
"""
