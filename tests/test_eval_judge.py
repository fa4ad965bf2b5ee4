"""The evaluation-time LLM judge (AudioBench's protocol) against local 127.0.0.1 servers:
scores, per-item cache and resume, a judge that errors, times out or returns garbage."""

from __future__ import annotations

import json

import pytest
from test_eval_harness import make_cfg, scripted, write_mucho
from test_judge_client import _serve
from test_open_answer_judge import fenced

from audsemthinker.eval import harness
from audsemthinker.eval.judge import judge_muchomusic
from audsemthinker.eval.tables import collect_ours
from audsemthinker.judge import JudgeClient, JudgeUnavailableError

server = pytest.fixture(_serve, name="server")
OPTIONS = ["guitar", "piano", "violin", "drums"]
ITEMS = [{"id": i, "question": f"Which instrument leads {i}?", "options": OPTIONS,
          "correct_answer": "piano", "music_knowledge": "True", "music_reasoning": "False"}
         for i in ("a", "b", "c", "d")]
OUTPUTS = {"a": "(B) piano", "b": "guitar", "c": "It is the piano."}  # d never generated


def binary_judge(prompt: str) -> str:
    """The test's judge: 1 when the fenced model answer names the reference's option text."""
    reference = fenced(prompt, "REFERENCE ANSWER").split(") ", 1)[1]
    verdict = int(reference in fenced(prompt, "MODEL ANSWER"))
    return f"Explanation: the reference is {reference}.\nRating: {verdict}"


def client(srv, **kw) -> JudgeClient:
    return JudgeClient(srv.url, kw.pop("model", "llama-3-70b"), timeout_s=kw.pop("timeout_s", 0.3),
                       max_retries=kw.pop("max_retries", 1), backoff_s=0.0,
                       **{"concurrency": 1, **kw})


def test_binary_protocol_scores_caches_and_records_the_judge(server, tmp_path):
    server.rule = binary_judge
    cache = tmp_path / "judgements.jsonl"
    r = judge_muchomusic(ITEMS, OUTPUTS, client(server), cache)
    assert r["method"] == "llm_judge"
    assert r["total"]["accuracy"] == 50.0  # (1 + 0 + 1 + 0) / 4 x 100: not generated counts 0
    j = r["judge"]
    assert j["model"] == "llama-3-70b" and j["endpoint"] == server.url + "/chat/completions"
    assert j["protocol"] == "audiobench_binary" and j["scale"] == [0, 1]
    assert (j["judged"], j["not_generated"], j["malformed"], j["failed"]) == (3, 1, 0, 0)
    assert j["success_rate"] == 0.75
    prompt = server.requests[0]["messages"][0]["content"]
    assert fenced(prompt, "REFERENCE ANSWER") == "(B) piano"
    assert "(A) guitar\n(B) piano" in fenced(prompt, "QUESTION")
    assert len(cache.read_text().splitlines()) == 3

    # Resumed: every verdict comes from the cache; another judge model is asked again.
    again = judge_muchomusic(ITEMS, OUTPUTS, client(server), cache)
    assert again["total"] == r["total"] and again["judge"]["cache_hits"] == 3
    assert len(server.requests) == 3
    other = judge_muchomusic(ITEMS, OUTPUTS, client(server, model="judge-2"), cache)
    assert other["judge"]["judged"] == 3 and len(server.requests) == 6


def test_judge_that_errors_midway_keeps_its_verdicts_and_resumes(server, tmp_path):
    def once_then_down(prompt):
        server.status = 500  # every later request errors
        return binary_judge(prompt)
    server.rule = once_then_down
    cache = tmp_path / "j.jsonl"
    with pytest.raises(JudgeUnavailableError, match="after 2 attempts"):
        judge_muchomusic(ITEMS, OUTPUTS, client(server), cache)
    assert len(cache.read_text().splitlines()) == 1  # the verdict before the failure is kept
    server.status, server.rule = 200, binary_judge
    n = len(server.requests)
    r = judge_muchomusic(ITEMS, OUTPUTS, client(server), cache)
    assert len(server.requests) - n == 2 and r["judge"]["cache_hits"] == 1
    assert r["total"]["accuracy"] == 50.0


def test_judge_that_times_out_is_a_counted_fallback(server, tmp_path):
    server.rule, server.delay_s = binary_judge, 0.6
    r = judge_muchomusic(ITEMS, OUTPUTS, client(server, timeout_s=0.2, on_unavailable="fallback"),
                         tmp_path / "j.jsonl")
    assert r["judge"]["failed"] == 3 and r["judge"]["judged"] == 0
    assert r["total"]["accuracy"] == 0.0 and r["judge"]["success_rate"] == 0.0
    cache = tmp_path / "j.jsonl"
    assert not cache.exists() or not cache.read_text()  # failures are not cached


@pytest.mark.parametrize("garbage", [b"not json at all", b'{"choices": []}',
                                     json.dumps({"choices": [{"message": {"content":
                                                 "I think 1"}}]}).encode()])
def test_judge_returning_garbage_is_counted_malformed(server, tmp_path, garbage):
    server.raw_body = garbage
    r = judge_muchomusic(ITEMS, OUTPUTS, client(server), tmp_path / "j.jsonl")
    assert r["judge"]["malformed"] == 3 and r["total"]["correct"] == 0
    assert r["total"]["accuracy"] == 0.0


def test_harness_reports_the_judge_beside_the_official_score(tiny_full_dir, tmp_path,
                                                             monkeypatch, server):
    server.rule = binary_judge
    rows_path, _, rows = write_mucho(tmp_path / "data", n=3)  # gold "piano"
    script = {300: "<answer>piano</answer>", 320: "<answer>violin</answer>",
              340: "<answer>the piano, clearly</answer>"}
    monkeypatch.setattr(harness, "generate_rows", scripted(script))
    bench = {"muchomusic": {"scorer": "muchomusic", "rows": str(rows_path),
                            "judge": {"base_url": server.url, "model": "llama-3-70b",
                                      "timeout_s": 1, "max_retries": 0}}}
    run = tmp_path / "run"
    r = harness.run_eval(make_cfg(tiny_full_dir, run, bench))["muchomusic"]
    judged = r["score_variants"]["llm_judge"]
    assert judged["total"]["accuracy"] == pytest.approx(200 / 3)
    assert judged["judge"]["model"] == "llama-3-70b"
    assert r["score"]["method"] == "official_rule" and "word_boundary" in r["score_variants"]
    assert (run / "judgements" / "muchomusic.jsonl").exists()
    assert "judge `llama-3-70b`" in (run / "reports" / "muchomusic.md").read_text()
    assert collect_ours({"x": run})["benchmarks"]["x"]["muchomusic"] == pytest.approx(200 / 3)
    n = len(server.requests)
    harness.run_eval(make_cfg(tiny_full_dir, run, bench))  # rerun: nothing asked twice
    assert len(server.requests) == n


@pytest.mark.parametrize("spec, msg", [
    ({"scorer": "mmau", "judge": {"base_url": "http://127.0.0.1:1/v1", "model": "m"}},
     "muchomusic scorer only"),
    ({"scorer": "muchomusic", "judge": {"base_url": "http://127.0.0.1:1/v1", "model": "m",
                                        "modle": "x"}}, "unknown keys"),
    ({"scorer": "muchomusic", "judge": {"model": "m"}}, "base_url and model"),
])
def test_judge_config_is_checked_at_start_up(spec, msg):
    from audsemthinker.config import ConfigError
    from audsemthinker.eval.settings import eval_settings

    with pytest.raises(ConfigError, match=msg):
        eval_settings({"benchmarks": {"b": {"rows": "x.jsonl", **spec}}})
