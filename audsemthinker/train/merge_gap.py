"""How far a merged export's log-probs are from the adapter it was merged from.

Training scores every token with the unmerged adapter (``W x + B A x``); evaluation runs the
export, where ``B A`` was added into ``W`` and rounded to the base dtype (bf16 for a real run).
These are two computations of "the trained model", and in bf16 a small adapter update is partly
rounded away by the merge. :func:`merge_gap` measures the difference on a fixed probe batch
(:func:`probe_batch`: two short conversations with a tone and a chirp, scored on every text
token) before the export writes ``export_info.json``, so each export says how faithful it is.
The numbers are those of :func:`audsemthinker.train.sampler_mismatch.mismatch_stats`, plus
the largest token difference and the exact KL over the whole vocabulary per position.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from audsemthinker.train.sampler_mismatch import finish, mismatch_stats

SR = 16000
PROBE = (  # (question, answer, clip kind)
    ("Is the tone rising or steady?",
     "<think>one steady tone at a high pitch</think><answer>steady</answer>", "tone"),
    ("What do you hear?",
     "<think>a sweep from low to high</think><answer>a rising chirp</answer>", "chirp"),
)
THRESHOLD = 0.1


def _clip(kind: str, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    phase = 2 * np.pi * (660 * t if kind == "tone" else (200 + 600 * t) * t)
    return (0.3 * np.sin(phase)).astype(np.float32)


def probe_batch(processor) -> dict[str, torch.Tensor]:
    """The fixed batch: processor outputs plus ``score_mask`` (1 where the next token is text).

    Deterministic (no randomness, no files), so two exports of the same adapter report the
    same numbers.
    """
    texts = [processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "audio", "audio": "probe.wav"},
                                      {"type": "text", "text": question}]},
         {"role": "assistant", "content": [{"type": "text", "text": answer}]}],
        tokenize=False) for question, answer, _ in PROBE]
    enc = processor(text=texts, audio=[_clip(kind) for *_, kind in PROBE], return_tensors="pt",
                    padding=True)
    tok = processor.tokenizer
    audio_id = tok.convert_tokens_to_ids("<|AUDIO|>")
    nxt = enc["input_ids"][:, 1:]
    score = enc["attention_mask"][:, 1:].bool() & enc["attention_mask"][:, :-1].bool() \
        & (nxt != audio_id)
    return {**dict(enc), "score_mask": score.long()}


@torch.no_grad()
def token_logps(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[B, T-1, V]`` float32 log-softmax of the next-token logits (eval mode, no grad)."""
    was_training = model.training
    model.eval()
    try:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       input_features=batch["input_features"],
                       feature_attention_mask=batch["feature_attention_mask"]).logits
    finally:
        model.train(was_training)
    return logits[:, :-1].float().log_softmax(-1)


def merge_gap(adapter_logps: torch.Tensor, merged_logps: torch.Tensor,
              batch: dict[str, torch.Tensor], threshold: float = THRESHOLD) -> dict:
    """The gap between two :func:`token_logps` of the probe batch (the adapter's first).

    Returns:
        ``tokens``, ``mean_abs_diff``, ``max_abs_diff`` (of the log-probs of the probe's own
        next tokens), ``share_above_threshold`` and ``threshold``, and ``kl``: the exact
        KL(adapter || merged) over the vocabulary, averaged over the scored positions.
    """
    mask = batch["score_mask"].bool()
    target = batch["input_ids"][:, 1:, None]
    a = adapter_logps.gather(-1, target).squeeze(-1)
    m = merged_logps.gather(-1, target).squeeze(-1)
    stats = finish(mismatch_stats(a, m, mask, threshold))
    kl = (adapter_logps.exp() * (adapter_logps - merged_logps)).sum(-1)[mask]
    stats["kl"] = float(kl.mean()) if kl.numel() else 0.0
    stats["max_abs_diff"] = float((a - m).abs()[mask].max()) if mask.any() else 0.0
    return {"tokens": int(mask.sum()), **stats, "threshold": threshold}
