"""The one module that calls LLMs: `litellm.acompletion` with our own retry policy.

Why our own retries (litellm's ``num_retries`` and the OpenAI SDK's ``max_retries`` are set to
0): we record how many attempts each call took, honour ``Retry-After`` exactly, use full-jitter
exponential backoff, and tell the simulated LLM which attempt it is answering.

Retried (up to `retries` times): rate limits (429; wait = Retry-After when the server sends one,
else backoff), timeouts, 5xx / overloaded / bad gateway, connection errors and unparseable
responses. Not retried: authentication and permission errors (the run stops: every further call
would fail the same way) and bad requests (recorded as an error row).

Keys come only from the environment (litellm's usual variables, or `api_key=` from the caller's
own environment lookup). Every error text leaving this module passes through `redact`, which
removes the values of key-like environment variables and anything shaped like a bearer token,
because providers (or a hostile server) may echo the key back in an error body.

Per-call CPU (issue 4, Performance). litellm spends ~2 ms of CPU per call on its normal path;
for the in-process simulated LLM (``simulated/…``), and only there, this module cuts that
without leaving litellm's call path and without touching litellm globals:

* the simulated provider stamps the response's cost itself (0, or its `price_per_token`), so
  litellm's cost calculator uses it instead of searching its price map (calls with per-call
  prices, ``input_cost_per_token``/``output_cost_per_token``, are still priced by litellm);
* simulated calls run inside litellm's ``internal_sub_call`` context, which skips its success
  and failure logging (payload building, callbacks, cost diagnostics): we are the caller
  that records and bills these calls, in our own store. A private litellm helper, so when it
  is missing (another litellm version) the calls simply log as usual;
* `run` (used by the synchronous `collect`) gives the event loop it owns an
  `InlinePreludeExecutor`: litellm hands the synchronous half of every ``acompletion`` to the
  loop's default executor; for simulated calls that half only builds the request and the
  provider's coroutine, so it runs inline instead of hopping to a worker thread and back
  (thread wake-ups and GIL hand-offs). Everything else submitted to that executor (DNS
  look-ups, real providers' calls, other libraries) still goes to its threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import os
import random
import re
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL)", re.IGNORECASE)
_SECRET_SHAPES = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|Bearer\s+[A-Za-z0-9_\-\.=]{8,}|AIza[0-9A-Za-z_\-]{20,}"
    r"|xai-[A-Za-z0-9]{16,}|gsk_[A-Za-z0-9]{16,})"
)
REDACTED = "[REDACTED]"


def secret_values(extra: tuple[str, ...] = ()) -> list[str]:
    """Values of key-like environment variables (long enough to be secrets), longest first."""
    values = [v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 8]
    values += [v for v in extra if v and len(v) >= 8]
    return sorted(set(values), key=len, reverse=True)


def redact(text: object, extra: tuple[str, ...] = ()) -> str:
    """`text` with every secret value and token-shaped string replaced by ``[REDACTED]``."""
    out = str(text)
    for value in secret_values(extra):
        out = out.replace(value, REDACTED)
    return _SECRET_SHAPES.sub(REDACTED, out)


def redact_known(text: str | None, secrets: list[str]) -> str | None:
    """Fast `redact` for per-call use: `secrets` from `secret_values()` computed once."""
    if not text:
        return text
    for value in secrets:
        if value in text:
            text = text.replace(value, REDACTED)
    if any(prefix in text for prefix in _SECRET_PREFIXES):
        return _SECRET_SHAPES.sub(REDACTED, text)
    return text


_SECRET_PREFIXES = ("sk-", "Bearer", "AIza", "xai-", "gsk_")
# Option names whose values are credentials (extra litellm params, headers).
# "token" is a credential (access_token, x-auth-token) except as a unit: max_tokens,
# input_cost_per_token are limits and prices, kept.
_SECRET_OPTION = re.compile(
    r"(KEY|SECRET|PASSWORD|CREDENTIAL|AUTH|(?<!PER_)TOKEN(?!S))", re.IGNORECASE
)


def redact_options(options: object, extra: tuple[str, ...] = ()) -> object:
    """A JSON-able copy of run options with credential-named entries and secret values
    replaced by ``[REDACTED]`` (for the run store's config column)."""
    if isinstance(options, dict):
        return {
            k: REDACTED if _SECRET_OPTION.search(str(k)) else redact_options(v, extra)
            for k, v in options.items()
        }
    if isinstance(options, list | tuple):
        return [redact_options(v, extra) for v in options]
    if isinstance(options, str):
        return redact(options, extra)
    return options


SIMULATED_PREFIX = "simulated/"
# True while this task is inside a simulated call: `InlinePreludeExecutor` reads it at submit.
_INLINE_PRELUDE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "detailed_balance_inline_prelude", default=False
)


class InlinePreludeExecutor(concurrent.futures.ThreadPoolExecutor):
    """A thread pool that runs work submitted from inside a simulated call inline.

    litellm's ``acompletion`` runs its synchronous half with ``loop.run_in_executor(None, …)``;
    for the simulated provider that half does no I/O (it returns the provider's coroutine),
    so a round trip through a worker thread costs more than the work. Submissions from any
    other context go to the pool's threads as usual.
    """

    def submit(self, fn, /, *args, **kwargs):  # noqa: D102 - Executor.submit
        if not _INLINE_PRELUDE.get():
            return super().submit(fn, *args, **kwargs)
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting caller
            future.set_exception(exc)
        return future


def run[T](coroutine: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(coroutine)` on a new loop whose default executor is `InlinePreludeExecutor`.

    Only a loop we create gets it (a caller's own loop keeps its executor).
    """

    async def main() -> T:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(InlinePreludeExecutor(thread_name_prefix="detailed-balance"))
        return await coroutine

    return asyncio.run(main())


def _simulated_call_context(model: str) -> contextlib.AbstractContextManager:
    """litellm's "internal sub-call" context for simulated models (no litellm logging), else none."""
    if not model.startswith(SIMULATED_PREFIX):
        return contextlib.nullcontext()
    try:
        from litellm._internal_context import internal_sub_call
    except ImportError:  # pragma: no cover - other litellm versions: log as usual
        return contextlib.nullcontext()
    return internal_sub_call()


class AuthenticationFailed(Exception):
    """The provider refused the credentials; the message is already redacted."""


@dataclass
class CallOutcome:
    """What one logical call produced (after retries)."""

    text: str | None
    tokens_in: int
    tokens_out: int
    cost: float
    latency: float
    attempts: int
    error: str | None = None


@dataclass
class RetryPolicy:
    """Backoff: wait U(0, min(cap, base · 2^attempt)) ("full jitter"), or Retry-After if sent."""

    retries: int = 6
    base: float = 0.5
    cap: float = 30.0
    max_retry_after: float = 120.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        return rng.uniform(0.0, min(self.cap, self.base * 2.0**attempt))


class RateLimiter:
    """At most `rpm` call starts per minute, evenly spaced (None = unlimited)."""

    def __init__(self, rpm: float | None) -> None:
        self.interval = 60.0 / rpm if rpm else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


def _retry_after(exc: Exception) -> float | None:
    """Seconds from a Retry-After header on the exception (explicit headers or the response)."""
    sources = [getattr(exc, "headers", None), getattr(exc, "litellm_response_headers", None)]
    response = getattr(exc, "response", None)
    if response is not None:
        sources.append(getattr(response, "headers", None))
    for headers in sources:
        if not headers:
            continue
        try:
            value = headers.get("retry-after") or headers.get("Retry-After")
        except AttributeError:
            continue
        if value is None:
            continue
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    return None


def classify(exc: BaseException) -> str:
    """``auth`` (stop the run), ``retry`` (transient) or ``fatal`` (record and move on)."""
    import litellm

    if isinstance(exc, litellm.AuthenticationError | litellm.PermissionDeniedError):
        return "auth"
    transient = (
        litellm.RateLimitError,
        litellm.Timeout,
        litellm.InternalServerError,
        litellm.ServiceUnavailableError,
        litellm.BadGatewayError,
        litellm.APIConnectionError,
        litellm.APIError,
        asyncio.TimeoutError,
    )
    if isinstance(exc, transient):
        return "retry"
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and (status == 429 or status >= 500):
        return "retry"
    return "fatal"


_SETUP_DONE = False


def _quiet_litellm() -> None:
    """No litellm banners on stdout ("Give Feedback …"): our own progress line is the output."""
    global _SETUP_DONE
    if _SETUP_DONE:
        return
    import litellm

    litellm.suppress_debug_info = True
    _SETUP_DONE = True


async def complete(
    model: str,
    messages: list[dict],
    *,
    call: int,
    policy: RetryPolicy,
    rng: random.Random,
    timeout: float = 60.0,
    api_base: str | None = None,
    api_key: str | None = None,
    limiter: RateLimiter | None = None,
    extra: dict | None = None,
    first_attempt: int = 0,
) -> CallOutcome:
    """One logical LLM call with retries; transport failures end as `CallOutcome.error`.

    Raises `AuthenticationFailed` (redacted) when the provider rejects the credentials.
    `first_attempt` continues the attempt count of a call that failed in an earlier session
    (the count in the outcome includes them).
    """
    import litellm

    _quiet_litellm()
    secrets = (api_key,) if api_key else ()
    simulated = model.startswith(SIMULATED_PREFIX)
    start = time.perf_counter()
    last_error = None
    for attempt in range(first_attempt, first_attempt + policy.retries + 1):
        if limiter is not None:
            await limiter.wait()
        kwargs = dict(extra or {})
        if api_base:
            kwargs["api_base"] = api_base
        if api_key:
            kwargs["api_key"] = api_key
        token = _INLINE_PRELUDE.set(simulated)
        try:
            with _simulated_call_context(model):
                response = await litellm.acompletion(
                    model=model,
                    messages=messages,
                    timeout=timeout,
                    num_retries=0,
                    max_retries=0,
                    metadata={"call": call, "attempt": attempt},
                    **kwargs,
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every provider failure is classified below
            kind = classify(exc)
            message = redact(f"{type(exc).__name__}: {exc}", secrets)[:500]
            if kind == "auth":
                raise AuthenticationFailed(
                    f"authentication failed for model {model!r}: {message}. Check the provider's "
                    f"key variable in the environment (e.g. OPENAI_API_KEY, ANTHROPIC_API_KEY)."
                ) from None
            last_error = message
            if kind == "fatal" or attempt == first_attempt + policy.retries:
                break
            await asyncio.sleep(policy.delay(attempt - first_attempt, _retry_after(exc), rng))
            continue
        finally:
            _INLINE_PRELUDE.reset(token)
        return _outcome(response, start, attempt + 1)
    return CallOutcome(None, 0, 0, 0.0, time.perf_counter() - start, attempt + 1, last_error)


def _outcome(response, start: float, attempts: int) -> CallOutcome:
    choices = getattr(response, "choices", None) or []
    message = getattr(choices[0], "message", None) if choices else None
    text = getattr(message, "content", None) if message is not None else None
    usage = getattr(response, "usage", None)
    hidden = getattr(response, "_hidden_params", None) or {}
    cost = hidden.get("response_cost")
    return CallOutcome(
        text=text if text is None else str(text),
        tokens_in=int(getattr(usage, "prompt_tokens", 0) or 0),
        tokens_out=int(getattr(usage, "completion_tokens", 0) or 0),
        cost=float(cost) if cost else 0.0,
        latency=time.perf_counter() - start,
        attempts=attempts,
    )
