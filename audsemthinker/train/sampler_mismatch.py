"""Sampler/trainer mismatch: measured every step, optionally corrected (``sampler`` config).

GRPO samples its rollouts with one computation (our decode loop or ``generate``, on the LoRA
merged into the base weights, with a KV cache) and scores them with another (TRL's log-prob
pass: the unmerged adapter, the whole sequence at once, under autocast). In bf16 the two
disagree: per token, ``log p_sampler(y) != log p_trainer(y)`` although both are "the policy".
RL frameworks that sample with vLLM measure this gap and correct for it with truncated
importance sampling (Yao et al. 2025, "Your efficient RL framework secretly brings you
off-policy RL training"); TRL 1.16 does both for its vLLM path only.

Here the sampler records the log-probability of every token it draws (the distribution it
actually drew from: temperature, top-k/p, suppressed tokens applied), and
:class:`SamplerMismatch` hands those to TRL exactly as its vLLM path would. TRL's own code then
computes the old-policy log-probs, the importance ratio ``exp(old - sampler)`` with
``vllm_importance_sampling_mode`` / ``_clip_max`` (set from ``sampler.mode`` / ``sampler.cap``),
logs ``sampling/sampling_logp_difference/*`` and ``sampling/importance_sampling_ratio/*`` and,
when ``sampler.correction`` is on, multiplies the per-token loss by the ratio. We add
:func:`mismatch_stats` (``sampling/mismatch/*``: mean |diff|, a KL estimate, the share of tokens
past a threshold). ``docs/sampler_mismatch.md`` says what the numbers mean.

The switch TRL reads is ``self.use_vllm``: it is True only between the end of our rollout and
the end of ``_generate_and_score_completions`` (so TRL never tries to call vLLM), and inside
``_compute_loss`` when the correction is on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from audsemthinker.schemas import SamplerSettings


def mismatch_stats(sampler_logps: torch.Tensor, trainer_logps: torch.Tensor,
                   mask: torch.Tensor, threshold: float) -> dict[str, torch.Tensor]:
    """Sums over the masked tokens of two log-prob computations of the same sampled tokens.

    Returned as sums plus a count so processes can be added up before dividing
    (:func:`finish`). Per token, with ``d = log p_trainer - log p_sampler``:

    - ``abs_diff``: ``|d|``;
    - ``kl``: ``exp(d) - 1 - d``, the non-negative "k3" estimator (Schulman 2020) of
      KL(sampler || trainer) from tokens the sampler drew;
    - ``above``: 1 where ``|d| > threshold``.

    Args:
        sampler_logps, trainer_logps: ``[B, T]``.
        mask: ``[B, T]``, nonzero on the completion tokens to count.
        threshold: for ``above``.
    """
    keep = mask.bool()
    d = (trainer_logps.float() - sampler_logps.float())[keep]
    keep_finite = torch.isfinite(d)
    d = d[keep_finite]
    return {"abs_diff": d.abs().sum(), "kl": (torch.expm1(d) - d).sum(),
            "above": (d.abs() > threshold).sum().float(),
            "tokens": torch.tensor(float(d.numel()), device=d.device)}


def finish(sums: dict[str, torch.Tensor]) -> dict[str, float]:
    """Means from :func:`mismatch_stats` sums (0 with no tokens)."""
    n = max(float(sums["tokens"]), 1.0)
    return {"mean_abs_diff": float(sums["abs_diff"]) / n, "kl": float(sums["kl"]) / n,
            "share_above_threshold": float(sums["above"]) / n}


class SamplerLogps:
    """The sampled tokens' log-probs of the latest rollout, as the sampler computed them."""

    def __init__(self):
        self.last: torch.Tensor | None = None  # [B, n] float32

    def record(self, logps: torch.Tensor) -> None:
        self.last = logps.detach().float()

    def generate(self, model, **kwargs):
        """``model.generate`` (the model's own class method) that records the log-probs.

        ``scores`` are the processed logits of each step (after the logits processors), i.e.
        the distribution each token was drawn from.
        """
        out = type(model).generate(model, **kwargs, output_scores=True,
                                   return_dict_in_generate=True)
        new = out.sequences[:, -len(out.scores):] if out.scores else out.sequences[:, :0]
        steps = [s.float().log_softmax(-1).gather(1, new[:, i:i + 1])
                 for i, s in enumerate(out.scores)]
        self.record(torch.cat(steps, 1) if steps else new.float())
        return out.sequences

    def take(self, completion_ids: list[list[int]]) -> list[list[float]]:
        """Each completion's log-probs (its own length), then forget them.

        Raises:
            RuntimeError: nothing recorded, or fewer rows / steps than the completions.
        """
        logps, self.last = self.last, None
        if logps is None:
            raise RuntimeError("the rollout recorded no sampler log-probs (a generation path "
                               "that bypasses the recorder); set sampler.measure=false")
        if logps.size(0) != len(completion_ids) or \
                max(map(len, completion_ids), default=0) > logps.size(1):
            raise RuntimeError(f"sampler log-probs {tuple(logps.shape)} do not cover "
                               f"{len(completion_ids)} completions")
        return [row[:len(ids)].tolist() for row, ids in zip(logps.cpu(), completion_ids)]


class SamplerMismatch:
    """The trainer's side: hands the sampler's log-probs to TRL and logs the mismatch."""

    def __init__(self, trainer, settings: SamplerSettings):
        """Point TRL's importance-sampling settings at ``settings`` (mode, cap).

        Raises:
            ValueError: the trainer already samples with vLLM (TRL owns that path), or the
                "vespo" loss with a sequence-level correction (TRL's vespo takes token ratios).
        """
        if trainer.use_vllm:
            raise ValueError("sampler settings apply to our own sampler, not to vLLM")
        if settings.correction and trainer.loss_type == "vespo" and \
                not settings.mode.startswith("token_"):
            raise ValueError(f"sampler.mode={settings.mode!r}: the vespo loss needs "
                             "token_truncate or token_mask")
        self.settings = settings
        self.recorder = SamplerLogps() if settings.measure else None
        trainer.vllm_importance_sampling_mode = settings.mode
        trainer.vllm_importance_sampling_clip_max = settings.cap
        trainer.vllm_importance_sampling_clip_min = None

    @staticmethod
    @contextlib.contextmanager
    def _as_vllm(trainer) -> Iterator[None]:
        saved = trainer.use_vllm, trainer.vllm_importance_sampling_correction
        try:
            yield
        finally:
            trainer.use_vllm, trainer.vllm_importance_sampling_correction = saved

    def scoring(self, trainer):
        """Around TRL's ``_generate_and_score_completions``: restores TRL's switches after."""
        return self._as_vllm(trainer)

    def generated(self, trainer, completion_ids: list[list[int]]) -> list[list[float]] | None:
        """The rollout's log-probs for TRL (None when not measuring); from here to the end of
        the scoring TRL treats them as vLLM's (old-policy pass, ratio, its metrics)."""
        if self.recorder is None:
            return None
        logps = self.recorder.take(completion_ids)
        trainer.use_vllm = trainer.vllm_importance_sampling_correction = True
        return logps

    def log(self, trainer, out: dict) -> None:
        """Log ``sampling/mismatch/*`` for a scored batch; drop the ratio when not correcting."""
        if self.recorder is None or out.get("sampling_per_token_logps") is None:
            return
        if not self.settings.correction:
            out.pop("importance_sampling_ratio", None)  # vespo would read it regardless
        sums = mismatch_stats(out["sampling_per_token_logps"], out["old_per_token_logps"],
                              out["completion_mask"] * out.get("tool_mask", 1),
                              self.settings.threshold)
        keys = sorted(sums)
        total = trainer.accelerator.gather(torch.stack([sums[k] for k in keys])[None])
        means = finish(dict(zip(keys, total.sum(0))))
        mode = "train" if trainer.model.training else "eval"
        for name, value in means.items():
            trainer._metrics[mode][f"sampling/mismatch/{name}"].append(value)

    @contextlib.contextmanager
    def loss(self, trainer, inputs: dict) -> Iterator[None]:
        """Around TRL's ``_compute_loss``: with the correction on, TRL applies the ratio."""
        if not (self.settings.correction and "importance_sampling_ratio" in inputs):
            yield
            return
        with self._as_vllm(trainer):
            trainer.use_vllm = trainer.vllm_importance_sampling_correction = True
            yield


def mismatch_curves(metrics_path) -> dict[str, dict]:
    """``sampling/mismatch/*`` from a run's ``metrics.jsonl``: per number, its steps and values.

    For run reports (``grpo_report.json``): how the mismatch moved over training. Empty when
    nothing was measured.
    """
    from audsemthinker.train.common import read_metrics

    records = read_metrics(metrics_path)
    out = {}
    for key in sorted({k for r in records for k in r if k.startswith("sampling/mismatch/")}):
        pts = [(r["step"], r[key]) for r in records if r.get(key) is not None]
        out[key.rsplit("/", 1)[1]] = {"steps": [s for s, _ in pts], "values": [v for _, v in pts]}
    return out
