"""Sharded data parallelism (FSDP2) on CPU ranks, and what a sharded run does instead of the
one-process paths.

``accelerate`` turns FSDP on only for accelerator device types: with ``use_cpu`` the ranks are
``MULTI_CPU`` (gloo) and an FSDP config is silently ignored, so every rank would hold the full
model and train plain DDP. PyTorch's ``fully_shard`` itself runs on CPU over gloo. When a launch
asks for FSDP (``ACCELERATE_USE_FSDP=true``, set by ``accelerate launch`` with
``configs/accelerate/fsdp2*.yaml``) and the trainer runs on CPU, :func:`enable_cpu_fsdp` sets up
the process group the Trainer would (gloo, CPU device) and marks it so accelerate's state
applies the FSDP plugin: the same code path a GPU run takes, on CPU tensors. That is what lets
the sharded training, checkpoints and held-out pass be tested without GPUs.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def fsdp_requested() -> bool:
    """True when the launcher asked for FSDP (``accelerate launch`` with an FSDP config)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def enable_cpu_fsdp(args) -> bool:
    """Let FSDP apply to CPU ranks; call after building the trainer's arguments, before the
    trainer. Returns True when it did something.

    ``args`` is a ``TrainingArguments`` (``SFTConfig`` / ``GRPOConfig``). Reading ``args.device``
    creates the process state the Trainer uses (``PartialState(cpu=True)``: gloo, CPU device).
    accelerate picks FSDP only when that state's type is an accelerator one; it is marked as
    ``MULTI_GPU`` for that one decision, and the ``AcceleratorState`` the Trainer then creates
    replaces it with ``FSDP``. The device stays the CPU.
    """
    if not (fsdp_requested() and args.use_cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1):
        return False
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    _ = args.device  # PartialState(cpu=True): the gloo process group, device cpu
    state = PartialState()
    if state.distributed_type != DistributedType.MULTI_CPU:
        return False
    AcceleratorState._reset_state()  # keeps the PartialState
    PartialState._shared_state["distributed_type"] = DistributedType.MULTI_GPU
    log.info("FSDP on %d CPU ranks over %s", state.num_processes, state.backend)
    return True


def check_sharded(trainer) -> None:
    """Fail loudly when a run asked for FSDP but the trainer did not shard (a silent DDP run
    would report numbers for a setup that was never tested); under FSDP, keep the ranks'
    ``generate`` calls in step (:func:`sync_generation`)."""
    sharded = getattr(trainer, "is_fsdp_enabled", False)
    if fsdp_requested() and trainer.accelerator.num_processes > 1 and not sharded:
        raise RuntimeError("the launch asked for FSDP (ACCELERATE_USE_FSDP=true) but the "
                           f"trainer runs {trainer.accelerator.distributed_type}")
    if sharded and trainer.accelerator.num_processes > 1:
        sync_generation(trainer.model)


def sync_generation(model) -> int:
    """Mark the generating modules of an FSDP-sharded model so ``generate`` keeps the ranks in
    step; returns how many were marked.

    Each forward of a sharded model all-gathers weights from every rank, so a rank whose rows
    finished early must keep stepping until all have (``generate(synced_gpus=True)``).
    transformers turns that on by itself for DeepSpeed ZeRO-3 and for models it sharded itself
    (the ``_is_fsdp_managed_module`` flag), not for a model accelerate's FSDP2 wrapped: TRL's
    rollouts and the held-out pass would then hang, or mix up collectives, the first time two
    ranks stop at different lengths.
    """
    from transformers import GenerationMixin

    marked = 0
    for module in model.modules():
        if isinstance(module, GenerationMixin):
            module._is_fsdp_managed_module = True
            marked += 1
    return marked


def save_final(trainer, out_dir) -> None:
    """``trainer.save_model(out_dir)``, but a full adapter or model also under sharded FSDP
    checkpoints (where the Trainer writes no model file there). Call on every rank: the shards
    are gathered, then rank 0 writes."""
    plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None)
    if not trainer.is_fsdp_enabled or "FULL_STATE_DICT" in str(plugin.state_dict_type):
        trainer.save_model(str(out_dir))
        return
    state_dict = trainer.accelerator.get_state_dict(trainer.model)  # collective
    if trainer.args.should_save:
        trainer._save(str(out_dir), state_dict=state_dict)
    trainer.accelerator.wait_for_everyone()


# --------------------------------------------------------------------------------------------
# Held-out accuracy on every rank
# --------------------------------------------------------------------------------------------
def rank_slice(n: int, world: int, rank: int) -> range:
    """This rank's contiguous share of ``n`` rows (the first ranks take one more when uneven)."""
    per, extra = divmod(n, world)
    start = rank * per + min(rank, extra)
    return range(start, start + per + (rank < extra))


# Over 60 lines: every rank in step through one generation loop; half is docstring.
def heldout_on_all_ranks(trainer, processor, rows, cfg, audio_override=None) -> dict | None:
    """Held-out accuracy of a run whose weights are sharded: every rank generates over its own
    slice of ``rows`` in step with the others, rank 0 scores them all. Call on every rank;
    returns the record (:func:`audsemthinker.eval.heldout.heldout_record`) on rank 0, None
    elsewhere.

    Every forward is a collective, so every rank runs the same number of ``generate`` calls:
    ``ceil(largest slice / eval.batch_size)``. A rank whose slice is used up, or whose batch
    lost every row to bad audio, generates once more on a stand-in batch (its last batch, or
    the first held-out row that loads) and drops the result; a round where no rank has a row
    is skipped by all. The completions equal those of one process generating the same rows
    (same greedy decoding, batches padded the same way per slice).
    """
    from accelerate.utils import gather_object
    from omegaconf import DictConfig, OmegaConf

    from audsemthinker.data.collate import AudioCollator
    from audsemthinker.eval.generate import decoding_from, generate_batch
    from audsemthinker.eval.heldout import heldout_record

    acc, model = trainer.accelerator, trainer.model
    ev = cfg.get("eval") or {}
    decoding = ev.get("decoding")
    if isinstance(decoding, DictConfig):
        decoding = OmegaConf.to_container(decoding, resolve=True)
    decoding, size = decoding_from(decoding), int(ev.get("batch_size") or 8)
    sync_generation(model)

    def collator():
        return AudioCollator(processor, prompt_only=True, audio_override=audio_override,
                             max_audio_seconds=ev.get("max_audio_seconds"))

    mine, real = rank_slice(len(rows), acc.num_processes, acc.process_index), collator()
    rounds = -(-max(len(rank_slice(len(rows), acc.num_processes, 0)), 1) // size)
    done, stand_in = [], None
    was_training = model.training
    model.eval()
    for r in range(rounds):
        ids, batch = list(mine[r * size:(r + 1) * size]), None
        if ids:
            try:
                batch = real([rows[i] for i in ids])
                ids = [ids[k] for k in real.last_kept]
            except ValueError as e:  # every row of the batch skipped (counted in real.stats)
                log.warning("held-out batch of rows %s skipped: %s", ids, e)
        if not any(gather_object([batch is not None])):
            continue
        if batch is None:
            stand_in = stand_in or _first_loadable(rows, collator())
            generate_batch(model, processor.tokenizer, stand_in, decoding)  # keeps in step
            continue
        stand_in = batch
        done += zip(ids, generate_batch(model, processor.tokenizer, batch, decoding))
    model.train(was_training)
    done = sorted(gather_object(done))
    stats = gather_object([dict(real.stats)])
    if not acc.is_main_process:
        return None
    skipped = {}
    for part in stats:
        for k, v in part.items():
            if k.startswith("skipped:"):
                skipped[k] = skipped.get(k, 0) + v
    log.info("held-out: %d rows generated on %d ranks (weights sharded)", len(done),
             acc.num_processes)
    return heldout_record([rows[i] for i, _ in done], [t for _, t in done], skipped)


def _first_loadable(rows, collator):
    for row in rows:
        try:
            return collator([row])
        except ValueError:
            continue
    raise RuntimeError("no held-out row loads on this rank, though another rank's did")
