"""What an LLM call cost when the client did not say: the genai-prices table (Pydantic's
maintained price data, shipped inside the package; nothing is fetched at run time).

``estimate`` looks the (provider, model) up the way genai-prices matches them (the provider's
id or aliases, then the model's match rules: ``gpt-4o-2024-08-06`` is ``gpt-4o``), with the
price in force when the call started, and prices the tokens: input tokens (which include
cached ones), cache reads and writes at their own rates where the table has them, output
tokens. A model the table does not know has no estimate (None): the marts call its cost
``unknown``, never 0.

genai-prices' own ``calc_price`` takes about 0.4 ms a call; ingest cannot spend that per call.
So prices whose cost is linear in the token counts (a rate per input, cache-read, cache-write
and output token: almost every model) are resolved once per price and computed here in
``Decimal``; anything else (tiered prices, other units) goes through ``calc_price``. A test
holds the two to the same results.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from functools import lru_cache
from importlib.metadata import version

PRICE_TABLE = "genai-prices"
VERSION = f"{PRICE_TABLE} {version('genai-prices')}"
MILLION = Decimal(1_000_000)

# OpenTelemetry's gen_ai.provider.name / gen_ai.system values -> genai-prices provider ids,
# where genai-prices' own matching does not find them.
PROVIDER_ALIASES = {
    "aws.bedrock": "aws",
    "az.ai.openai": "azure",
    "azure.ai.openai": "azure",
    "az.ai.inference": "azure",
    "azure.ai.inference": "azure",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "vertexai": "google",
    "gemini": "google",
    "mistral_ai": "mistral",
    "mistralai": "mistral",
    "x_ai": "x-ai",
    "xai": "x-ai",
}
TOKEN_KEYS = frozenset({"input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok"})
# Charged whatever the tokens: not linear in them.
PER_REQUEST_KEYS = frozenset({"requests_kcount"})


@dataclass(frozen=True)
class Rates:
    """USD per token, for a price that is linear in the token counts."""

    input: Decimal
    cache_read: Decimal
    cache_write: Decimal
    output: Decimal


@dataclass(frozen=True)
class Estimate:
    cost_usd: Decimal
    source: str = VERSION


_loading = threading.Lock()


def _snapshot():
    from genai_prices.data_snapshot import get_snapshot

    return get_snapshot()


def load() -> None:
    """Import the price data (about a second): at start-up, so no request waits for it."""
    with _loading:
        _snapshot()


@lru_cache(maxsize=4096)
def _model(provider: str, model: str):
    """genai-prices' model for (provider, model), or None."""
    snapshot = _snapshot()
    provider_id = PROVIDER_ALIASES.get(provider.lower(), provider)
    try:
        known = snapshot.find_provider(None, provider_id, None)
    except LookupError:
        known = None
    try:
        # A provider the table knows is searched alone (its own and its declared fallbacks'
        # models); an unknown one (a gateway, a self-given name) lets the model name decide.
        return snapshot.find_provider_model(model, known, None, None)
    except LookupError:
        return None


_rates: dict[int, tuple[object, Rates | None]] = {}


def _linear(model_price) -> Rates | None:
    """The per-token rates of a price whose cost is linear in the four token counts, else None.
    Rates for units the API never reports (web searches, audio or image tokens, characters)
    price a count of 0 in genai-prices too: they are left out."""
    cached = _rates.get(id(model_price))
    if cached is not None and cached[0] is model_price:
        return cached[1]
    values = {k: v for k, v in vars(model_price).items() if v is not None and not k.startswith("_")}
    rates = None
    if not values.keys() & PER_REQUEST_KEYS and all(isinstance(v, Decimal) for v in values.values()):
        per_input = values.get("input_mtok", Decimal(0)) / MILLION
        rates = Rates(
            input=per_input,
            cache_read=values["cache_read_mtok"] / MILLION if "cache_read_mtok" in values else per_input,
            cache_write=values["cache_write_mtok"] / MILLION if "cache_write_mtok" in values else per_input,
            output=values.get("output_mtok", Decimal(0)) / MILLION,
        )
    _rates[id(model_price)] = (model_price, rates)
    return rates


def estimate(
    provider: str,
    model: str,
    tokens_input: int | None,
    tokens_output: int | None,
    cache_read: int | None = None,
    cache_write: int | None = None,
    at: datetime | None = None,
) -> Estimate | None:
    """The call's cost from the price table, or None (model unknown, or no token counts)."""
    if tokens_input is None and tokens_output is None:
        return None
    found = _model(provider, model)
    if found is None:
        return None
    provider_info, model_info = found
    tokens_in, tokens_out = tokens_input or 0, tokens_output or 0
    reads, writes = cache_read or 0, cache_write or 0
    if reads + writes > tokens_in:
        return None  # counts that contradict each other price nothing
    at = at or datetime.now(timezone.utc)
    model_price = model_info.get_prices(at)
    rates = _linear(model_price)
    if rates is not None:
        cost = (
            (tokens_in - reads - writes) * rates.input
            + reads * rates.cache_read
            + writes * rates.cache_write
            + tokens_out * rates.output
        )
        return Estimate(cost)
    from genai_prices import Usage

    usage = Usage(
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        cache_read_tokens=reads or None,
        cache_write_tokens=writes or None,
    )
    try:
        return Estimate(model_info.calc_price(usage, provider_info, genai_request_timestamp=at).total_price)
    except (ValueError, KeyError):
        return None


def reference_price(
    provider: str,
    model: str,
    tokens_input: int,
    tokens_output: int,
    cache_read: int = 0,
    cache_write: int = 0,
    at: datetime | None = None,
) -> Decimal | None:
    """genai-prices' own calc_price (slow), for checking ``estimate`` and for the CLI."""
    from genai_prices import Usage

    found = _model(provider, model)
    if found is None:
        return None
    provider_info, model_info = found
    usage = Usage(
        input_tokens=tokens_input,
        output_tokens=tokens_output,
        cache_read_tokens=cache_read or None,
        cache_write_tokens=cache_write or None,
    )
    return model_info.calc_price(
        usage, provider_info, genai_request_timestamp=at or datetime.now(timezone.utc)
    ).total_price


def describe(provider: str, model: str) -> str | None:
    """Which price-table model (provider/id) a name matches, or None."""
    found = _model(provider, model)
    return None if found is None else f"{found[0].id}/{found[1].id}"
