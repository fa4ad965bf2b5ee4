"""The audio collator: exact label masks, audio placeholders, padding sides, counted skips."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audsemthinker import format as fmt
from audsemthinker.audio import AudioError
from audsemthinker.data.collate import IGNORE_INDEX, AudioCollator
from audsemthinker.model.tokens import audio_tokens_for_frames

QUESTION = "Is the tone low or high in pitch?"
TARGET = "<think>I hear a steady tone.</think>\n<answer>B. high</answer>"


def _wav(path, seconds, hz=440.0):
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(str(path), (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32), 16000)
    return str(path)


def _row(audio, target=TARGET, question=QUESTION, id="r0"):
    return {"id": id, "audio": audio, "answer": "B. high", "choices": ["low", "high"],
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": fmt.SYSTEM_PROMPT}]},
                {"role": "user", "content": [{"type": "audio", "audio": audio},
                                             {"type": "text", "text": question}]},
                {"role": "assistant", "content": [{"type": "text", "text": target}]}]}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    return {"1s": _wav(d / "a.wav", 1.0), "2s": _wav(d / "b.wav", 2.0, 880.0),
            "missing": str(d / "nope.wav")}


def _enc(tok, text):
    return tok.encode(text, add_special_tokens=False)


def test_labels_cover_exactly_the_assistant_turn_and_its_im_end(tiny_processor, clips):
    tok = tiny_processor.tokenizer
    batch = AudioCollator(tiny_processor)([_row(clips["1s"])])
    # Expected ids, built piece by piece from known strings (special tokens split the pieces).
    n_audio = audio_tokens_for_frames(100)  # 1 s = 100 mel frames
    assert n_audio == 25
    prompt = (_enc(tok, f"<|im_start|>system\n{fmt.SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n"
                        "<|audio_bos|>") + [tok.audio_token_id] * n_audio
              + _enc(tok, f"<|audio_eos|>{QUESTION}<|im_end|>\n<|im_start|>assistant\n"))
    answer = _enc(tok, TARGET) + [tok.convert_tokens_to_ids("<|im_end|>")]
    tail = _enc(tok, "\n")
    assert batch["input_ids"][0].tolist() == prompt + answer + tail
    want = [IGNORE_INDEX] * len(prompt) + answer + [IGNORE_INDEX] * len(tail)
    assert batch["labels"][0].tolist() == want
    # Placeholders sit between <|audio_bos|> and <|audio_eos|> and match the features.
    ids = batch["input_ids"][0].tolist()
    bos, eos = ids.index(tok.audio_bos_token_id), ids.index(tok.audio_eos_token_id)
    assert ids[bos + 1:eos] == [tok.audio_token_id] * n_audio
    assert batch["feature_attention_mask"].sum().item() == 100
    assert batch["input_features"].shape == (1, 128, 100)
    assert tok.decode([t for t in batch["labels"][0].tolist() if t != IGNORE_INDEX]) \
        == TARGET + "<|im_end|>"


def test_right_padding_masks_pads_and_pads_audio_to_the_longest_clip(tiny_processor, clips):
    rows = [_row(clips["1s"], id="short"), _row(clips["2s"], target=TARGET + " more", id="long")]
    batch = AudioCollator(tiny_processor, pad_side="right")(rows)
    mask, labels, ids = batch["attention_mask"], batch["labels"], batch["input_ids"]
    assert mask[0, 0] == 1 and mask[0, -1] == 0 and mask[1].all()
    assert (labels[mask == 0] == IGNORE_INDEX).all()
    assert batch["input_features"].shape == (2, 128, 200)
    assert batch["feature_attention_mask"].sum(-1).tolist() == [100, 200]
    counts = (ids == tiny_processor.tokenizer.audio_token_id).sum(-1).tolist()
    assert counts == [audio_tokens_for_frames(100), audio_tokens_for_frames(200)] == [25, 50]
    # The same rows left-padded carry the same labels, shifted.
    left = AudioCollator(tiny_processor, pad_side="left")(rows)
    assert left["attention_mask"][0, 0] == 0
    for i in range(2):
        assert labels[i][mask[i] == 1].tolist() == \
            left["labels"][i][left["attention_mask"][i] == 1].tolist()


def test_only_the_last_assistant_turn_is_trained(tiny_processor, clips):
    row = _row(clips["1s"])
    row["messages"][2:2] = [
        {"role": "assistant", "content": [{"type": "text", "text": "earlier answer"}]},
        {"role": "user", "content": [{"type": "text", "text": "Again?"}]}]
    batch = AudioCollator(tiny_processor)([row])
    trained = [t for t in batch["labels"][0].tolist() if t != IGNORE_INDEX]
    assert tiny_processor.tokenizer.decode(trained) == TARGET + "<|im_end|>"


def test_prompt_only_renders_the_generation_prompt_left_padded(tiny_processor, clips):
    rows = [_row(clips["1s"]), _row(clips["2s"], question="What is the pitch of this tone?")]
    collator = AudioCollator(tiny_processor, prompt_only=True)
    batch = collator(rows)
    assert "labels" not in batch and collator.pad_side == "left"
    tok = tiny_processor.tokenizer
    header = _enc(tok, "<|im_start|>assistant\n")
    for i in range(2):
        ids = batch["input_ids"][i][batch["attention_mask"][i] == 1].tolist()
        assert ids[-len(header):] == header
        assert tok.decode(ids).count(TARGET) == 0
    assert batch["attention_mask"][:, -1].all()  # left padding: every row ends at the edge
    # A GRPO row (prompt, no target) renders the same prompt.
    grpo = {"id": "g", "audio": clips["1s"], "prompt": rows[0]["messages"][:2]}
    same = collator([grpo, rows[1]])
    assert torch.equal(same["input_ids"], batch["input_ids"])


def test_overlong_rows_are_skipped_and_counted_never_truncated(tiny_processor, clips):
    rows = [_row(clips["1s"], id="fits"), _row(clips["2s"], id="too_long")]
    lengths = AudioCollator(tiny_processor)(rows)["attention_mask"].sum(-1).tolist()
    limit = lengths[0]
    assert lengths[1] > limit
    collator = AudioCollator(tiny_processor, max_length=limit)
    batch = collator(rows)
    assert collator.stats["skipped:overlong"] == 1 and collator.last_kept == [0]
    assert batch["input_ids"].shape == (1, limit)
    assert batch["input_features"].shape == (1, 128, 100)
    with pytest.raises(ValueError, match="too_long"):
        AudioCollator(tiny_processor, max_length=limit, on_overlong="error")(rows)
    with pytest.raises(ValueError, match="all 1 rows of the batch were skipped"):
        collator([rows[1]])
    assert collator.stats["skipped:overlong"] == 2


def test_broken_audio_is_skipped_with_its_reason_or_raises(tiny_processor, clips):
    rows = [_row(clips["missing"], id="gone"), _row(clips["1s"], id="ok")]
    collator = AudioCollator(tiny_processor)
    batch = collator(rows)
    assert collator.last_kept == [1] and batch["input_ids"].shape[0] == 1
    assert collator.stats["skipped:audio:missing"] == 1
    with pytest.raises(AudioError, match="missing"):
        AudioCollator(tiny_processor, on_bad_audio="error")(rows)


def test_silence_override_feeds_zeros_of_the_same_length(tiny_processor, clips):
    row = _row(clips["1s"])
    real = AudioCollator(tiny_processor)([row])
    silent = AudioCollator(tiny_processor, audio_override="silence")([row])
    zeros = tiny_processor(text=["<|audio_bos|><|AUDIO|><|audio_eos|>"],
                           audio=[np.zeros(16000, np.float32)], return_tensors="pt")
    torch.testing.assert_close(silent["input_features"], zeros["input_features"])
    assert not torch.allclose(silent["input_features"], real["input_features"])
    assert torch.equal(silent["input_ids"], real["input_ids"])


def test_arrow_style_none_keys_render_like_clean_rows(tiny_processor, clips):
    clean = _row(clips["1s"])
    arrow = _row(clips["1s"])
    for m in arrow["messages"]:
        for part in m["content"]:
            part.setdefault("audio", None)
            part.setdefault("text", None)
    a, b = AudioCollator(tiny_processor)([clean]), AudioCollator(tiny_processor)([arrow])
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])


def test_malformed_rows_fail_clearly(tiny_processor, clips):
    no_part = _row(clips["1s"])
    no_part["messages"][1]["content"] = [{"type": "text", "text": QUESTION}]
    with pytest.raises(ValueError, match="no audio part"):
        AudioCollator(tiny_processor)([no_part])
    no_target = _row(clips["1s"])
    no_target["messages"].pop()
    with pytest.raises(ValueError, match="ending with an assistant turn"):
        AudioCollator(tiny_processor)([no_target])
    with pytest.raises(ValueError, match="pad_side"):
        AudioCollator(tiny_processor, pad_side="middle")


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.text(alphabet=st.sampled_from(list("abcxyz <>/.\n:-ABH0123")), min_size=1,
                      max_size=40))
def test_trained_tokens_decode_to_the_target_for_any_text(tiny_processor, clips, target):
    batch = AudioCollator(tiny_processor)([_row(clips["1s"], target=target)])
    trained = [t for t in batch["labels"][0].tolist() if t != IGNORE_INDEX]
    assert tiny_processor.tokenizer.decode(trained) == target + "<|im_end|>"


def test_a_newline_merged_into_the_header_is_not_trained(tiny_processor):
    """Hub vocabularies merge "\\n\\n": a target starting with a newline shares the header's
    newline token; the loss then starts after that shared token."""
    tok = tiny_processor.tokenizer
    collator = AudioCollator(tiny_processor)
    role = _enc(tok, "<|im_start|>assistant")
    shared = _enc(tok, "x")  # stands in for the merged "\n\n" token
    content = _enc(tok, "<answer>A</answer>") + [tok.convert_tokens_to_ids("<|im_end|>")]
    ids = _enc(tok, "<|im_start|>user\nhi<|im_end|>\n") + role + shared + content
    labels = collator.labels_for(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
    assert labels[0].tolist() == [IGNORE_INDEX] * (len(ids) - len(content)) + content
