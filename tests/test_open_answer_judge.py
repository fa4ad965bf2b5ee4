"""The open_answer LLM-judge mode against a real local OpenAI-compatible HTTP server."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from audsemthinker.rewards import JudgeUnavailableError, OpenAIJudge, build_rewards, get_reward
from audsemthinker.rewards.open_answer import parse_score


class FakeJudgeServer(ThreadingHTTPServer):
    """``POST /v1/chat/completions`` answering with ``rule(prompt)``, a delay or an HTTP status."""

    daemon_threads = True
    block_on_close = False

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_port}/v1"
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.delay_s = 0.0
        self.status = 200
        self.raw_body: bytes | None = None
        self.redirect_to: str | None = None
        self.rule = score_by_exact_match


def fenced(prompt: str, label: str) -> str:
    """The text the prompt fences under ``label`` (markers carry the same tag)."""
    m = re.search(rf"\[{label} BEGIN (\w+)\]\n(.*?)\n\[{label} END \1\]", prompt, re.DOTALL)
    return m.group(2)


def score_by_exact_match(prompt: str) -> str:
    """The test's judge: 5 if the model answer equals the reference, else 2."""
    ref, pred = fenced(prompt, "REFERENCE ANSWER"), fenced(prompt, "MODEL ANSWER")
    return f"Explanation: compared.\nRating: {5 if ref == pred else 2}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeJudgeServer

    def do_POST(self):  # noqa: N802 - http.server's name
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv.requests.append(body)
        srv.headers.append(dict(self.headers))
        time.sleep(srv.delay_s)
        if self.path != "/v1/chat/completions":
            self.send_error(404)
            return
        if srv.redirect_to:
            self.send_response(302)
            self.send_header("Location", srv.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if srv.status != 200:
            self.send_error(srv.status)
            return
        content = srv.rule(body["messages"][-1]["content"])
        raw = srv.raw_body if srv.raw_body is not None else json.dumps(
            {"id": "x", "object": "chat.completion", "model": body["model"],
             "choices": [{"index": 0, "finish_reason": "stop",
                          "message": {"role": "assistant", "content": content}}]}).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
        except OSError:
            pass  # the client timed out and hung up

    def do_GET(self):  # noqa: N802 - where urllib sends a POST after following a 302
        self.server.requests.append({"method": "GET", "path": self.path})
        self.server.headers.append(dict(self.headers))
        self.send_error(405)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = FakeJudgeServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def judge_reward(srv, **judge):
    cfg = {"base_url": srv.url, "model": "judge-1", "timeout_s": 0.2, "max_retries": 1,
           "backoff_s": 0.0, **judge}
    return get_reward("open_answer", mode="judge", judge=cfg)


COMPLETIONS = ["<think>hmm</think><answer>a dog barks</answer>",
               "<think>hmm</think><answer>a cat meows</answer>"]
COLUMNS = {"answer": ["a dog barks", "a dog barks"], "question": ["What do you hear?"] * 2}


def test_judge_scores_over_five_and_sends_chat_completions(server, monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", "sekret")
    f = judge_reward(server, api_key_env="MY_JUDGE_KEY")
    assert f(completions=COMPLETIONS, **COLUMNS) == [1.0, 0.4]
    assert len(server.requests) == 2
    body = server.requests[0]
    assert body["model"] == "judge-1" and body["temperature"] == 0
    prompt = body["messages"][0]["content"]
    assert "What do you hear?" in prompt and "a dog barks" in prompt and "hmm" not in prompt
    assert server.headers[0]["Authorization"] == "Bearer sekret"
    assert f.judge.stats == {"requests": 2, "cache_hits": 0, "scored": 2, "malformed": 0,
                             "failed": 0}


def test_judge_takes_question_from_prompt_and_skips_rows_without_reference(server):
    f = judge_reward(server)
    prompts = [[{"role": "system", "content": "sys"},
                {"role": "user", "content": [{"type": "audio", "audio": "a.wav"},
                                             {"type": "text", "text": "Describe the audio."}]}]]
    out = f(prompts=prompts * 2, completions=COMPLETIONS, answer=["a dog barks", None])
    assert out == [1.0, 0.0]
    assert len(server.requests) == 1
    assert fenced(server.requests[0]["messages"][0]["content"], "QUESTION") == "Describe the audio."


def test_cache_prevents_second_request_across_instances(server, tmp_path):
    cache = tmp_path / "judge.jsonl"
    f = judge_reward(server, cache_path=str(cache))
    assert f(completions=COMPLETIONS, **COLUMNS) == [1.0, 0.4]
    assert f(completions=COMPLETIONS, **COLUMNS) == [1.0, 0.4]
    assert len(server.requests) == 2
    assert f.judge.stats["cache_hits"] == 2
    lines = [json.loads(line) for line in cache.read_text().splitlines()]
    assert sorted(rec["score"] for rec in lines) == [2, 5]
    # A fresh judge (as in another process) reuses the file; a different model does not.
    g = judge_reward(server, cache_path=str(cache))
    assert g(completions=COMPLETIONS, **COLUMNS) == [1.0, 0.4]
    assert len(server.requests) == 2
    h = judge_reward(server, cache_path=str(cache), model="judge-2")
    h(completions=COMPLETIONS[:1], answer=["a dog barks"])
    assert len(server.requests) == 3


def test_cache_written_by_another_instance_is_picked_up(server, tmp_path):
    cache = str(tmp_path / "judge.jsonl")
    f, g = judge_reward(server, cache_path=cache), judge_reward(server, cache_path=cache)
    f(completions=COMPLETIONS, **COLUMNS)
    assert g(completions=COMPLETIONS, **COLUMNS) == [1.0, 0.4]
    assert len(server.requests) == 2


def test_timeout_raises_after_retries_naming_the_url(server):
    server.delay_s = 0.5
    f = judge_reward(server, timeout_s=0.2, max_retries=1)
    start = time.monotonic()
    with pytest.raises(JudgeUnavailableError, match=re.escape(server.url + "/chat/completions")):
        f(completions=COMPLETIONS[:1], answer=["a dog barks"])
    assert time.monotonic() - start < 2.0
    assert len(server.requests) == 2  # one try + one retry


def test_unreachable_endpoint_raises(server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    judge = OpenAIJudge(f"http://127.0.0.1:{port}/v1", "m", timeout_s=0.2, max_retries=2,
                        backoff_s=0.0)
    with pytest.raises(JudgeUnavailableError, match=f"127.0.0.1:{port}.*3 attempts"):
        judge.score("q", "ref", "pred")
    assert judge.stats["requests"] == 3


def test_server_errors_are_retried_client_errors_are_not(server):
    server.status = 503
    with pytest.raises(JudgeUnavailableError, match="after 2 attempts"):
        judge_reward(server)(completions=COMPLETIONS[:1], answer=["x"])
    assert len(server.requests) == 2
    server.status = 401
    with pytest.raises(JudgeUnavailableError, match="refused the request: HTTP 401"):
        judge_reward(server)(completions=COMPLETIONS[:1], answer=["x"])
    assert len(server.requests) == 3


def test_malformed_reply_scores_zero_is_counted_and_not_cached(server, tmp_path):
    server.rule = lambda prompt: "I would rather not say. 5"
    f = judge_reward(server, cache_path=str(tmp_path / "c.jsonl"))
    assert f(completions=COMPLETIONS, **COLUMNS) == [0.0, 0.0]
    assert f.judge.stats["malformed"] == 2
    server.raw_body = b"not json"
    assert f(completions=COMPLETIONS[:1], answer=["a dog barks"]) == [0.0]
    assert f.judge.stats["malformed"] == 3
    assert len(server.requests) == 3  # malformed replies are asked again, never cached
    server.raw_body, server.rule = None, score_by_exact_match
    assert f(completions=COMPLETIONS[:1], answer=["a dog barks"]) == [1.0]


@pytest.mark.parametrize("reply, score", [
    ("Explanation: close.\nRating: 4", 4),
    ("Explanation: x\n**Rating:** 3", 3),
    ("Explanation: x\nRating: 2.\n\n", 2),
    ("The model wrote 'Rating: 5' on its own.\nRating: 1", 1),  # only the last line counts
    ("Rating: 5\nExplanation: it asked for a 5.", None),      # verdict not on the last line
    ("Explanation: the reference names 2 dogs, 5 cats.", None),  # no first-integer fallback
    ("Rating: 4 because the answer told me to", None),
    ("5", None),
    ("Rating: 7", None),
    ("Rating: 10", None),
    ("no idea", None),
    ("", None),
])
def test_parse_score(reply, score):
    assert parse_score(reply) == score


def test_judge_config_errors(monkeypatch):
    monkeypatch.delenv("NO_SUCH_JUDGE_KEY", raising=False)
    with pytest.raises(ValueError, match="NO_SUCH_JUDGE_KEY"):
        OpenAIJudge("http://127.0.0.1:1/v1", "m", api_key_env="NO_SUCH_JUDGE_KEY")
    with pytest.raises(ValueError, match="base_url and a model"):
        OpenAIJudge("", "m")
    with pytest.raises(ValueError, match="placeholders"):
        OpenAIJudge("http://127.0.0.1:1/v1", "m", prompt="{answer}")
    with pytest.raises(ValueError, match="bad config keys"):
        build_rewards([{"name": "open_answer", "mode": "judge", "judje": {}}])
