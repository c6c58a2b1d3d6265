"""The litellm side of the simulated LLM: the ``simulated`` provider (a `CustomLLM`) that
turns a `SimulatedLLM`'s answer for (seed, call) into a litellm response — injected faults
become litellm's exceptions (with Retry-After), latency an `asyncio.sleep`, the answer a
message with token usage and, unless per-call prices are given, the provider's own cost.

Which simulator answers is looked up by the caller's `active_simulator(model)` (passed in by
`simulated.ensure_registered`, so this module does not import the simulator).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

PROVIDER = "simulated"


def _provider(active_simulator: Callable[[str], Any]):
    """The litellm CustomLLM that dispatches to the active `SimulatedLLM` (built lazily)."""
    import litellm
    from litellm import CustomLLM

    class SimulatedProvider(CustomLLM):
        def completion(self, *args, **kwargs):  # noqa: D401 - litellm's signature
            raise litellm.BadRequestError(
                "the simulated LLM answers async calls only (litellm.acompletion)",
                model=kwargs.get("model", PROVIDER),
                llm_provider=PROVIDER,
            )

        async def acompletion(self, model, messages, api_base, custom_prompt_dict, model_response,
                              print_verbose, encoding, api_key, logging_obj, optional_params,
                              acompletion=None, litellm_params=None, logger_fn=None, headers=None,
                              timeout=None, client=None):  # fmt: skip
            sim = active_simulator(model)
            meta = (litellm_params or {}).get("metadata") or {}
            call = int(meta["call"]) if "call" in meta else next(sim._counter)
            attempt = int(meta.get("attempt", 0))
            delay = sim.latency(call, attempt)
            fault = sim.fault(call, attempt)
            if fault == "timeout":
                raise litellm.Timeout("simulated timeout", model=model, llm_provider=PROVIDER)
            if delay:
                await asyncio.sleep(delay)
            if fault == "rate_limit":
                raise litellm.RateLimitError(
                    "simulated rate limit",
                    llm_provider=PROVIDER,
                    model=model,
                    headers={"retry-after": f"{sim.faults.retry_after}"},
                )
            if fault == "server_error":
                raise litellm.InternalServerError(
                    "simulated server error", llm_provider=PROVIDER, model=model
                )
            text = sim.answer(messages, call)
            prompt_chars = sum(len(str(m.get("content") or "")) for m in messages)
            tokens_in, tokens_out = prompt_chars // 4 + 1, len(text) // 4 + 1
            model_response.choices[0].message.content = text
            model_response.model = model
            model_response.usage = litellm.Usage(
                prompt_tokens=tokens_in,
                completion_tokens=tokens_out,
                total_tokens=tokens_in + tokens_out,
            )
            params = litellm_params or {}
            priced_per_call = any(
                params.get(key) is not None
                for key in ("input_cost_per_token", "output_cost_per_token")
            )
            if sim.report_cost and not priced_per_call:
                # The provider knows its price: litellm then uses this cost instead of
                # searching its price map (a large share of its per-call work). Calls that
                # pass their own per-token prices are still priced by litellm.
                cost = sim.price_per_token * (tokens_in + tokens_out)
                model_response._hidden_params["response_cost"] = cost
            return model_response

    return SimulatedProvider()
