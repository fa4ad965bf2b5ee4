"""The evaluation harness end to end: tiny model, MMAU / MuchoMusic fixtures, resume, exclusion.

Fixtures are the benchmarks' official formats (MMAU JSON, MuchoMusic CSV) with synthetic tones as
audio, turned into rows by the real ``mmau`` / ``muchomusic`` builders. Each item's question names
its id, so a generation wrapper can tell which items were computed, and each item's tone differs,
so a scripted "model" can answer from the audio it was actually given.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from audsemthinker import format as fmt
from audsemthinker.config import ConfigError
from audsemthinker.eval import harness
from audsemthinker.eval.predictions import PredictionStore
from audsemthinker.eval.scoring import mmau_prediction

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SR = 16000
CHOICES = ["a dog barking", "a cat meowing", "rain falling", "a man speaking"]
TASKS = ["sound", "music", "speech"]


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tone(path: Path, freq: int, seconds: float = 1.0) -> str:
    t = np.arange(int(SR * seconds)) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR)
    return str(path)


def _freq(audio) -> int:
    """Dominant frequency of a clip, in Hz, rounded to a multiple of 10."""
    hz = np.abs(np.fft.rfft(audio)).argmax() * SR / len(audio)
    return int(round(hz / 10) * 10)


def _build(builder: str, out: Path, **kwargs) -> tuple[Path, list[dict]]:
    """Rows through the real benchmark builder (audio checked, rows file written)."""
    from audsemthinker.data.examples import load_examples
    from audsemthinker.data.registry import build_dataset

    report = build_dataset(builder, out, plot=False, **kwargs)
    (path,) = report.files.values()
    return Path(path), load_examples(path)


def write_mmau(folder: Path, n: int = 7, split: str = "test-mini", answers: bool = True):
    """The official MMAU JSON + audio folder, built into rows by the ``mmau`` builder.

    Item i's audio is a (200 + 20 i) Hz tone lasting 1 + 0.1 i s (lengths differ, so prompts
    differ in length and batches need padding); its question names its id.
    """
    (folder / "test-mini-audios").mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        _tone(folder / "test-mini-audios" / f"m{i}.wav", 200 + 20 * i, 1.0 + 0.1 * i)
        items.append({"id": f"m{i}", "audio_id": f"./test-mini-audios/m{i}.wav",
                      "question": f"Question m{i}: what is the source of the sound?",
                      "choices": CHOICES, "answer": CHOICES[i % 4] if answers else "",
                      "dataset": "AudioSet", "task": TASKS[i % 3], "split": split,
                      "category": "Reasoning", "sub-category": "Acoustic Source Inference",
                      "difficulty": ["easy", "medium", "hard"][i % 3]})
    meta = folder / "mmau.json"
    meta.write_text(json.dumps(items), encoding="utf-8")
    path, rows = _build("mmau", folder / "built", metadata=str(meta), audio_root=str(folder),
                        split=split, version="v05.15.25")
    return path, meta, rows


def write_mucho(folder: Path, n: int = 5):
    """A MuchoMusic CSV + tracks, built by the ``muchomusic`` builder (options shuffled)."""
    import csv

    (folder / "audio" / "sdd").mkdir(parents=True, exist_ok=True)
    (folder / "audio" / "musiccaps").mkdir(parents=True, exist_ok=True)
    recs = []
    for i in range(n):
        dataset = ["sdd", "musiccaps"][i % 2]
        _tone(folder / "audio" / dataset / f"t{i}.wav", 300 + 20 * i)
        recs.append({"question": f"Question u{i}: which instrument leads?", "dataset": dataset,
                     "dataset_identifier": f"t{i}", "correct_answer": "piano",
                     "distractor_1_answer": "guitar", "distractor_2_answer": "violin",
                     "distractor_3_answer": "drums", "genre": "jazz",
                     "music_reasoning": str(i % 2 == 1), "music_knowledge": str(i % 2 == 0)})
    csv_path = folder / "muchomusic.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(recs[0]))
        w.writeheader()
        w.writerows(recs)
    path, rows = _build("muchomusic", folder / "built", csv_path=str(csv_path),
                        audio_dir=str(folder / "audio"))
    return path, csv_path, rows


def make_cfg(model_dir, run_dir, benchmarks: dict, **eval_over):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            f"model.name_or_path={model_dir}", f"run_dir={run_dir}", "eval=tiny"])
    OmegaConf.update(cfg, "eval.benchmarks", benchmarks, merge=False)
    OmegaConf.update(cfg, "eval.batch_size", 2)
    OmegaConf.update(cfg, "eval.decoding.max_new_tokens", 8)
    for k, v in eval_over.items():
        OmegaConf.update(cfg, f"eval.{k}", v)
    return cfg


class Recorder:
    """Wraps ``harness.generate_rows``: records the questions generated; can fail on a call."""

    def __init__(self, real, fail_on_call: int | None = None):
        self.real, self.fail_on_call, self.calls, self.ids = real, fail_on_call, 0, []

    def __call__(self, model, collator, rows, decoding):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("injected crash")
        for r in rows:  # the id as the prompt the model sees spells it
            self.ids += re.findall(r"Question (\w+):", r["prompt"][-1]["content"][-1]["text"])
        return self.real(model, collator, rows, decoding)


def scripted(answers: dict[int, str]):
    """A stand-in for ``generate_rows`` answering from each row's own audio (its tone)."""
    from audsemthinker.audio import load_audio

    def fake(model, collator, rows, decoding):
        return [answers[_freq(load_audio(r["audio"]))] for r in rows]
    return fake


def _predictions(run_dir: Path, name: str) -> dict:
    lines = (run_dir / "predictions" / f"{name}.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    assert len({r["id"] for r in recs}) == len(recs)
    return {r["id"]: r for r in recs}


@pytest.fixture(scope="module")
def mmau_fixture(tmp_path_factory):
    return write_mmau(tmp_path_factory.mktemp("mmau"))


@pytest.fixture(scope="module")
def sensitive(tiny_full_dir):
    """The tiny thinker with every weight matrix scaled by 4, and its processor.

    The random tiny model at its initial scale writes nearly the same text for every input;
    scaled up, its outputs differ between items, so a prediction filed under the wrong id
    would be visible.
    """
    import torch

    from audsemthinker.model.loader import ModelConfig, load_thinker
    from audsemthinker.model.processor import build_processor

    model = load_thinker(ModelConfig(name_or_path=str(tiny_full_dir), dtype="float32"))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    return {"model": model, "processor": build_processor(tiny_full_dir),
            "label": "tiny, weights x4"}


@pytest.fixture(scope="module")
def clean_run(tiny_full_dir, sensitive, mmau_fixture, tmp_path_factory):
    """A clean, uninterrupted run over the 7-item MMAU fixture."""
    rows_path, meta, _ = mmau_fixture
    run = tmp_path_factory.mktemp("clean")
    bench = {"mmau_test_mini": {"scorer": "mmau", "rows": str(rows_path), "metadata": str(meta),
                                "version": "v05.15.25", "split": "test-mini",
                                "submission": True}}
    result = harness.run_eval(make_cfg(tiny_full_dir, run, bench), **sensitive)["mmau_test_mini"]
    return run, bench, result


# --------------------------------------------------------------------------------------------
# MMAU end to end
# --------------------------------------------------------------------------------------------
def test_mmau_run_writes_results_reports_plot_and_submission(clean_run, mmau_fixture):
    run, _, result = clean_run
    _, meta, rows = mmau_fixture
    preds = _predictions(run, "mmau_test_mini")
    assert list(preds) == [r["id"] for r in rows]
    for row in rows:
        rec = preds[row["id"]]
        assert rec["prediction"] == mmau_prediction(rec["completion"], CHOICES)
    saved = json.loads((run / "results" / "mmau_test_mini.json").read_text())
    assert saved == result
    assert saved["version"] == "v05.15.25"
    assert saved["metadata"]["sha256"] == hashlib.sha256(meta.read_bytes()).hexdigest()
    assert saved["model"]["adapter"] is None
    assert saved["model"]["in_memory"] == "tiny, weights x4"
    assert saved["eval_config"]["decoding"]["max_new_tokens"] == 8
    assert saved["n_items"] == saved["n_predicted"] == 7
    assert saved["excluded"] == {"count": 0, "items": []}
    score = saved["score"]
    assert score["n_items"] == 7
    assert score["total"]["scored"] + score["total"]["skipped"] == 7
    assert set(score["groups"]["task"]) == set(TASKS)
    reports = run / "reports"
    assert "### Per task" in (reports / "mmau_test_mini.md").read_text()
    assert json.loads((reports / "mmau_test_mini.json").read_text())["score"] == score
    assert (reports / "mmau_test_mini_bars.png").read_bytes()[:4] == b"\x89PNG"
    assert "mmau_test_mini" in (reports / "summary.md").read_text()
    sub = json.loads((run / "submissions" / "mmau_test_mini.json").read_text())
    items = json.loads(meta.read_text())
    assert [s["id"] for s in sub] == [it["id"] for it in items]
    for s, it in zip(sub, items):
        assert {k: v for k, v in s.items() if not k.startswith("model_")} == it
        if preds[s["id"]]["prediction"] is None:
            assert "model_output" not in s
        else:
            assert s["model_output"] == s["model_prediction"] == preds[s["id"]]["prediction"]


def test_crash_and_restart_finish_with_same_results_and_no_item_twice(
        clean_run, sensitive, tiny_full_dir, tmp_path, monkeypatch):
    _, bench, clean = clean_run
    real = harness.generate_rows
    crash = Recorder(real, fail_on_call=3)  # 2 batches of 2 items done, then a crash
    monkeypatch.setattr(harness, "generate_rows", crash)
    with pytest.raises(RuntimeError, match="injected crash"):
        harness.run_eval(make_cfg(tiny_full_dir, tmp_path, bench), **sensitive)
    assert crash.ids == ["m0", "m1", "m2", "m3"]
    assert not (tmp_path / "results" / "mmau_test_mini.json").exists()
    pred_file = tmp_path / "predictions" / "mmau_test_mini.jsonl"
    with open(pred_file, "a") as f:  # a SIGKILL mid-write leaves a torn last line
        f.write('{"id": "m4", "compl')

    again = Recorder(real)
    monkeypatch.setattr(harness, "generate_rows", again)
    result = harness.run_eval(make_cfg(tiny_full_dir, tmp_path, bench),
                              **sensitive)["mmau_test_mini"]
    assert again.ids == ["m4", "m5", "m6"]
    assert sorted(crash.ids + again.ids) == [f"m{i}" for i in range(7)]
    assert _predictions(tmp_path, "mmau_test_mini") == _predictions(clean_run[0],
                                                                    "mmau_test_mini")
    assert result["score"] == clean["score"]

    done = Recorder(real)  # a third run over a finished evaluation generates nothing
    monkeypatch.setattr(harness, "generate_rows", done)
    harness.run_eval(make_cfg(tiny_full_dir, tmp_path, bench), **sensitive)
    assert done.calls == 0


def test_broken_audio_is_excluded_and_shifts_no_other_prediction(clean_run, sensitive,
                                                                 tiny_full_dir, tmp_path):
    clean_dir, bench, _ = clean_run
    rows_path, _, rows = write_mmau(tmp_path / "data")
    Path(rows[2]["audio"]).unlink()                      # missing file
    Path(rows[5]["audio"]).write_bytes(b"not a wav at all")  # unreadable file
    bench = {"mmau_test_mini": {**bench["mmau_test_mini"], "rows": str(rows_path)}}
    result = harness.run_eval(make_cfg(tiny_full_dir, tmp_path / "run", bench),
                              **sensitive)["mmau_test_mini"]
    assert result["excluded"]["count"] == 2
    assert [e["id"] for e in result["excluded"]["items"]] == ["m2", "m5"]
    assert all(e["reason"] for e in result["excluded"]["items"])
    assert result["score"]["n_items"] == 7  # the excluded two are skipped, not in the denominator
    assert result["score"]["total"]["skipped"] == 2 and result["score"]["total"]["scored"] == 5
    assert result["n_predicted"] == 5
    broken = _predictions(tmp_path / "run", "mmau_test_mini")
    clean = _predictions(clean_dir, "mmau_test_mini")
    assert set(broken) == set(clean) - {"m2", "m5"}
    assert len({clean[i]["completion"] for i in broken}) >= 4  # outputs differ across items
    for item_id, rec in broken.items():
        assert rec == clean[item_id]
    sub = json.loads((tmp_path / "run" / "submissions" / "mmau_test_mini.json").read_text())
    assert {"m2", "m5"} <= {s["id"] for s in sub if "model_output" not in s}
    assert len(sub) == 7
    md = (tmp_path / "run" / "reports" / "mmau_test_mini.md").read_text()
    assert "Excluded (missing or broken audio): 2" in md


def test_scores_follow_each_items_own_audio(tiny_full_dir, tmp_path, monkeypatch):
    """Scripted outputs chosen from each clip's audio: exact accuracy, no item misaligned."""
    rows_path, meta, rows = write_mmau(tmp_path / "data", n=6)
    Path(rows[2]["audio"]).unlink()  # first of its batch: a zip over the batch would shift
    # Answer by tone: m0 right (bare letter), m1 right (answer inside a sentence), m3 wrong (a
    # distractor word, an answer word missing), m4 empty answer (scored wrong), m5 right
    # ("(B) ..."); m2's audio is gone: never generated, skipped.
    script = {200: "<answer>A</answer>", 220: "<think>x</think><answer>I hear a cat meowing."
              "</answer>", 260: "<answer>a man or a cat</answer>", 280: "<answer> </answer>",
              300: "<answer>(B) a cat meowing</answer>"}
    monkeypatch.setattr(harness, "generate_rows", scripted(script))
    bench = {"mmau_test_mini": {"scorer": "mmau", "rows": str(rows_path),
                                "metadata": str(meta), "version": "original"}}
    r = harness.run_eval(make_cfg(tiny_full_dir, tmp_path / "run", bench))["mmau_test_mini"]
    assert r["score"]["total"] == {"accuracy": 60.0, "correct": 3, "scored": 5, "skipped": 1,
                                   "empty": 1}
    assert r["score"]["groups"]["task"]["music"] == {"accuracy": 50.0, "correct": 1,
                                                     "scored": 2, "skipped": 0, "empty": 1}
    assert r["score"]["groups"]["task"]["sound"] == {"accuracy": 50.0, "correct": 1,
                                                     "scored": 2, "skipped": 0, "empty": 0}
    assert r["score"]["groups"]["task"]["speech"]["skipped"] == 1
    assert r["excluded"]["items"][0]["id"] == "m2"
    assert "submission" not in r  # test-mini with answers: scored here, no submission asked


def test_mmau_test_split_writes_only_a_submission(tiny_full_dir, tmp_path, monkeypatch):
    rows_path, meta, rows = write_mmau(tmp_path / "data", n=3, split="test", answers=False)
    monkeypatch.setattr(harness, "generate_rows",
                        lambda m, c, rows, d: ["<answer>B. a cat meowing</answer>"] * len(rows))
    bench = {"mmau_test": {"scorer": "mmau", "rows": str(rows_path), "metadata": str(meta),
                           "split": "test"}}
    r = harness.run_eval(make_cfg(tiny_full_dir, tmp_path / "run", bench))["mmau_test"]
    assert r["score"] is None and r["accuracy"] is None
    sub = json.loads(Path(r["submission"]).read_text())
    assert [s["model_output"] for s in sub] == ["a cat meowing"] * 3
    assert [s["model_prediction"] for s in sub] == ["a cat meowing"] * 3
    assert "server" in (tmp_path / "run" / "reports" / "mmau_test.md").read_text()


# --------------------------------------------------------------------------------------------
# MuchoMusic and our own rows
# --------------------------------------------------------------------------------------------
def test_muchomusic_beam_search_run(tiny_full_dir, tmp_path):
    rows_path, csv_path, rows = write_mucho(tmp_path / "data")
    Path(rows[3]["audio"]).unlink()
    bench = {"muchomusic": {"scorer": "muchomusic", "rows": str(rows_path),
                            "metadata": str(csv_path), "template": "muchomusic"}}
    cfg = make_cfg(tiny_full_dir, tmp_path / "run", bench, **{"decoding.num_beams": 2})
    r = harness.run_eval(cfg)["muchomusic"]
    assert r["prompt_template"] == "muchomusic"
    assert r["excluded"] == {"count": 1, "items": [{"id": rows[3]["id"], "reason": "missing"}]}
    # The excluded item is unanswered, not dropped: it stays in N.
    assert r["score"]["n_items"] == 5 and r["score"]["method"] == "official_rule"
    assert r["score"]["total"]["unanswered"] >= 1
    assert {k: v["n"] for k, v in r["score"]["groups"]["subset"].items()} == {
        "knowledge": 3, "reasoning": 2}
    assert r["metadata"]["sha256"] == hashlib.sha256(csv_path.read_bytes()).hexdigest()
    assert (tmp_path / "run" / "reports" / "muchomusic_bars.png").exists()
    assert "instruction following" in (tmp_path / "run" / "reports" / "muchomusic.md").read_text()


def test_muchomusic_scripted_scores(tiny_full_dir, tmp_path, monkeypatch):
    rows_path, _, rows = write_mucho(tmp_path / "data", n=4)  # gold "piano", options shuffled

    def letter(row, text):
        return fmt.OPTION_LETTERS[row["options"].index(text)]
    # Item 0: "(X) piano" right; 1: names violin, wrong but answered; 2: bare letter of piano,
    # right; 3: no option named, unanswered.
    script = {300: f"<answer>({letter(rows[0], 'piano')}) piano</answer>",
              320: "It is the violin.", 340: f"<answer>{letter(rows[2], 'piano')}</answer>",
              360: "no idea"}
    monkeypatch.setattr(harness, "generate_rows", scripted(script))
    bench = {"muchomusic": {"scorer": "muchomusic", "rows": str(rows_path)}}
    r = harness.run_eval(make_cfg(tiny_full_dir, tmp_path / "run", bench))["muchomusic"]
    assert r["score"]["total"]["accuracy"] == 50.0
    assert r["score"]["total"]["instruction_following"] == 75.0
    preds = _predictions(tmp_path / "run", "muchomusic")
    assert [preds[row["id"]]["prediction"] for row in rows] == ["piano", "violin", "piano", None]


def _synthetic_rows(folder: Path, n: int = 5) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    choices = ["low", "high"]
    rows = []
    for i in range(n):
        audio = _tone(folder / f"s{i}.wav", 220 * (1 + i % 2))
        user = fmt.user_prompt(f"Question s{i}: is the tone low or high?", choices)
        rows.append({"id": f"s{i}", "audio": audio, "task": "pitch", "variant": "semantic",
                     "answer": fmt.mc_answer(choices, i % 2), "choices": choices,
                     "messages": [
                         {"role": "system", "content": [{"type": "text",
                                                         "text": fmt.SYSTEM_PROMPT}]},
                         {"role": "user", "content": [{"type": "audio", "audio": audio},
                                                      {"type": "text", "text": user}]},
                         {"role": "assistant", "content": [{"type": "text", "text": "x"}]}]})
    return rows


def test_placeholders_are_never_generated(tiny_model, tiny_processor, tmp_path):
    """A model that prefers <|AUDIO|>/<|IMAGE|>/<|VIDEO|> above all still generates text."""
    from audsemthinker.model.tokens import PLACEHOLDER_TOKENS

    ids = [tiny_processor.tokenizer.convert_tokens_to_ids(t) for t in PLACEHOLDER_TOKENS]

    def boost(module, args, out):
        out[..., ids] += 1e4
        return out

    tiny_model.lm_head.register_forward_hook(boost)
    rows = _synthetic_rows(tmp_path, n=2)
    for decoding in ({"max_new_tokens": 4}, {"max_new_tokens": 4, "num_beams": 2},
                     {"max_new_tokens": 4, "do_sample": True, "top_k": 5}):
        kw = harness.decoding_from(decoding)
        out = harness.generate_answers(tiny_model, tiny_processor, rows, kw, batch_size=2)
        assert len(out) == 2 and all(out)


def test_accuracy_of_counts_letter_text_and_both():
    rows = [{"answer": "B. high", "choices": ["low", "high"]}] * 4
    completions = ["<answer>B</answer>", "<think>t</think><answer>high</answer>",
                   "<answer>A. high</answer>", "<answer>low</answer>"]
    assert harness.accuracy_of(rows, completions) == 50.0
    with pytest.raises(ValueError, match="3 completions"):
        harness.accuracy_of(rows, completions[:3])


def test_harness_accuracy_equals_generate_answers_accuracy(tiny_full_dir, tiny_model,
                                                           tiny_processor, tmp_path):
    rows = _synthetic_rows(tmp_path / "data")
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench = {"synthetic_test": {"scorer": "accuracy", "rows": str(path), "version": "synthetic"}}
    cfg = make_cfg(tiny_full_dir, tmp_path / "run", bench)
    r = harness.run_eval(cfg, model=tiny_model, processor=tiny_processor,
                         label="tiny")["synthetic_test"]
    completions = harness.generate_answers(tiny_model, tiny_processor, rows,
                                           dict(cfg.eval.decoding), batch_size=2)
    preds = _predictions(tmp_path / "run", "synthetic_test")
    assert [preds[r["id"]]["completion"] for r in rows] == completions
    assert r["accuracy"] == harness.accuracy_of(rows, completions)
    assert r["score"]["total"]["n"] == 5


def test_adapter_is_loaded_on_the_base(tiny_full_dir, tiny_model, tiny_processor, tmp_path):
    import torch

    from audsemthinker.model.lora import LoraSettings, apply_lora

    peft_model = apply_lora(tiny_model, LoraSettings(preset="lm_attn", r=4, alpha=8,
                                                     dropout=0.0))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 2.0)
    peft_model.save_pretrained(tmp_path / "adapter")
    rows = _synthetic_rows(tmp_path / "data", n=4)
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench = {"synthetic_test": {"scorer": "accuracy", "rows": str(path)}}
    cfg = make_cfg(tiny_full_dir, tmp_path / "run", bench, adapter=str(tmp_path / "adapter"))
    r = harness.run_eval(cfg)["synthetic_test"]
    assert r["model"]["adapter"] == str(tmp_path / "adapter")
    want = harness.generate_answers(peft_model.eval(), tiny_processor, rows,
                                    dict(cfg.eval.decoding), batch_size=2)
    with peft_model.disable_adapter():
        base = harness.generate_answers(peft_model, tiny_processor, rows,
                                        dict(cfg.eval.decoding), batch_size=2)
    got = [_predictions(tmp_path / "run", "synthetic_test")[r["id"]]["completion"] for r in rows]
    assert got == want
    assert got != base


# --------------------------------------------------------------------------------------------
# Safety, config, paper tables
# --------------------------------------------------------------------------------------------
def test_resume_with_other_settings_is_refused(clean_run, sensitive, tiny_full_dir):
    run, bench, _ = clean_run
    cfg = make_cfg(tiny_full_dir, run, bench, **{"decoding.max_new_tokens": 9})
    with pytest.raises(ValueError, match=re.escape("different settings (['decoding'] differ)")):
        harness.run_eval(cfg, **sensitive)
    with pytest.raises(ValueError, match=re.escape("different settings (['model'] differ)")):
        harness.run_eval(make_cfg(tiny_full_dir, run, bench))  # the unscaled checkpoint


def test_prediction_store_rejects_a_second_copy_of_an_id(tmp_path):
    store = PredictionStore(tmp_path / "p.jsonl", {"a": 1})
    store.append([{"id": "x", "completion": "c"}])
    with pytest.raises(ValueError, match="already predicted"):
        store.append([{"id": "x", "completion": "d"}])
    (tmp_path / "p.jsonl").write_text('{"id": "x"}\n{"id": "x"}\n')
    with pytest.raises(ValueError, match="occurs twice"):
        PredictionStore(tmp_path / "p.jsonl", {"a": 1})


@pytest.mark.parametrize("key, value, where", [
    ("eval.decodng", {}, "eval.decodng"),
    ("eval.benchmarks.b.scorr", "mmau", "eval.benchmarks.b.scorr"),
    ("eval.benchmarks.b.scorer", "bleu", "eval.benchmarks.b.scorer"),
    ("eval.prompt", "chatml", "eval.prompt"),
])
def test_bad_eval_config_names_the_key(tmp_path, key, value, where):
    cfg = make_cfg(tmp_path / "model", tmp_path, {"b": {"scorer": "mmau", "rows": "x.jsonl"}})
    OmegaConf.set_struct(cfg, False)
    OmegaConf.update(cfg, key, value)
    with pytest.raises(ConfigError, match="^" + re.escape(where)):
        harness.eval_settings(cfg.eval)


@pytest.mark.parametrize("name, beams, tokens, prompt, benches", [
    ("tiny", 1, 48, "audsem", ["synthetic_test"]),
    ("paper", 5, 400, "audsem", ["mmau_test_mini", "mmau_test", "muchomusic"]),
    ("mmau_test_mini", 5, 400, "audsem", ["mmau_test_mini"]),
    ("mmau_test", 5, 400, "audsem", ["mmau_test"]),
    ("muchomusic", 5, 400, "audsem", ["muchomusic"]),
    ("r1_aqa", 1, 256, "r1_aqa", ["mmau_test_mini"]),
])
def test_shipped_eval_configs(name, beams, tokens, prompt, benches):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"eval={name}", "run_dir=x"])
    s = harness.eval_settings(cfg.eval)
    assert (s.decoding["num_beams"], s.decoding["max_new_tokens"], s.prompt) == (beams, tokens,
                                                                                 prompt)
    assert list(s.benchmarks) == benches
    assert s.benchmarks.get("mmau_test") is None or s.benchmarks["mmau_test"].submission


def test_reproduce_builds_paper_tables_from_results(clean_run, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "reproduce", Path(__file__).resolve().parents[1] / "scripts" / "reproduce.py")
    reproduce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reproduce)
    run, _, result = clean_run
    out = reproduce.main(["--run", f"ours: tiny={run}", "--score",
                          "AudSemThinker (SFT):mmau_test=60.41", "--out", str(tmp_path)])
    cells = json.loads((tmp_path / "paper_tables.json").read_text())
    main = {(c["row"], c["column"]): c for c in cells["main"]}
    assert main[("ours: tiny", "mmau_test_mini")]["ours"] == result["accuracy"]
    assert main[("ours: tiny", "mmau_test_mini")]["paper"] is None
    sft = main[("AudSemThinker (SFT)", "mmau_test")]
    assert (sft["paper"], sft["ours"]) == (64.41, 60.41)
    assert sft["diff"] == pytest.approx(-4.0)
    per_task = {(c["row"], c["column"]): c["ours"] for c in cells["per_task"]}
    assert per_task[("ours: tiny", "sound")] == result["score"]["groups"]["task"]["sound"][
        "accuracy"]
    md = Path(out["markdown"]).read_text()
    assert "MMAU test-mini (paper)" in md and "ours: tiny" in md


def test_eval_script_killed_midway_resumes(tiny_full_dir, tmp_path):
    """scripts/eval.py under SIGKILL: the restart keeps every finished line and does the rest."""
    import os
    import signal
    import subprocess
    import sys
    import time

    n = 6
    rows_path, meta, rows = write_mmau(tmp_path / "data", n=n)
    run = tmp_path / "run"
    cmd = [sys.executable, str(Path(__file__).resolve().parents[1] / "scripts" / "eval.py"),
           f"model.name_or_path={tiny_full_dir}", f"run_dir={run}", "eval=tiny",
           f"hydra.run.dir={tmp_path / 'hydra'}", "eval.batch_size=1",
           "eval.decoding.max_new_tokens=32",
           "~eval.benchmarks.synthetic_test",
           f"+eval.benchmarks.fx={{scorer:mmau,rows:'{rows_path}',metadata:'{meta}'}}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    preds = run / "predictions" / "fx.jsonl"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if preds.exists() and preds.read_text().count("\n") >= 1:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    before = preds.read_text()
    done = before.count("\n")
    assert 1 <= done < n
    assert not (run / "results" / "fx.json").exists()

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    after = preds.read_text()
    assert after.startswith(before.rsplit("\n", 1)[0])  # finished lines kept as they were
    assert f"{n - done}/{n - done}" in again.stderr  # only the rest was generated
    assert sorted(_predictions(run, "fx")) == sorted(r["id"] for r in rows)
    result = json.loads((run / "results" / "fx.json").read_text())
    assert result["n_predicted"] == n and result["score"]["n_items"] == n


def test_paper_rows_go_to_their_table():
    from audsemthinker.eval.tables import paper_comparison

    placed = paper_comparison({"benchmarks": {
        "SFT with semantic elements": {"mmau_test_mini": 60.0, "synthetic_test": 90.0},
        "AudSemThinker (SFT)": {"mmau_test_mini": 61.0, "muchomusic": 50.0},
        "ours: tiny": {"synthetic_test": 99.0}}, "per_task": {}})
    assert placed["ablations"] == {"SFT with semantic elements": {"mmau_test_mini": 60.0}}
    assert placed["main"] == {"AudSemThinker (SFT)": {"mmau_test_mini": 61.0, "muchomusic": 50.0}}
    assert placed["peers"] == {} and placed["per_task"] == {}
