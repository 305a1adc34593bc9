"""One example: recognise its shape, convert it to chat form, and validate it.

Accepted shapes of one JSON object (a JSONL line, a JSON array element or an
element of a posted `examples` list):

- chat: `{"messages": [...], "tools"?, "parallel_tool_calls"?, "functions"?}`
- preference (DPO): `{"input": {"messages": [...], "tools"?, "parallel_tool_calls"?},
  "preferred_output": [assistant], "non_preferred_output": [assistant]}`; the
  older spec names `preferred_completion` / `non_preferred_completion` are
  accepted and written out under the `_output` names.
- legacy completion: `{"prompt", "completion"}` becomes system prompt (when
  configured) + user=prompt + assistant=completion, both verbatim.
- question/answer row: an object with the configured user and assistant keys
  (default `user`, `assistant`, optional system key); other keys are ignored,
  as extra table columns are.

Checks follow the cookbook's data check, extended to the rest of the training
line schema (tool calls, weights, content parts, preference outputs).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from service.domain.datasets import issues as codes
from service.domain.datasets.issues import Issue

ExampleKind = Literal["chat", "preference"]

CHAT_KEYS = frozenset({"messages", "tools", "parallel_tool_calls", "functions"})
PREFERENCE_KEYS = frozenset(
    {
        "input",
        "preferred_output",
        "non_preferred_output",
        "preferred_completion",
        "non_preferred_completion",
    }
)
PREFERENCE_INPUT_KEYS = frozenset({"messages", "tools", "parallel_tool_calls"})
LEGACY_KEYS = frozenset({"prompt", "completion"})
MESSAGE_KEYS = frozenset(
    {"role", "content", "name", "function_call", "tool_calls", "tool_call_id", "weight", "refusal"}
)
# `developer` is left out on purpose: the supervised and preference line
# schemas do not list it (only reinforcement does), so accepting it here
# would move the failure to the provider, after the job was paid for.
ROLES = frozenset({"system", "user", "assistant", "tool", "function"})
PART_TYPES_BY_ROLE: Mapping[str, frozenset[str]] = {
    "system": frozenset({"text"}),
    "user": frozenset({"text", "image_url"}),
    "assistant": frozenset({"text", "refusal"}),
    "tool": frozenset({"text"}),
    "function": frozenset({"text"}),
}


@dataclass(frozen=True, slots=True)
class ConversionSettings:
    """How non-chat shapes become chat. Small and picklable: it travels to pool workers."""

    system_prompt: str | None = None
    user_column: str = "user"
    assistant_column: str = "assistant"
    system_column: str | None = None


@dataclass(slots=True)
class PreparedExample:
    """A valid example in normalized form, with what counting needs."""

    kind: ExampleKind
    document: dict[str, Any]
    # Every message the token rule counts, in order; for preference examples
    # the input followed by the preferred and the non-preferred output.
    messages: list[dict[str, Any]]
    extras: list[object] = field(default_factory=list)
    has_system: bool = False
    has_user: bool = False


class _Findings:
    """Issues of one example, all on the same line."""

    __slots__ = ("issues", "line")

    def __init__(self, line: int) -> None:
        self.line = line
        self.issues: list[Issue] = []

    def add(self, path: str | None, code: str, message: str) -> None:
        self.issues.append(Issue(self.line, path, code, message))


def _is_blank(text: str) -> bool:
    return not text.strip()


def qa_example(
    user: str, assistant: str, system: str | None, settings: ConversionSettings
) -> dict[str, Any]:
    """The chat example for one question/answer pair (tables, legacy, row objects)."""
    messages: list[dict[str, Any]] = []
    system_text = system if system is not None and not _is_blank(system) else settings.system_prompt
    if system_text is not None and not _is_blank(system_text):
        messages.append({"role": "system", "content": system_text})
    messages.append({"role": "user", "content": user})
    messages.append({"role": "assistant", "content": assistant})
    return {"messages": messages}


def prepare_example(
    value: object, line: int, settings: ConversionSettings
) -> tuple[PreparedExample | None, list[Issue]]:
    """Recognise, convert and validate one example. Returns the example or its errors."""
    found = _Findings(line)
    if not isinstance(value, dict):
        found.add(
            None, codes.DATA_TYPE, f"Line {line} is a JSON {_json_type(value)}, not an object."
        )
        return None, found.issues
    if "messages" in value:
        return _prepare_chat(value, found), found.issues
    if PREFERENCE_KEYS.intersection(value):
        return _prepare_preference(value, found), found.issues
    if LEGACY_KEYS.intersection(value):
        return _prepare_legacy(value, found, settings), found.issues
    if settings.user_column in value or settings.assistant_column in value:
        return _prepare_row_object(value, found, settings), found.issues
    found.add(
        "messages",
        codes.MISSING_MESSAGES_LIST,
        'The example has no "messages" list (and is not a prompt/completion, '
        f"{settings.user_column}/{settings.assistant_column} or preference example).",
    )
    return None, found.issues


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    return "object"


def _prepare_chat(value: dict[str, Any], found: _Findings) -> PreparedExample | None:
    for key in value:
        if key not in CHAT_KEYS:
            found.add(
                key,
                codes.UNRECOGNIZED_KEY,
                f'Unrecognized key "{key}"; a chat example may only have '
                "messages, tools, parallel_tool_calls and functions.",
            )
    messages = value.get("messages")
    if not isinstance(messages, list) or not messages:
        found.add("messages", codes.MISSING_MESSAGES_LIST, '"messages" must be a non-empty list.')
        return None
    _check_conversation_extras(value, "", found)
    for index, message in enumerate(messages):
        _check_message(message, f"messages[{index}]", found, allow_weight=True)
    if found.issues:
        return None
    if not any(message["role"] == "assistant" for message in messages):
        found.add(
            "messages",
            codes.EXAMPLE_MISSING_ASSISTANT_MESSAGE,
            "The example has no assistant message to learn from.",
        )
        return None
    roles = {message["role"] for message in messages}
    return PreparedExample(
        kind="chat",
        document=value,
        messages=messages,
        extras=[value[key] for key in ("tools", "functions") if value.get(key) is not None],
        has_system="system" in roles,
        has_user="user" in roles,
    )


def _check_conversation_extras(value: Mapping[str, Any], prefix: str, found: _Findings) -> None:
    """tools, functions and parallel_tool_calls, where a conversation carries them."""
    tools = value.get("tools")
    if "tools" in value and not _valid_tool_list(tools):
        found.add(
            f"{prefix}tools",
            codes.INVALID_FIELD,
            '"tools" must be a list of {"type": "function", "function": {"name": ...}} objects.',
        )
    functions = value.get("functions")
    if "functions" in value and not (
        isinstance(functions, list)
        and functions
        and all(isinstance(f, dict) and isinstance(f.get("name"), str) for f in functions)
    ):
        found.add(
            f"{prefix}functions",
            codes.INVALID_FIELD,
            '"functions" must be a non-empty list of objects with a "name".',
        )
    if "parallel_tool_calls" in value and not isinstance(value["parallel_tool_calls"], bool):
        found.add(
            f"{prefix}parallel_tool_calls",
            codes.INVALID_FIELD,
            '"parallel_tool_calls" must be true or false.',
        )


def _valid_tool_list(tools: object) -> bool:
    if not isinstance(tools, list):
        return False
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            return False
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            return False
    return True


def _check_message(message: object, path: str, found: _Findings, *, allow_weight: bool) -> None:
    if not isinstance(message, dict):
        found.add(path, codes.DATA_TYPE, f"{path} is a JSON {_json_type(message)}, not an object.")
        return
    for key in message:
        if key not in MESSAGE_KEYS:
            found.add(
                f"{path}.{key}",
                codes.MESSAGE_UNRECOGNIZED_KEY,
                f'Unrecognized key "{key}" in a message; allowed are '
                "role, content, name, function_call, tool_calls, tool_call_id, weight, refusal.",
            )
    role = message.get("role")
    if "role" not in message:
        found.add(f"{path}.role", codes.MESSAGE_MISSING_KEY, 'The message has no "role".')
    elif not isinstance(role, str) or role not in ROLES:
        found.add(
            f"{path}.role",
            codes.UNRECOGNIZED_ROLE,
            f"Unrecognized role {json.dumps(role, ensure_ascii=False)}; "
            "use system, user, assistant, tool or function.",
        )
        role = None
    calls_tools = role == "assistant" and (
        message.get("tool_calls") is not None or message.get("function_call") is not None
    )
    _check_content(message, path, role, calls_tools, found)
    for key in ("name", "tool_call_id"):
        if key in message and not isinstance(message[key], str):
            found.add(f"{path}.{key}", codes.INVALID_FIELD, f'"{key}" must be a string.')
    if "refusal" in message and not (
        role == "assistant" and (message["refusal"] is None or isinstance(message["refusal"], str))
    ):
        found.add(
            f"{path}.refusal",
            codes.INVALID_FIELD,
            '"refusal" is only allowed on assistant messages, as a string.',
        )
    if role == "tool" and "tool_call_id" not in message:
        found.add(
            f"{path}.tool_call_id",
            codes.MESSAGE_MISSING_KEY,
            'A tool message needs the "tool_call_id" it answers.',
        )
    if role == "function" and "name" not in message:
        found.add(f"{path}.name", codes.MESSAGE_MISSING_KEY, 'A function message needs a "name".')
    if "weight" in message:
        _check_weight(message["weight"], path, role, allow_weight=allow_weight, found=found)
    if "tool_calls" in message:
        _check_tool_calls(message["tool_calls"], path, role, found)
    if "function_call" in message:
        _check_function_call(message["function_call"], f"{path}.function_call", role, found)


def _check_content(
    message: Mapping[str, Any], path: str, role: str | None, calls_tools: bool, found: _Findings
) -> None:
    content_path = f"{path}.content"
    issues_before = len(found.issues)
    if "content" not in message:
        if not calls_tools:
            found.add(content_path, codes.MESSAGE_MISSING_KEY, 'The message has no "content".')
        return
    content = message["content"]
    if content is None or (isinstance(content, str) and _is_blank(content)):
        if not calls_tools:
            found.add(content_path, codes.MISSING_CONTENT, "The message content is empty.")
        return
    if isinstance(content, str):
        return
    if not isinstance(content, list) or not content:
        found.add(
            content_path,
            codes.INVALID_CONTENT,
            "Content must be a string or a non-empty list of content parts.",
        )
        return
    allowed = PART_TYPES_BY_ROLE.get(role or "", frozenset({"text"}))
    has_text = False
    for index, part in enumerate(content):
        part_path = f"{content_path}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(part, dict) or not isinstance(kind, str) or kind not in allowed:
            found.add(
                part_path,
                codes.INVALID_CONTENT,
                f"A content part of a {role or 'message'} must be an object with type "
                + " or ".join(sorted(allowed))
                + ".",
            )
            continue
        if kind in ("text", "refusal"):
            text = part.get(kind)
            if not isinstance(text, str):
                found.add(
                    part_path, codes.INVALID_CONTENT, f'A {kind} part needs a string "{kind}".'
                )
            elif not _is_blank(text):
                has_text = True
        elif kind == "image_url":
            image = part.get("image_url")
            if not isinstance(image, dict) or not isinstance(image.get("url"), str):
                found.add(part_path, codes.INVALID_CONTENT, 'An image part needs "image_url.url".')
            else:
                has_text = True
    if not has_text and not calls_tools and len(found.issues) == issues_before:
        found.add(content_path, codes.MISSING_CONTENT, "The message content is empty.")


def _check_weight(
    weight: object, path: str, role: str | None, *, allow_weight: bool, found: _Findings
) -> None:
    if not allow_weight:
        found.add(
            f"{path}.weight",
            codes.INVALID_WEIGHT,
            '"weight" is only allowed in supervised chat examples.',
        )
    elif role != "assistant":
        found.add(
            f"{path}.weight",
            codes.INVALID_WEIGHT,
            '"weight" is only allowed on assistant messages.',
        )
    # bool is an int in Python; true/false are not the 0/1 the provider accepts.
    elif isinstance(weight, bool) or weight not in (0, 1) or not isinstance(weight, int):
        found.add(
            f"{path}.weight",
            codes.INVALID_WEIGHT,
            f"weight must be 0 or 1, not {json.dumps(weight, ensure_ascii=False)}.",
        )


def _check_arguments(arguments: object, path: str, found: _Findings) -> None:
    if not isinstance(arguments, str):
        found.add(
            path,
            codes.INVALID_TOOL_CALL_ARGUMENTS,
            "Function arguments must be a string containing JSON.",
        )
        return
    try:
        json.loads(arguments)
    except json.JSONDecodeError as exc:
        found.add(
            path,
            codes.INVALID_TOOL_CALL_ARGUMENTS,
            f"Function arguments are not valid JSON ({exc.msg} at column {exc.colno}).",
        )


def _check_tool_calls(tool_calls: object, path: str, role: str | None, found: _Findings) -> None:
    calls_path = f"{path}.tool_calls"
    if role != "assistant":
        found.add(calls_path, codes.INVALID_TOOL_CALL, "Only assistant messages can call tools.")
        return
    if not isinstance(tool_calls, list) or not tool_calls:
        found.add(calls_path, codes.INVALID_TOOL_CALL, '"tool_calls" must be a non-empty list.')
        return
    for index, call in enumerate(tool_calls):
        call_path = f"{calls_path}[{index}]"
        function = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(call, dict)
            or not isinstance(call.get("id"), str)
            or call.get("type") != "function"
            or not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
        ):
            found.add(
                call_path,
                codes.INVALID_TOOL_CALL,
                'A tool call needs "id", "type": "function" and "function" with "name".',
            )
            continue
        _check_arguments(function.get("arguments"), f"{call_path}.function.arguments", found)


def _check_function_call(call: object, path: str, role: str | None, found: _Findings) -> None:
    if role != "assistant" or not isinstance(call, dict) or not isinstance(call.get("name"), str):
        found.add(
            path,
            codes.INVALID_TOOL_CALL,
            '"function_call" must be an object with "name" and "arguments" '
            "on an assistant message.",
        )
        return
    _check_arguments(call.get("arguments"), f"{path}.arguments", found)


def _prepare_preference(value: dict[str, Any], found: _Findings) -> PreparedExample | None:
    for key in value:
        if key not in PREFERENCE_KEYS:
            found.add(
                key,
                codes.UNRECOGNIZED_KEY,
                f'Unrecognized key "{key}"; a preference example has input, '
                "preferred_output and non_preferred_output.",
            )
    source = value.get("input")
    messages: list[Any] = []
    if not isinstance(source, dict):
        found.add(
            "input", codes.MISSING_MESSAGES_LIST, '"input" must be an object with "messages".'
        )
    else:
        for key in source:
            if key not in PREFERENCE_INPUT_KEYS:
                found.add(
                    f"input.{key}",
                    codes.UNRECOGNIZED_KEY,
                    f'Unrecognized key "{key}" in input; allowed are '
                    "messages, tools and parallel_tool_calls.",
                )
        raw_messages = source.get("messages")
        if not isinstance(raw_messages, list) or not raw_messages:
            found.add(
                "input.messages",
                codes.MISSING_MESSAGES_LIST,
                '"input.messages" must be a non-empty list.',
            )
        else:
            messages = raw_messages
            for index, message in enumerate(messages):
                _check_message(message, f"input.messages[{index}]", found, allow_weight=False)
        _check_conversation_extras(source, "input.", found)
    outputs: dict[str, list[Any]] = {}
    for name, old_name in (
        ("preferred_output", "preferred_completion"),
        ("non_preferred_output", "non_preferred_completion"),
    ):
        key = name if name in value else old_name
        output = value.get(key)
        if not isinstance(output, list) or len(output) != 1:
            found.add(
                name,
                codes.INVALID_PREFERENCE_OUTPUT,
                f'"{name}" must be a list holding exactly one assistant message.',
            )
            continue
        path = f"{key}[0]"
        _check_message(output[0], path, found, allow_weight=False)
        if isinstance(output[0], dict) and output[0].get("role") != "assistant":
            found.add(
                f"{path}.role",
                codes.INVALID_PREFERENCE_OUTPUT,
                f"The {name.replace('_', ' ')} must be an assistant message.",
            )
        outputs[name] = output
    if found.issues or not isinstance(source, dict):
        return None
    document: dict[str, Any] = {
        "input": source,
        "preferred_output": outputs["preferred_output"],
        "non_preferred_output": outputs["non_preferred_output"],
    }
    roles = {message["role"] for message in messages}
    return PreparedExample(
        kind="preference",
        document=document,
        messages=[*messages, *outputs["preferred_output"], *outputs["non_preferred_output"]],
        extras=[source["tools"]] if source.get("tools") is not None else [],
        has_system="system" in roles,
        has_user="user" in roles,
    )


def _prepare_legacy(
    value: dict[str, Any], found: _Findings, settings: ConversionSettings
) -> PreparedExample | None:
    for key in value:
        if key not in LEGACY_KEYS:
            found.add(
                key,
                codes.UNRECOGNIZED_KEY,
                f'Unrecognized key "{key}"; a prompt/completion example has only those two keys.',
            )
    texts = _required_texts(value, ("prompt", "completion"), found)
    if texts is None or found.issues:
        return None
    prompt, completion = texts
    return _qa_prepared(qa_example(prompt, completion, None, settings))


def _prepare_row_object(
    value: dict[str, Any], found: _Findings, settings: ConversionSettings
) -> PreparedExample | None:
    texts = _required_texts(value, (settings.user_column, settings.assistant_column), found)
    system: str | None = None
    if settings.system_column is not None:
        raw_system = value.get(settings.system_column)
        if raw_system is not None and not isinstance(raw_system, str):
            found.add(
                settings.system_column, codes.INVALID_FIELD, "The system text must be a string."
            )
        else:
            system = raw_system
    if texts is None or found.issues:
        return None
    return _qa_prepared(qa_example(texts[0], texts[1], system, settings))


def _required_texts(
    value: Mapping[str, Any], keys: tuple[str, str], found: _Findings
) -> tuple[str, str] | None:
    texts: list[str] = []
    for key in keys:
        text = value.get(key)
        if text is None or (isinstance(text, str) and _is_blank(text)):
            found.add(key, codes.MISSING_CONTENT, f'"{key}" is missing or empty.')
        elif not isinstance(text, str):
            found.add(key, codes.INVALID_FIELD, f'"{key}" must be a string.')
        else:
            texts.append(text)
    return (texts[0], texts[1]) if len(texts) == 2 else None


def _qa_prepared(document: dict[str, Any]) -> PreparedExample:
    messages: list[dict[str, Any]] = document["messages"]
    return PreparedExample(
        kind="chat",
        document=document,
        messages=messages,
        has_system=messages[0]["role"] == "system",
        has_user=True,
    )
