"""Open-answer reward: similarity of the ``<answer>`` to a free-text reference (issue 9).

GRPO hurt open-ended tasks in the paper because their answers are hard to verify. Two ways to
score them: a lexical score (token F1 or ROUGE-L, no dependency, milliseconds) and an LLM judge
on any OpenAI-compatible endpoint, rating 0-5 like AudioBench (stdlib ``urllib`` only).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from audsemthinker import format as fmt
from audsemthinker.rewards.registry import column, completion_text, prompt_text, register

METRICS = ("f1", "rouge_l")
MODES = ("lexical", "judge")


def _words(text: str) -> list[str]:
    return fmt.normalize(text).split()


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1 over :func:`format.normalize` words; 0.0 if either side is empty."""
    pred, ref = _words(prediction), _words(reference)
    common = sum((Counter(pred) & Counter(ref)).values())
    if not common:
        return 0.0
    p, r = common / len(pred), common / len(ref)
    return 2 * p * r / (p + r)


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists.

    Bit-parallel (Allison-Dix / Hyyro): one big-integer update per token of ``a``, so a 100k-word
    answer costs milliseconds where the O(len(a)*len(b)) table would take minutes. Bit i of
    ``v`` is 0 where row-to-row LCS grows at column i; the zeros counted at the end are the LCS.
    """
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, tok in enumerate(b):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(b)) - 1
    v = full
    for tok in a:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return len(b) - v.bit_count()


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (beta = 1) over :func:`format.normalize` words; 0.0 if either is empty."""
    pred, ref = _words(prediction), _words(reference)
    lcs = lcs_length(pred, ref)
    if not lcs:
        return 0.0
    p, r = lcs / len(pred), lcs / len(ref)
    return 2 * p * r / (p + r)


# --------------------------------------------------------------------------------------------
# LLM judge
# --------------------------------------------------------------------------------------------
JUDGE_PROMPT = """[Reference Answer]
{reference}

[Model Answer]
{prediction}

[Question]
{question}

[Task]
Rate the model's answer based on its alignment with the reference answer, focusing on accuracy \
and relevance to the reference provided. Please be critical on the details.
Criteria: Assess if the model's response mirrors the reference in terms of content, accuracy, \
and relevance.
Score0: The answer is completely misaligned, providing incorrect or irrelevant information \
compared to the reference.
Score1: The answer shows minimal alignment, often misunderstanding or providing irrelevant \
details unrelated to the reference.
Score2: The answer recognizes the topic but diverges significantly from the reference in \
accuracy or relevance.
Score3: The answer aligns with the reference generally but lacks detail or precise accuracy in \
some aspects.
Score4: The answer is mostly accurate and relevant, closely following the reference but could \
be clearer or more detailed.
Score5: The answer is highly accurate, detailed, and matches the reference answer perfectly, \
capturing its essence and detail.

Your response must start with the rating on its own line, then a short explanation:
Rating: (an integer from 0 to 5)
Explanation: (one or two sentences comparing the model's answer with the reference)"""
"""AudioBench's open-ended judge rubric, asking for the rating first so it parses reliably."""

_RATING_RE = re.compile(r"rating\s*[:=]?\s*\**\s*(\d+)", re.IGNORECASE)


class JudgeUnavailableError(RuntimeError):
    """The judge endpoint could not be reached or refused the request: a config error."""


def parse_score(reply: str) -> int | None:
    """The 0-5 rating in a judge reply: a ``Rating: N`` label, else the first integer; else None."""
    m = _RATING_RE.search(reply) or re.search(r"\d+", reply)
    if m is None:
        return None
    score = int(m.group(m.lastindex or 0))
    return score if 0 <= score <= 5 else None


class OpenAIJudge:
    """Rates answers 0-5 with a chat-completions endpoint, caching replies by prompt.

    Args:
        base_url: endpoint root, e.g. ``http://127.0.0.1:8000/v1``; requests go to
            ``{base_url}/chat/completions``.
        model: model name sent in the request.
        api_key_env: name of an environment variable holding the API key (sent as a bearer
            token); None sends no key.
        timeout_s: per-request timeout.
        max_retries: extra attempts after a timeout, connection error, 429 or 5xx.
        backoff_s: sleep before retry k is ``backoff_s * 2**k``.
        cache_path: JSON-lines file of ``{"key", "reply", "score"}``; the key is the sha256 of the
            request's model and messages. Appended to, re-read on a miss, so several processes
            share it. Malformed replies are not cached.
        concurrency: parallel requests per reward call.
        prompt: template with ``{question}``, ``{reference}``, ``{prediction}``.

    Attributes:
        stats: counts of ``requests`` (HTTP attempts), ``cache_hits``, ``scored`` and
            ``malformed`` (replies without a 0-5 rating, scored 0).

    Raises:
        ValueError: empty base_url or model, ``api_key_env`` naming an unset variable, or a
            prompt with placeholders other than the three above.
    """

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None,
                 timeout_s: float = 60.0, max_retries: int = 2, backoff_s: float = 1.0,
                 cache_path: str | None = None, concurrency: int = 4,
                 prompt: str = JUDGE_PROMPT) -> None:
        if not base_url or not model:
            raise ValueError("the judge needs a base_url and a model")
        self.url = str(base_url).rstrip("/") + "/chat/completions"
        self.model, self.prompt = str(model), str(prompt)
        try:
            self.prompt.format(question="", reference="", prediction="")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"judge prompt must use only {{question}}, {{reference}}, "
                             f"{{prediction}} placeholders: {e!r}") from None
        self.api_key = None
        if api_key_env:
            self.api_key = os.environ.get(api_key_env)
            if not self.api_key:
                raise ValueError(f"judge api_key_env names {api_key_env!r}, which is not set")
        self.timeout_s, self.max_retries = float(timeout_s), int(max_retries)
        self.backoff_s, self.concurrency = float(backoff_s), max(1, int(concurrency))
        self.cache_path = cache_path
        self.stats = {"requests": 0, "cache_hits": 0, "scored": 0, "malformed": 0}
        self._cache: dict[str, int] = {}
        self._cache_offset = 0
        self._lock = threading.Lock()
        self._refresh_cache()

    def score(self, question: str, reference: str, prediction: str) -> float:
        """The judge's rating divided by 5, in [0, 1]; 0.0 for a reply without a rating.

        Raises:
            JudgeUnavailableError: the endpoint failed after all retries, or refused the
                request (4xx other than 429), naming the URL.
        """
        messages = [{"role": "user", "content": self.prompt.format(
            question=question, reference=reference, prediction=prediction)}]
        key = hashlib.sha256(json.dumps([self.model, messages]).encode()).hexdigest()
        with self._lock:
            if key not in self._cache:
                self._refresh_cache()
            if key in self._cache:
                self.stats["cache_hits"] += 1
                return self._cache[key] / 5
        reply = self._post(messages)
        score = parse_score(reply)
        with self._lock:
            if score is None:
                self.stats["malformed"] += 1
                return 0.0
            self.stats["scored"] += 1
            self._cache[key] = score
            if self.cache_path:
                with open(self.cache_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"key": key, "reply": reply, "score": score}) + "\n")
        return score / 5

    def score_many(self, rows: list[tuple[str, str, str]]) -> list[float]:
        """:meth:`score` over ``(question, reference, prediction)`` rows, in order."""
        if self.concurrency == 1 or len(rows) < 2:
            return [self.score(*r) for r in rows]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(lambda r: self.score(*r), rows))

    def _post(self, messages: list[dict]) -> str:
        # Imported here: urllib.request pulls in http, email and ssl (~30 ms), and importing the
        # rewards package must stay cheap for the lexical rewards.
        import http.client
        import urllib.error
        import urllib.request

        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            with self._lock:
                self.stats["requests"] += 1
            req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    raw = resp.read()
            except urllib.error.HTTPError as e:
                if e.code != 429 and e.code < 500:
                    raise JudgeUnavailableError(
                        f"judge endpoint {self.url} refused the request: HTTP {e.code} "
                        f"{e.read()[:200]!r}") from e
                last = e
                continue
            except (OSError, ValueError, http.client.HTTPException) as e:  # timeouts, resets
                last = e
                continue
            return _reply_content(raw)
        raise JudgeUnavailableError(
            f"judge endpoint {self.url} unavailable after {self.max_retries + 1} attempts "
            f"(timeout {self.timeout_s}s): {last!r}")

    def _refresh_cache(self) -> None:
        """Read cache lines appended since the last read (by this or another process)."""
        if not self.cache_path or not os.path.exists(self.cache_path):
            return
        with open(self.cache_path, "rb") as f:
            f.seek(self._cache_offset)
            for line in f:
                if not line.endswith(b"\n"):
                    break  # another process is still writing this line
                self._cache_offset += len(line)
                try:
                    rec = json.loads(line)
                    self._cache[str(rec["key"])] = int(rec["score"])
                except (ValueError, KeyError, TypeError):
                    continue


def _reply_content(raw: bytes) -> str:
    """``choices[0].message.content`` of a chat-completions response; "" if absent."""
    try:
        content = json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return ""
    return content if isinstance(content, str) else ""


@register("open_answer")
def get_open_answer_reward(mode: str = "lexical", metric: str = "f1",
                           judge: Mapping[str, Any] | OpenAIJudge | None = None
                           ) -> Callable[..., list[float]]:
    """Build the open-answer reward, in [0, 1].

    Compares :func:`format.extract_answer` of each completion with the ``answer`` column (a
    missing reference scores 0). The judge also sees the ``question`` column, or the last user
    turn of the prompt when there is none.

    Args:
        mode: ``lexical`` or ``judge``.
        metric: lexical metric, ``f1`` (:func:`token_f1`) or ``rouge_l`` (:func:`rouge_l`).
        judge: for mode ``judge``, an :class:`OpenAIJudge` or its keyword arguments; the
            returned function exposes it as ``.judge`` (read ``.judge.stats``).

    Returns:
        ``open_answer(completions, **columns) -> list[float]``.

    Raises:
        ValueError: unknown mode or metric, or judge mode without a judge config. The returned
            function raises :class:`JudgeUnavailableError` when the endpoint is unreachable.
    """
    if mode not in MODES:
        raise ValueError(f"unknown open_answer mode {mode!r}; expected one of {MODES}")
    if metric not in METRICS:
        raise ValueError(f"unknown open_answer metric {metric!r}; expected one of {METRICS}")
    lexical = token_f1 if metric == "f1" else rouge_l
    scorer: OpenAIJudge | None = None
    if mode == "judge":
        if judge is None:
            raise ValueError("open_answer mode 'judge' needs a 'judge' config (base_url, model)")
        scorer = judge if isinstance(judge, OpenAIJudge) else OpenAIJudge(**dict(judge))

    def open_answer(completions: list[Any], **kwargs: Any) -> list[float]:
        n = len(completions)
        refs = column(kwargs, "answer", n)
        preds = [fmt.extract_answer(completion_text(c)) for c in completions]
        if scorer is None:
            return [lexical(p, str(r)) if r is not None else 0.0 for p, r in zip(preds, refs)]
        questions = column(kwargs, "question", n)
        prompts = column(kwargs, "prompts", n)
        todo = [(i, (str(q) if q is not None else prompt_text(pr), str(r), p))
                for i, (q, pr, r, p) in enumerate(zip(questions, prompts, refs, preds))
                if r is not None]
        out = [0.0] * n
        for (i, _), s in zip(todo, scorer.score_many([row for _, row in todo])):
            out[i] = s
        return out

    open_answer.judge = scorer  # type: ignore[attr-defined]
    return open_answer
