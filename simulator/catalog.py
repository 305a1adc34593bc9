"""The base models the simulator knows: aliases, snapshots, what each can do."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BaseModelInfo:
    id: str
    created: int
    encoding: str
    # Chat Completions serves it (babbage-002 and davinci-002 are completions-only).
    chat: bool
    fine_tunable: bool
    # Longer training examples are truncated to this many tokens, not refused.
    example_token_limit: int
    owned_by: str = "system"


_O200K = "o200k_base"
_CL100K = "cl100k_base"

BASE_MODELS: dict[str, BaseModelInfo] = {
    info.id: info
    for info in (
        BaseModelInfo("gpt-4o-mini-2024-07-18", 1721172717, _O200K, True, True, 65_536),
        BaseModelInfo("gpt-4o-2024-08-06", 1722814719, _O200K, True, True, 65_536),
        BaseModelInfo("gpt-4o-2024-05-13", 1715368132, _O200K, True, False, 65_536),
        BaseModelInfo("gpt-4o-2024-11-20", 1739331543, _O200K, True, False, 65_536),
        # The gpt-4.1 family's per-example limit is unconfirmed; the gpt-4o one is used.
        BaseModelInfo("gpt-4.1-2025-04-14", 1744316542, _O200K, True, True, 65_536),
        BaseModelInfo("gpt-4.1-mini-2025-04-14", 1744317547, _O200K, True, True, 65_536),
        BaseModelInfo("gpt-4.1-nano-2025-04-14", 1744321025, _O200K, True, True, 65_536),
        BaseModelInfo("gpt-3.5-turbo-0125", 1706048358, _CL100K, True, True, 16_385),
        BaseModelInfo("gpt-3.5-turbo-1106", 1698959748, _CL100K, True, True, 16_385),
        BaseModelInfo("gpt-3.5-turbo-0613", 1686587434, _CL100K, True, True, 4_096),
        BaseModelInfo("babbage-002", 1692634615, _CL100K, False, True, 16_384),
        BaseModelInfo("davinci-002", 1692634301, _CL100K, False, True, 16_384),
    )
}

# What a bare family name points at, as OpenAI resolves it today.
ALIASES: dict[str, str] = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "gpt-3.5-turbo": "gpt-3.5-turbo-0125",
}

# Prompt/completion lines are the training format of the two completions models.
COMPLETIONS_MODELS = frozenset({"babbage-002", "davinci-002"})


def resolve(name: str) -> BaseModelInfo | None:
    """The snapshot behind a model name or alias, or None when there is none."""
    return BASE_MODELS.get(ALIASES.get(name, name))


def listed_ids() -> list[str]:
    """Model ids `/v1/models` lists: every alias and every snapshot."""
    return sorted({*ALIASES, *BASE_MODELS})


def alias_created(alias: str) -> int:
    return BASE_MODELS[ALIASES[alias]].created
