"""Each GRPO completion is scored against its own prompt's gold answer (docs/recipe.md).

The public release lost the group duplication and scored completions against other prompts'
answers. Here every prompt has a DISTINCT answer and id that encode its number; a recording reward
checks, for every completion it is handed, that the prompt names the same number as the answer
and id columns, and that the completion is one the policy actually generated for that prompt
(a spy on ``generate`` records which completions each prompt produced). Runs with gradient
accumulation and ``num_iterations: 2`` so TRL's buffering, shuffles and splits are exercised.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile as sf
import torch

from audsemthinker import format as fmt
from audsemthinker.rewards.registry import prompt_text

SR = 16000


def tone_rows(folder, n: int) -> list[dict]:
    """``n`` GRPO rows, row k: a tone of its own pitch and length, answer/id encoding k."""
    rows = []
    for k in range(n):
        t = np.arange(int(SR * (0.4 + 0.2 * k))) / SR
        path = folder / f"tone{k}.wav"
        sf.write(path, (0.3 * np.sin(2 * np.pi * (220 + 110 * k) * t)).astype(np.float32), SR)
        choices = [f"pitch {k}", f"pitch {k + 100}"] if k % 2 else None  # None for non-mc rows
        rows.append({
            "id": f"row-{k}", "audio": str(path), "task": "mc_qa" if choices else "qa",
            "answer": f"answer-{k}", "choices": choices,
            "prompt": [{"role": "system", "content": [{"type": "text", "text": fmt.SYSTEM_PROMPT}]},
                       {"role": "user", "content": [{"type": "audio", "audio": str(path)},
                                                    {"type": "text", "text": f"item {k}: what?"}]}],
        })
    return rows


def item_of(text: str) -> int:
    found = re.findall(r"item (\d+):", text)
    assert len(found) == 1, text
    return int(found[0])


def _config(tmp_path, **kw):
    from trl import GRPOConfig

    base = dict(output_dir=str(tmp_path / "out"), num_generations=4, max_completion_length=6,
                temperature=1.0, top_k=50, learning_rate=1e-3, loss_type="grpo", beta=0.01,
                report_to="none", use_cpu=True, bf16=False, save_strategy="no", logging_steps=1,
                gradient_checkpointing=False, seed=0, disable_dropout=True)
    base.update(kw)
    return GRPOConfig(**base)


def _trainer(tiny_full_dir, tiny_processor, rows, args, lora: bool, rewards):
    from datasets import Dataset

    from audsemthinker.model.loader import ModelConfig, load_thinker
    from audsemthinker.model.lora import LoraSettings, apply_lora
    from audsemthinker.train.grpo_fast_trainer import FastAudioGRPOTrainer as AudioGRPOTrainer

    mcfg = ModelConfig(name_or_path=str(tiny_full_dir), dtype="float32")
    torch.manual_seed(0)
    model, ref = load_thinker(mcfg), None
    if lora:
        model = apply_lora(model, LoraSettings(preset="lm_attn", r=4, alpha=8, dropout=0.0))
    elif args.beta:
        ref = load_thinker(mcfg)
    return AudioGRPOTrainer(model=model, reward_funcs=rewards, args=args,
                            train_dataset=Dataset.from_list(rows),
                            processing_class=tiny_processor, ref_model=ref)


@pytest.mark.parametrize("setup", [
    dict(lora=True, per_device_train_batch_size=2, gradient_accumulation_steps=4,
         num_iterations=2, max_steps=2),
    dict(lora=False, per_device_train_batch_size=4, gradient_accumulation_steps=2,
         num_iterations=1, max_steps=2),
], ids=["lora-ga4-iter2", "full-ga2"])
def test_each_completion_scored_against_its_own_prompt(tmp_path, tiny_full_dir, tiny_processor,
                                                       setup):
    torch.set_num_threads(1)
    setup = dict(setup)
    lora = setup.pop("lora")
    rows = tone_rows(tmp_path, 6)
    tok = tiny_processor.tokenizer
    generated: dict[int, list[list[int]]] = {}
    seen: list[tuple[int, str, str]] = []

    def recording(prompts, completions, completion_ids, answer, id, choices, task, **kw):  # noqa: A002
        assert len(prompts) == len(completions) == len(answer) == len(id) == len(choices)
        out = []
        for p, ids, a, i, ch, ta in zip(prompts, completion_ids, answer, id, choices, task):
            k = item_of(prompt_text(p))
            seen.append((k, a, i))
            assert (ch is None) == (ta == "qa")
            own = generated.get(k, [])
            assert any(g[:len(ids)] == list(ids) for g in own), \
                f"completion {ids} was never generated for item {k}"
            out.append(float(len(set(ids)) % 3))  # varies within a group: nonzero advantages
        return out

    trainer = _trainer(tiny_full_dir, tiny_processor, rows, _config(tmp_path, **setup), lora,
                       [recording])
    real_generate = trainer._generate_single_turn  # whether generate or our decode loop runs

    def spy_generate(prompt_ids, *args, **kwargs):
        completion_ids, logprobs = real_generate(prompt_ids, *args, **kwargs)
        for prompt, completion in zip(prompt_ids, completion_ids):
            generated.setdefault(item_of(tok.decode(prompt)), []).append(list(completion))
        return completion_ids, logprobs

    trainer._generate_single_turn = spy_generate
    trainer.train()

    gens = setup["max_steps"] * setup["gradient_accumulation_steps"] * \
        setup["per_device_train_batch_size"] // setup["num_iterations"]
    assert len(seen) == gens  # every generated completion was scored exactly once
    mismatched = [(k, a, i) for k, a, i in seen if (a, i) != (f"answer-{k}", f"row-{k}")]
    assert mismatched == []
    # Groups stay whole: each prompt's completions come in multiples of num_generations.
    counts = {k: sum(1 for s in seen if s[0] == k) for k, _, _ in seen}
    assert all(c % 4 == 0 for c in counts.values()), counts
    assert len(counts) >= 2
