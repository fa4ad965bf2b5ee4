"""One client for every LLM judge: OpenAI-compatible chat, fenced prompts, strict verdicts.

The GRPO open-answer reward (``rewards/open_answer.py``) and the evaluation-time judge scorer
(``eval/judge.py``) both talk to the judge through :class:`JudgeClient`, so both get the same
guarantees:

- **No redirects.** urllib follows a 302 by re-sending the request, ``Authorization`` header
  included, to whatever host the ``Location`` names. A judge endpoint that redirects is refused
  with an error naming both addresses; point ``base_url`` at the final address instead.
- **Fenced text.** A completion under judgement is data, not instructions: :func:`fence` wraps
  it between markers carrying a digest of the text itself, which the text cannot contain, so a
  completion cannot close its fence early and speak to the judge as the rubric.
- **One verdict format.** :func:`parse_rating` accepts only a final ``Rating: N`` line within
  the declared scale; anything else is malformed (counted), never "the first integer anywhere".
- **A judge that is down** is retried with exponential backoff, then either fails the caller
  (``on_unavailable="fail"``) or is reported to it as unavailable so it can score a counted
  fallback (``"fallback"``).

Pure standard library (``urllib``), imported lazily, so importing this module stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ON_UNAVAILABLE = ("fail", "fallback")
COUNTERS = ("requests", "cache_hits", "scored", "malformed", "failed")
"""Judge counters: HTTP attempts, cached verdicts reused, verdicts parsed, replies without a
valid verdict, and items the judge could not be reached for (fallback policy)."""

_RATING_LINE = re.compile(r"[*_\s]*rating[*_\s]*[:=][*_\s]*([0-9]+)[*_\s]*\.?[*_\s]*",
                          re.IGNORECASE)


class JudgeUnavailableError(RuntimeError):
    """The judge endpoint could not be reached, refused the request, or redirected it."""


class JudgeDownError(JudgeUnavailableError):
    """The endpoint stayed unreachable (timeouts, resets, 429, 5xx) after every retry: the one
    failure the ``fallback`` policy may score through; refusals and redirects are config errors."""


def fence(text: str, label: str) -> str:
    """``text`` between begin/end markers that carry a digest of ``text``.

    The digest makes the markers unguessable from inside the text (a completion cannot contain
    the hash of itself), and deterministic, so a prompt, and the cache key made from it, is the
    same on every run.
    """
    text = str(text)
    tag = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"[{label} BEGIN {tag}]\n{text}\n[{label} END {tag}]"


def parse_rating(reply: str, low: int = 0, high: int = 5) -> int | None:
    """The verdict of a judge reply: its last non-empty line must be ``Rating: N``.

    Markdown emphasis around the label and a trailing period are tolerated; a rating outside
    ``[low, high]``, a rating followed by more text, or a reply whose verdict line is not last
    gives None (malformed). Only the last line counts, so a judge that quotes the completion
    (with a planted "Rating: 5" in it) before its own verdict is still read correctly.
    """
    lines = [line for line in str(reply).splitlines() if line.strip()]
    if not lines:
        return None
    m = _RATING_LINE.fullmatch(lines[-1])
    if m is None:
        return None
    score = int(m.group(1))
    return score if low <= score <= high else None


def redact_url(url: str) -> str:
    """An endpoint as it may be written to result files: no user:password, query or fragment."""
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class JudgeClient:
    """Chat completions against an OpenAI-compatible endpoint (vLLM, TGI, a hosted API).

    Args:
        base_url: endpoint root, e.g. ``http://127.0.0.1:8000/v1``; requests go to
            ``{base_url}/chat/completions``.
        model: model name sent in each request (recorded in results).
        api_key_env: name of an environment variable holding the key (sent as a bearer token);
            None sends none. The key itself is never stored in results or caches.
        timeout_s: per-request timeout.
        max_retries: extra attempts after a timeout, connection error, 429 or 5xx.
        backoff_s: sleep before retry k is ``backoff_s * 2**(k-1)``.
        concurrency: parallel requests in :meth:`map`.
        on_unavailable: ``fail`` (raise :class:`JudgeUnavailableError`) or ``fallback`` (the
            caller scores a fallback; see :meth:`map`).
        max_tokens: cap on the judge's reply length.

    Attributes:
        stats: the :data:`COUNTERS`, shared by everything using this client.

    Raises:
        ValueError: empty base_url or model, an unset ``api_key_env`` variable, or an unknown
            ``on_unavailable``.
    """

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None,
                 timeout_s: float = 60.0, max_retries: int = 2, backoff_s: float = 1.0,
                 concurrency: int = 4, on_unavailable: str = "fail",
                 max_tokens: int = 512) -> None:
        if not base_url or not model:
            raise ValueError("the judge needs a base_url and a model")
        if on_unavailable not in ON_UNAVAILABLE:
            raise ValueError(f"judge on_unavailable {on_unavailable!r}: expected one of "
                             f"{ON_UNAVAILABLE}")
        self.url = str(base_url).rstrip("/") + "/chat/completions"
        self.model = str(model)
        self.api_key = None
        if api_key_env:
            self.api_key = os.environ.get(api_key_env)
            if not self.api_key:
                raise ValueError(f"judge api_key_env names {api_key_env!r}, which is not set")
        self.timeout_s, self.max_retries = float(timeout_s), int(max_retries)
        self.backoff_s, self.concurrency = float(backoff_s), max(1, int(concurrency))
        self.on_unavailable, self.max_tokens = on_unavailable, int(max_tokens)
        self.stats = dict.fromkeys(COUNTERS, 0)
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        """The request URL without credentials, for result files."""
        return redact_url(self.url)

    def describe(self) -> dict:
        """What judged: model, endpoint and retry policy (no key), for result files."""
        return {"model": self.model, "endpoint": self.endpoint,
                "on_unavailable": self.on_unavailable, "max_retries": self.max_retries,
                "timeout_s": self.timeout_s}

    def count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.stats[key] += n

    def cache_key(self, messages: list[dict]) -> str:
        """sha256 of the model and the messages: what a cached verdict answers."""
        return hashlib.sha256(json.dumps([self.model, messages]).encode()).hexdigest()

    def complete(self, messages: list[dict]) -> str:
        """The reply text (``choices[0].message.content``; "" when the body has none).

        Raises:
            JudgeDownError: the endpoint failed after every retry.
            JudgeUnavailableError: it refused the request (a 4xx other than 429) or redirected
                it. Each message names the URL.
        """
        # Imported here: urllib.request pulls in http, email and ssl (~30 ms), and importing the
        # rewards package must stay cheap for the lexical rewards.
        import http.client
        import urllib.error
        import urllib.request

        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0,
                           "max_tokens": self.max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        opener = urllib.request.build_opener(_no_redirects())
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            self.count("requests")
            req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with opener.open(req, timeout=self.timeout_s) as resp:
                    raw = resp.read()
            except urllib.error.HTTPError as e:
                if e.code != 429 and e.code < 500:
                    raise JudgeUnavailableError(
                        f"judge endpoint {self.endpoint} refused the request: HTTP {e.code} "
                        f"{e.read()[:200]!r}") from e
                last = e
                continue
            except (OSError, ValueError, http.client.HTTPException) as e:  # timeouts, resets
                last = e
                continue
            return _reply_content(raw)
        raise JudgeDownError(
            f"judge endpoint {self.endpoint} unavailable after {self.max_retries + 1} attempts "
            f"(timeout {self.timeout_s}s): {last!r}")

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        """``[fn(item) for item in items]`` with up to ``concurrency`` requests in flight."""
        items = list(items)
        if self.concurrency == 1 or len(items) < 2:
            return [fn(x) for x in items]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(fn, items))


def _redirect_refusal(req, code: int, newurl: str) -> JudgeUnavailableError:
    return JudgeUnavailableError(
        f"judge endpoint {redact_url(req.full_url)} answered HTTP {code}, a redirect to "
        f"{redact_url(newurl)}: not followed (it would re-send the request and its "
        "Authorization header there); set base_url to the final address")


def _no_redirects():
    """An urllib handler that turns any redirect into :class:`JudgeUnavailableError`."""
    import urllib.request

    class RefuseRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            raise _redirect_refusal(req, code, newurl)

    return RefuseRedirect()


def _reply_content(raw: bytes) -> str:
    """``choices[0].message.content`` of a chat-completions response; "" if absent."""
    try:
        content = json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return ""
    return content if isinstance(content, str) else ""
