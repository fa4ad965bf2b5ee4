"""Dynamic sampling for GRPO: drop groups whose rewards all agree, refill from fresh prompts.

With G samples per multiple-choice question many groups are all right or all wrong. Their
advantages are zero, so they cost a rollout and a backward pass and teach nothing; under
``loss_type: grpo`` they still count in the per-sequence mean and dilute the step. DAPO
(arXiv 2503.14476, section 3.2) over-samples and keeps only groups with 0 < accuracy < 1; ms-swift
(``--dynamic_sample``), EasyR1 (online filtering) and verl's DAPO recipe do the same.

Here one generation batch is filled in rounds. Round 0 is the batch the data loader gave; each
group (one prompt's G completions) is scored as usual (TRL's ``_generate_and_score_completions``
through ``AudioGRPOTrainer._score_round``, so every row carries its own clip and is rewarded
against its own gold answer), and a group whose weighted total rewards are all equal is dropped.
While a rank still lacks groups, every rank generates for fresh prompts drawn from the training
set (:class:`PromptRefill`) and keeps the varied groups, up to ``max_rounds`` extra rounds.

Ranks agree on every decision without extra messages: TRL gathers every rank's rewards before
the advantages, so each rank sees the same table, finds the same flat groups and works out every
rank's shortfall (:func:`plan_round`); all ranks then run the same number of rounds with the same
number of rows, which TRL's gathers need.

When the cap is reached and a rank is still short, the batch is topped up with dropped groups
whose completion mask and advantage are zeroed (:func:`merge_rounds`), so a flat group still
never reaches the loss: its tokens carry no loss, no KL and no gradient. Under ``loss_type: grpo``
such a row is still counted by the per-sequence mean (it is a masked row, as TRL's
``mask_truncated_completions`` makes); the share is logged as ``dynamic_sampling/masked_groups``.
The rows of the kept groups are concatenated across rounds with their own padding
(:func:`merge_rows`); advantages are those of each group's own round (the group mean and, with
``scale_rewards: group``, the group std, so a kept group's advantages do not depend on the
other groups of its round).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch

from audsemthinker.schemas import DynamicSampling

log = logging.getLogger(__name__)

LEFT_PADDED = ("prompt_ids", "prompt_mask")
"""Row tensors TRL pads on the left; every other row tensor is padded on the right."""
PAD_ID_KEYS = ("prompt_ids", "completion_ids")
"""Row tensors padded with the tokenizer's pad id (all others with 0)."""


# --------------------------------------------------------------------------------------------
# Pure decisions
# --------------------------------------------------------------------------------------------
def flat_groups(rewards_per_func: torch.Tensor, weights: torch.Tensor, group_size: int,
                tolerance: float = 1e-6) -> list[bool]:
    """Which groups have (numerically) equal weighted total rewards.

    Args:
        rewards_per_func: ``[rows, reward functions]`` as TRL's ``_calculate_rewards`` returns
            it (gathered over ranks; NaN where a function did not score a row).
        weights: the reward weights ``[reward functions]``.
        group_size: G, the completions per prompt (consecutive rows).
        tolerance: largest spread still counted as equal.

    Returns:
        One flag per group, True when the group's advantages are all zero. A row every function
        left unscored is ignored (TRL gives it zero advantage); a group with fewer than two
        scored rows is flat.
    """
    rows = rewards_per_func.size(0)
    if rows % group_size:
        raise ValueError(f"{rows} rows do not split into groups of {group_size}")
    unscored = torch.isnan(rewards_per_func).all(dim=1)
    total = (rewards_per_func.float() * weights.float().to(rewards_per_func.device)).nansum(1)
    total = total.masked_fill(unscored, math.nan).view(-1, group_size)
    out = []
    for group in total:
        vals = group[~torch.isnan(group)]
        out.append(vals.numel() < 2 or float(vals.max() - vals.min()) <= tolerance)
    return out


def plan_round(flat: Sequence[bool], world: int, kept: Sequence[int], need: int
               ) -> list[list[int]]:
    """The groups each rank keeps from one round (local group indices, in order).

    ``flat`` lists the round's groups over all ranks, rank by rank (TRL's gather order); rank r
    keeps its varied groups until it holds ``need`` (it already holds ``kept[r]``).
    """
    if len(flat) % world:
        raise ValueError(f"{len(flat)} groups do not split over {world} ranks")
    per = len(flat) // world
    plan = []
    for r in range(world):
        varied = [i for i in range(per) if not flat[r * per + i]]
        plan.append(varied[:max(0, need - kept[r])])
    return plan


def groups_to_draw(shortfall: int, generated: int, varied: int, full: int) -> int:
    """Fresh groups per rank for the next round.

    The largest shortfall over ranks, scaled by the varied share seen so far (so a batch where
    few groups vary is refilled in fewer rounds), never more than a full generation batch.
    """
    if shortfall <= 0:
        return 0
    if varied <= 0:
        return full
    return max(shortfall, min(full, math.ceil(shortfall * generated / varied)))


def merge_rows(parts: Sequence[tuple[dict[str, Any], Sequence[int]]], pad_id: int
               ) -> dict[str, torch.Tensor]:
    """The chosen rows of several rounds' outputs as one batch dict.

    Args:
        parts: ``(round output, row indices)`` pairs; the output is the dict TRL's
            ``_generate_and_score_completions`` returns (plus our audio features).
        pad_id: the tokenizer's pad id for ``prompt_ids`` / ``completion_ids``.

    Returns:
        Every row tensor concatenated in order, shorter ones padded to the widest (prompts on
        the left, everything else on the right, ids with ``pad_id``, masks and values with 0).
        ``num_items_in_batch`` is left out: the caller recomputes it.

    Raises:
        NotImplementedError: a key that is not a per-row tensor (e.g. images): merging it
            would need rules this function does not know.
    """
    keys = [k for k in parts[0][0] if k != "num_items_in_batch"]
    out = {}
    for key in keys:
        chunks = []
        for batch, rows in parts:
            value = batch.get(key)
            if not isinstance(value, torch.Tensor) or value.dim() == 0:
                raise NotImplementedError(f"dynamic sampling cannot merge batch key {key!r} "
                                          f"({type(value).__name__})")
            chunks.append(value[torch.as_tensor(list(rows), dtype=torch.long,
                                                device=value.device)])
        out[key] = _cat_padded(chunks, left=key in LEFT_PADDED,
                               value=pad_id if key in PAD_ID_KEYS else 0)
    return out


def _cat_padded(chunks: list[torch.Tensor], left: bool, value: float) -> torch.Tensor:
    if chunks[0].dim() == 1 or len({c.shape[1:] for c in chunks}) == 1:
        return torch.cat(chunks)
    width = max(c.size(-1) for c in chunks)
    padded = []
    for c in chunks:
        pad = width - c.size(-1)
        padded.append(torch.nn.functional.pad(c, (pad, 0) if left else (0, pad), value=value))
    return torch.cat(padded)


def masked_rows(batch: dict[str, torch.Tensor], rows: Sequence[int]) -> None:
    """Zero the completion mask and the advantage of ``rows`` (in place): no loss, no gradient."""
    if not rows:
        return
    index = torch.as_tensor(list(rows), dtype=torch.long, device=batch["advantages"].device)
    batch["completion_mask"][index] = 0
    batch["advantages"][index] = 0
    if "tool_mask" in batch:
        batch["tool_mask"][index] = 0


# --------------------------------------------------------------------------------------------
# Fresh prompts
# --------------------------------------------------------------------------------------------
class PromptRefill:
    """Fresh training rows for the extra rounds, disjoint between ranks within a draw.

    Every rank walks the same seeded permutation of the training set (its own generator, so the
    global RNG that sampling uses is untouched) and takes its own slice of each draw; a new
    permutation starts when one runs out.
    """

    def __init__(self, dataset, seed: int, rank: int, world: int, group_size: int):
        if dataset is None or not hasattr(dataset, "__len__") or len(dataset) == 0:
            raise ValueError("dynamic sampling draws fresh prompts from the training set, "
                             "which must be a non-empty map-style dataset")
        self.dataset, self.seed, self.rank, self.world = dataset, int(seed), rank, world
        self.group_size = group_size
        self.epoch, self.order, self.pos = 0, [], 0
        self.drawn = 0

    def _next_index(self) -> int:
        if self.pos >= len(self.order):
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self.order = torch.randperm(len(self.dataset), generator=gen).tolist()
            self.epoch, self.pos = self.epoch + 1, 0
        self.pos += 1
        return self.order[self.pos - 1]

    def draw(self, groups: int) -> list[dict]:
        """``groups`` prompts for this rank, each repeated G times (as TRL's sampler repeats)."""
        picks = [self._next_index() for _ in range(groups * self.world)]
        mine = picks[self.rank * groups:(self.rank + 1) * groups]
        self.drawn += groups
        return [dict(self.dataset[int(i)]) for i in mine for _ in range(self.group_size)]


# --------------------------------------------------------------------------------------------
# The rounds
# --------------------------------------------------------------------------------------------
class DynamicSampler:
    """Fills a trainer's generation batch with groups whose rewards vary.

    The trainer provides ``_score_round(inputs)`` (one scoring of these rows, returning TRL's
    batch dict) and a ``round_recorder`` holding the last round's gathered rewards.
    """

    def __init__(self, settings: DynamicSampling, trainer):
        settings.check()
        args = trainer.args
        self.settings = settings
        self.group_size = trainer.num_generations
        local = args.per_device_train_batch_size * args.steps_per_generation
        if local % self.group_size:
            raise ValueError(
                f"grpo.dynamic_sampling needs each rank's generation batch "
                f"(per_device_train_batch_size x steps_per_generation = {local}) to hold whole "
                f"groups of num_generations={self.group_size}")
        if getattr(trainer, "multi_objective_aggregation", "sum_then_normalize") != \
                "sum_then_normalize":
            raise ValueError("grpo.dynamic_sampling needs multi_objective_aggregation="
                             "sum_then_normalize (a flat group then has zero advantages)")
        if trainer.round_recorder is None:
            raise ValueError("dynamic sampling needs the trainer's round recorder")
        acc = trainer.accelerator
        self.refill = PromptRefill(trainer.train_dataset, args.seed, acc.process_index,
                                   acc.num_processes, self.group_size)
        self.totals = {"batches": 0, "extra_rounds": 0, "generated_groups": 0,
                       "flat_groups": 0, "masked_groups": 0, "capped_batches": 0}

    def fill(self, trainer, inputs: list[dict]) -> dict[str, Any]:
        """Score ``inputs`` and as many fresh rounds as needed; return the merged batch."""
        acc, g = trainer.accelerator, self.group_size
        world, rank = acc.num_processes, acc.process_index
        need = len(inputs) // g
        kept, varied_seen, generated, flat_seen = [0] * world, 0, 0, 0
        parts, dropped, first_flat = [], [], None
        round_inputs, extra = inputs, 0
        while True:
            out = trainer._score_round(round_inputs)
            flat = flat_groups(trainer.round_recorder.last_rewards, trainer.reward_weights, g,
                               self.settings.tolerance)
            first_flat = sum(flat) / len(flat) if first_flat is None else first_flat
            plan = plan_round(flat, world, kept, need)
            per = len(flat) // world
            mine = plan[rank]
            parts.append((out, [i * g + j for i in mine for j in range(g)]))
            dropped += [(len(parts) - 1, i) for i in range(per) if flat[rank * per + i]]
            for r in range(world):
                kept[r] += len(plan[r])
            generated += len(flat)
            flat_seen += sum(flat)
            varied_seen += len(flat) - sum(flat)
            shortfall = max(need - k for k in kept)
            if shortfall == 0 or extra >= self.settings.max_rounds:
                break
            extra += 1
            draw = groups_to_draw(shortfall, generated, varied_seen, need)
            round_inputs = self.refill.draw(draw)
        top_up = need - kept[rank]
        masked_start = kept[rank] * g
        parts += [(parts[part][0], list(range(i * g, (i + 1) * g))) for part, i in dropped[:top_up]]
        batch = merge_rows([p for p in parts if p[1]], trainer._tokenizer.pad_token_id)
        masked_rows(batch, range(masked_start, need * g))
        loss_mask = batch["completion_mask"] if "tool_mask" not in batch else \
            batch["completion_mask"] * batch["tool_mask"]
        batch["num_items_in_batch"] = acc.gather(loss_mask.sum()).sum()
        masked_all = sum(need - k for k in kept)
        self._log(trainer, extra, generated, flat_seen, masked_all, world * need, first_flat)
        return batch

    def _log(self, trainer, extra, generated, flat, masked, groups, first_flat) -> None:
        t = self.totals
        t["batches"] += 1
        t["extra_rounds"] += extra
        t["generated_groups"] += generated
        t["flat_groups"] += flat
        t["masked_groups"] += masked
        t["capped_batches"] += int(masked > 0)
        metrics = trainer._metrics["train"]
        metrics["dynamic_sampling/extra_rounds"].append(float(extra))
        metrics["dynamic_sampling/first_round_flat_share"].append(float(first_flat))
        metrics["dynamic_sampling/flat_share"].append(flat / generated)
        metrics["dynamic_sampling/masked_groups"].append(masked / groups)
        metrics["dynamic_sampling/generated_groups"].append(float(generated))
        if masked:
            log.warning("dynamic sampling: %d of %d groups still flat after %d extra rounds; "
                        "they stay in the batch masked from the loss", masked, groups, extra)
