"""Build the Qwen2.5-Omni processor from its parts, padding audio to the longest clip.

``AutoProcessor.from_pretrained`` needs torchvision (for the video processor), which does not
import beside CPU torch, and the stock processor pads every clip to 300 s (``chunk_length=300``,
``padding="max_length"`` forced in ``_process_audio``): about 0.5 s of CPU per clip and 30000
frames through the encoder. We assemble tokenizer + ``WhisperFeatureExtractor`` + the pillow image
processor + our chat template, and subclass the processor so audio pads to the longest clip in
the batch. Valid frames are identical to the stock path's (Whisper's log-mel clamp uses the
per-clip maximum, which zero padding does not change); ``bench/data_pipeline.py`` measures it.
"""

from __future__ import annotations

from pathlib import Path

from transformers import Qwen2_5OmniProcessor, WhisperFeatureExtractor

from audsemthinker.model.tokens import CHAT_TEMPLATE, NAMED_TOKENS, audio_tokens_for_frames

SAMPLING_RATE = 16000


class AudioProcessor(Qwen2_5OmniProcessor):
    """``Qwen2_5OmniProcessor`` whose audio features pad to the longest clip, not to 300 s.

    Overrides ``_process_audio`` (the stock one forces ``padding="max_length"``) and lets the
    video processor be ``None`` (the only video processor needs torchvision; this codebase never
    feeds video).
    """

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument is None and argument_name == "video_processor":
            return None
        return super().check_argument_for_proper_class(argument_name, argument)

    def _process_audio(self, audio, **kwargs):
        # Pad to the longest clip plus one FFT window of zeros, then trim to the longest clip's
        # frames: the last valid frame then sees zeros after the clip, exactly as in the stock
        # 300 s path (plain "longest" padding would reflect-pad it instead).
        fe = self.feature_extractor
        longest = max(len(a) for a in audio)
        kwargs.update(padding="max_length", max_length=longest + fe.n_fft, truncation=True,
                      return_attention_mask=True)
        kwargs.setdefault("sampling_rate", SAMPLING_RATE)
        inputs = fe(audio, **kwargs)
        n = int(inputs["attention_mask"].sum(-1).max())
        inputs["input_features"] = inputs["input_features"][..., :n]
        inputs["feature_attention_mask"] = inputs.pop("attention_mask")[..., :n]
        inputs["num_audio_tokens"] = [audio_tokens_for_frames(int(k))
                                      for k in inputs["feature_attention_mask"].sum(-1)]
        return inputs, [self.replace_audio_token(inputs, audio_idx=i) for i in range(len(audio))]


def whisper_feature_extractor() -> WhisperFeatureExtractor:
    """The thinker's audio front end: 16 kHz, 128 mel bins, hop 160, n_fft 400."""
    return WhisperFeatureExtractor(feature_size=128, sampling_rate=SAMPLING_RATE, hop_length=160,
                                   n_fft=400, chunk_length=300, padding_side="right",
                                   return_attention_mask=True)


def _image_processor():
    """The pillow image processor (no torchvision): never used, but the processor needs one."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    return Qwen2VLImageProcessorPil()


def build_processor(path: str | Path | None = None, tokenizer=None,
                    padding_side: str = "left") -> AudioProcessor:
    """Assemble the processor from a hub id / local folder, or from a given tokenizer.

    Args:
        path: hub id or folder holding the tokenizer files (the feature extractor is rebuilt
            from the thinker's fixed settings, so a folder needs no preprocessor config).
        tokenizer: an already built tokenizer (the tiny model's writer passes one).
        padding_side: text padding side; ``left`` for batched generation (right padding in
            batched generation was a bug of the public release).

    Returns:
        An :class:`AudioProcessor` whose tokenizer exposes the named special tokens.

    Raises:
        ValueError: if neither ``path`` nor ``tokenizer`` is given, or the tokenizer lacks
            the audio special tokens.
    """
    if tokenizer is None:
        if path is None:
            raise ValueError("build_processor needs a path/hub id or a tokenizer")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path), extra_special_tokens=NAMED_TOKENS)
    missing = [t for t in NAMED_TOKENS.values() if t not in tokenizer.get_vocab()]
    if missing:
        raise ValueError(f"tokenizer at {path} lacks Qwen2.5-Omni special tokens {missing}")
    for attr, tok in NAMED_TOKENS.items():
        if getattr(tokenizer, attr, None) != tok:
            setattr(tokenizer, attr, tok)
    tokenizer.padding_side = padding_side
    tokenizer.chat_template = CHAT_TEMPLATE
    return AudioProcessor(image_processor=_image_processor(), video_processor=None,
                          feature_extractor=whisper_feature_extractor(), tokenizer=tokenizer,
                          chat_template=CHAT_TEMPLATE)


def save_processor(processor: AudioProcessor, path: str | Path) -> None:
    """Write tokenizer, feature-extractor and chat-template files in the hub's layout.

    ``ProcessorMixin.save_pretrained`` cannot save a processor without a video processor, and a
    checkpoint folder needs only these parts (``build_processor`` rebuilds the rest). The files
    are written into a temporary folder inside ``path`` and moved in one rename each (the chat
    template last), so a save killed half-way leaves no half-written tokenizer file.
    """
    import json
    import shutil
    import tempfile

    from audsemthinker.folders import move_into

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=path, prefix=".processor.tmp-"))
    try:
        processor.tokenizer.save_pretrained(staged)
        processor.feature_extractor.save_pretrained(staged)
        (staged / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE},
                                                              indent=2))
        move_into(staged, path, last="chat_template.json")
    finally:
        shutil.rmtree(staged, ignore_errors=True)
