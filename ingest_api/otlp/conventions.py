"""The attributes Bagula understands on OpenTelemetry spans: the OpenTelemetry GenAI semantic
conventions (``gen_ai.*``), OpenInference's (``openinference.span.kind``, ``llm.*``, ``tool.*``,
``session.id``) and OpenLLMetry's flattened prompts. docs/otlp.md has the tables; this module
is where they live in code, for the ingest checks (types) and the mapping to sessions."""

from __future__ import annotations

# ---------------------------------------------------------------- what a span is

OPERATION = "gen_ai.operation.name"
OPENINFERENCE_KIND = "openinference.span.kind"
TRACELOOP_KIND = "traceloop.span.kind"
LLM_REQUEST_TYPE = "llm.request.type"  # OpenLLMetry

# gen_ai.operation.name values of a call to a model
LLM_OPERATIONS = frozenset(
    {"chat", "text_completion", "generate_content", "embeddings", "completion", "create_response", "responses"}
)
TOOL_OPERATIONS = frozenset({"execute_tool"})
AGENT_OPERATIONS = frozenset({"invoke_agent", "create_agent"})
# openinference.span.kind values
OI_LLM_KINDS = frozenset({"LLM", "EMBEDDING"})
# A retriever looks something up for the agent: a tool call, named after its span.
OI_TOOL_KINDS = frozenset({"TOOL", "RETRIEVER"})
OI_AGENT_KINDS = frozenset({"AGENT"})

LLM, TOOL, AGENT, OTHER = "llm", "tool", "agent", "other"

# ---------------------------------------------------------------- sessions

CONVERSATION_ID = "gen_ai.conversation.id"
SESSION_ID = "session.id"  # OpenInference, and the general OpenTelemetry attribute
# The first of these a trace carries names its session (docs/otlp.md, "Sessions").
SESSION_KEYS = (CONVERSATION_ID, SESSION_ID)
USER_IDS = ("user.id", "enduser.id")
AGENT_NAMES = ("gen_ai.agent.name", "agent.name")
SERVICE_NAME = "service.name"
OI_METADATA = "metadata"
OI_TAGS = "tag.tags"

# ---------------------------------------------------------------- LLM calls

PROVIDERS = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
RESPONSE_MODEL = "gen_ai.response.model"
REQUEST_MODEL = "gen_ai.request.model"
OI_MODEL = "llm.model_name"
INPUT_TOKENS = ("gen_ai.usage.input_tokens", "llm.token_count.prompt", "gen_ai.usage.prompt_tokens")
OUTPUT_TOKENS = ("gen_ai.usage.output_tokens", "llm.token_count.completion", "gen_ai.usage.completion_tokens")
TOTAL_TOKENS = ("llm.token_count.total", "llm.usage.total_tokens", "gen_ai.usage.total_tokens")
CACHE_READ_TOKENS = (
    "gen_ai.usage.cache_read.input_tokens",
    "llm.token_count.prompt_details.cache_read",
    "gen_ai.usage.cache_read_input_tokens",
)
CACHE_WRITE_TOKENS = (
    "gen_ai.usage.cache_creation.input_tokens",
    "llm.token_count.prompt_details.cache_write",
    "gen_ai.usage.cache_creation_input_tokens",
)
REASONING_TOKENS = ("gen_ai.usage.reasoning.output_tokens", "llm.token_count.completion_details.reasoning")
# A cost the instrumentation computed itself: it is the client's cost.
COSTS = ("gen_ai.usage.cost", "llm.cost.total")
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
FINISH_REASONS = ("gen_ai.response.finish_reasons", "llm.finish_reason")
OI_INPUT_MESSAGES = "llm.input_messages."
OI_OUTPUT_MESSAGES = "llm.output_messages."
OPENLLMETRY_PROMPT = "gen_ai.prompt."
OPENLLMETRY_COMPLETION = "gen_ai.completion."
INPUT_VALUE = "input.value"
OUTPUT_VALUE = "output.value"
# Span events of the older GenAI conventions, one per message.
MESSAGE_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
    "gen_ai.choice": "assistant",
}

# ---------------------------------------------------------------- tool calls

TOOL_NAMES = ("gen_ai.tool.name", "tool.name")
TOOL_CALL_IDS = ("gen_ai.tool.call.id", "tool_call.id", "tool.id")
TOOL_ARGUMENTS = ("gen_ai.tool.call.arguments", "tool.parameters")
TOOL_RESULTS = ("gen_ai.tool.call.result",)
ERROR_TYPE = "error.type"

# ---------------------------------------------------------------- types checked at ingest

INT4_MAX = 2_147_483_647

# Attribute -> the AnyValue kind it must have. A span whose attribute has another kind is
# rejected (partial success), naming the attribute: its numbers would otherwise be guessed.
COUNTS = frozenset(
    INPUT_TOKENS + OUTPUT_TOKENS + TOTAL_TOKENS + CACHE_READ_TOKENS + CACHE_WRITE_TOKENS + REASONING_TOKENS
)
NUMBERS = frozenset(COSTS)
STRINGS = frozenset(
    (
        OPERATION,
        OPENINFERENCE_KIND,
        *SESSION_KEYS,
        *USER_IDS,
        *AGENT_NAMES,
        *PROVIDERS,
        RESPONSE_MODEL,
        REQUEST_MODEL,
        OI_MODEL,
        *TOOL_NAMES,
        *TOOL_CALL_IDS,
    )
)
