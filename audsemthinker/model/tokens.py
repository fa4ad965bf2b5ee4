"""Qwen2.5-Omni special tokens and the chat template, as data.

The special-token strings and the hub's ids are fixed by the released checkpoint (docs/recipe.md);
code never hard-codes the ids, it asks the tokenizer (the tiny model puts them elsewhere, and a
config whose ``audio_token_index`` disagrees with the tokenizer silently ignores the audio).
"""

from __future__ import annotations

# Special tokens in the hub's id order (151643 ...). The tiny tokenizer keeps this order.
ADDED_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>",
    "<|audio_eos|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_bos|>",
    "<|vision_eos|>", "<|vision_pad|>", "<|IMAGE|>", "<|VIDEO|>",
)
HUB_IDS = {t: 151643 + i for i, t in enumerate(ADDED_TOKENS)}

# Attribute names the Qwen2.5-Omni processor reads from the tokenizer.
NAMED_TOKENS = {
    "audio_token": "<|AUDIO|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
    "image_token": "<|IMAGE|>",
    "video_token": "<|VIDEO|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
}

# Placeholders a generate call must never sample: the next forward would expect features.
PLACEHOLDER_TOKENS = ("<|AUDIO|>", "<|IMAGE|>", "<|VIDEO|>")

# The Qwen2.5-Omni chat template, dispatching on ``content['type']`` only. The stock template
# also tests ``'audio' in content``, which turns a text part that went through a `datasets` table
# (and so carries ``'audio': None``) into an extra audio placeholder (docs/pitfalls.md). For
# well-formed messages both render the same string.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif content['type'] == 'image' %}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif content['type'] == 'video' %}<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def audio_tokens_for_frames(frames: int) -> int:
    """Audio placeholder tokens the thinker's encoder emits for ``frames`` mel frames.

    100 frames per second; two stride-2 stages: ``((frames - 1)//2 + 1 - 2)//2 + 1``,
    i.e. 25 tokens per second (a 2 s clip -> 200 frames -> 50 tokens).
    """
    return ((frames - 1) // 2 + 1 - 2) // 2 + 1
