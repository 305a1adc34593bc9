"""Line-by-line validation of JSONL, JSON arrays and posted examples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service.datasets.ingest import IngestOptions, ingest_examples, ingest_file
from service.providers.registry import packaged_spec
from tests.unit.test_dataset_support import (
    DATA,
    chat,
    cookbook_count,
    read_jsonl,
    valid_rows,
    write_jsonl,
)


def found(report: Any) -> list[tuple[int | None, str | None, str]]:
    return [(issue.line, issue.path, issue.code) for issue in report.errors]


def test_seed_three_examples_are_too_few(tmp_path: Path) -> None:
    report = ingest_file(DATA / "three_examples.jsonl", tmp_path / "out.jsonl", IngestOptions())
    assert found(report) == [(None, None, "too_few_examples")]
    assert report.errors[0].message == (
        "The file has 3 example(s), but fine-tuning needs at least 10."
    )
    assert report.example_count == 3
    assert not report.ok


def test_faults_are_reported_on_their_lines_with_paths(tmp_path: Path) -> None:
    good = chat("q", "a")
    rows: list[Any] = [
        good,  # 1
        '{"messages": [}',  # 2
        "[1, 2]",  # 3
        {"conversation": []},  # 4
        {"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]},  # 5
        {
            "messages": [
                {"role": "user", "content": "q", "mood": "ok"},
                {"role": "assistant", "content": "a"},
            ]
        },  # 6
        {
            "messages": [{"role": "robot", "content": "q"}, {"role": "assistant", "content": "a"}]
        },  # 7
        {
            "messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "a"}]
        },  # 8
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]},  # 9
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a", "weight": 2},
            ]
        },  # 10
        {
            "messages": [
                {"role": "user", "content": "q", "weight": 1},
                {"role": "assistant", "content": "a"},
            ]
        },  # 11
        {**good, "extra": True},  # 12
        "",  # 13: blank lines are skipped, not errors
        {"messages": []},  # 14
        {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "a"}]},  # 15
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a", "weight": True},
            ]
        },  # 16
        '{"messages": [{"role": "user", "content": NaN}]}',  # 17
    ]
    report = ingest_file(
        write_jsonl(tmp_path / "bad.jsonl", rows),
        tmp_path / "out.jsonl",
        IngestOptions(min_examples=1),
    )
    assert found(report) == [
        (2, None, "invalid_json"),
        (3, None, "data_type"),
        (4, "messages", "missing_messages_list"),
        (5, "messages[0].content", "message_missing_key"),
        (6, "messages[0].mood", "message_unrecognized_key"),
        (7, "messages[0].role", "unrecognized_role"),
        (8, "messages[0].content", "missing_content"),
        (9, "messages", "example_missing_assistant_message"),
        (10, "messages[1].weight", "invalid_weight"),
        (11, "messages[0].weight", "invalid_weight"),
        (12, "extra", "unrecognized_key"),
        (14, "messages", "missing_messages_list"),
        (15, "messages[0].content", "invalid_content"),
        (16, "messages[1].weight", "invalid_weight"),
        (17, None, "invalid_json"),
    ]
    assert "line 2, column" in report.errors[0].message
    # Lines 2 and 17 do not parse, so they are not counted as examples.
    assert report.example_count == 14
    assert report.valid_example_count == 1
    assert report.error_total == 15


def test_error_list_is_capped_but_totals_are_exact(tmp_path: Path) -> None:
    rows = ["not json"] * 30
    report = ingest_file(
        write_jsonl(tmp_path / "bad.jsonl", rows),
        tmp_path / "out.jsonl",
        IngestOptions(max_errors=5, format="jsonl"),
    )
    assert len(report.errors) == 5
    assert report.error_total == 30
    assert report.error_totals == {"invalid_json": 30}


def test_tool_calls_and_their_arguments(tmp_path: Path) -> None:
    def with_call(arguments: object) -> dict[str, Any]:
        return {
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": arguments},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "21C"},
                {"role": "assistant", "content": "It is 21C."},
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "get_weather", "parameters": {"type": "object"}},
                }
            ],
            "parallel_tool_calls": False,
        }

    rows = [
        with_call('{"city": "Paris"}'),
        with_call("{city: Paris}"),
        with_call({"city": "Paris"}),
        {
            "messages": [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": None,
                    "function_call": {"name": "f", "arguments": "nope"},
                },
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "tool", "content": "r"},
                {"role": "assistant", "content": "a"},
            ]
        },
    ]
    report = ingest_file(
        write_jsonl(tmp_path / "tools.jsonl", rows),
        tmp_path / "out.jsonl",
        IngestOptions(min_examples=1),
    )
    assert found(report) == [
        (2, "messages[1].tool_calls[0].function.arguments", "invalid_tool_call_arguments"),
        (3, "messages[1].tool_calls[0].function.arguments", "invalid_tool_call_arguments"),
        (4, "messages[1].function_call.arguments", "invalid_tool_call_arguments"),
        (5, "messages[1].tool_call_id", "message_missing_key"),
    ]
    # The valid example: tool calls and tools count as their compact JSON.
    example = read_jsonl(tmp_path / "out.jsonl")[0]
    assert example == rows[0]


def test_weight_zero_and_one_are_valid_and_weight_zero_is_not_trained(tmp_path: Path) -> None:
    example = {
        "messages": [
            {"role": "user", "content": "Say hi"},
            {"role": "assistant", "content": "Hello there, friend", "weight": 0},
            {"role": "user", "content": "Again"},
            {"role": "assistant", "content": "Hi", "weight": 1},
        ]
    }
    report = ingest_examples([example], tmp_path / "out.jsonl", IngestOptions(min_examples=1))
    assert report.ok, report.errors
    assert report.token_count == cookbook_count(
        [{k: v for k, v in m.items() if k != "weight"} for m in example["messages"]]
    )
    assert report.tokens.assistant_token_count == 1  # "Hi" only


def test_legacy_prompt_completion_becomes_chat(tmp_path: Path) -> None:
    rows = [{"prompt": f"Q{i} ->", "completion": f" A{i}"} for i in range(10)]
    rows.append({"prompt": "Q", "completion": ""})
    report = ingest_file(
        write_jsonl(tmp_path / "legacy.jsonl", rows),
        tmp_path / "out.jsonl",
        IngestOptions(system_prompt="Be brief."),
    )
    assert found(report) == [(11, "completion", "missing_content")]
    assert read_jsonl(tmp_path / "out.jsonl")[0] == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Q0 ->"},
            {"role": "assistant", "content": " A0"},
        ]
    }


def test_chat_examples_are_not_given_the_system_prompt(tmp_path: Path) -> None:
    rows = valid_rows(10)
    rows[0] = chat("q", "a", system=None)
    report = ingest_file(
        write_jsonl(tmp_path / "c.jsonl", rows),
        tmp_path / "out.jsonl",
        IngestOptions(system_prompt="ignored for chat"),
    )
    assert report.ok
    assert read_jsonl(tmp_path / "out.jsonl")[0] == rows[0]
    assert report.warning_totals == {"missing_system_message": 1}
    assert report.warnings[0].line == 1


def test_preference_lines_are_validated(tmp_path: Path) -> None:
    def pair(index: int) -> dict[str, Any]:
        return {
            "input": {"messages": [{"role": "user", "content": f"Weather {index}?"}]},
            "preferred_output": [{"role": "assistant", "content": "70F"}],
            "non_preferred_output": [{"role": "assistant", "content": "21C"}],
        }

    rows: list[Any] = [pair(i) for i in range(10)]
    rows.append({**pair(10), "preferred_output": []})
    rows.append({**pair(11), "non_preferred_output": [{"role": "user", "content": "x"}]})
    rows.append(
        {
            "input": {"messages": [{"role": "user", "content": "q"}]},
            "preferred_completion": [{"role": "assistant", "content": "p"}],
            "non_preferred_completion": [{"role": "assistant", "content": "n"}],
        }
    )
    report = ingest_file(
        write_jsonl(tmp_path / "dpo.jsonl", rows), tmp_path / "out.jsonl", IngestOptions()
    )
    assert report.kind == "preference"
    assert found(report) == [
        (11, "preferred_output", "invalid_preference_output"),
        (12, "non_preferred_output[0].role", "invalid_preference_output"),
    ]
    out = read_jsonl(tmp_path / "out.jsonl")
    assert out[-1]["preferred_output"] == [{"role": "assistant", "content": "p"}]
    input_messages = pair(0)["input"]["messages"]
    first = cookbook_count(
        [
            *input_messages,
            {"role": "assistant", "content": "70F"},
            {"role": "assistant", "content": "21C"},
        ]
    )
    assert report.tokens.max == first


def test_mixing_chat_and_preference_is_an_error(tmp_path: Path) -> None:
    rows: list[Any] = valid_rows(10)
    rows.append(
        {
            "input": {"messages": [{"role": "user", "content": "q"}]},
            "preferred_output": [{"role": "assistant", "content": "p"}],
            "non_preferred_output": [{"role": "assistant", "content": "n"}],
        }
    )
    report = ingest_file(
        write_jsonl(tmp_path / "mix.jsonl", rows), tmp_path / "out.jsonl", IngestOptions()
    )
    assert found(report) == [(11, None, "inconsistent_example_kind")]


def test_json_array_of_chat_examples_and_rows(tmp_path: Path) -> None:
    elements: list[Any] = valid_rows(9)
    elements.append({"user": "Row question", "assistant": "Row answer", "id": 7})
    elements.append({"messages": [{"role": "user", "content": "q"}]})
    source = tmp_path / "array.json"
    source.write_text(json.dumps(elements, indent=2, ensure_ascii=False), encoding="utf-8")
    report = ingest_file(source, tmp_path / "out.jsonl", IngestOptions(system_prompt="S"))
    assert report.format == "json"
    assert report.example_count == 11
    # For arrays the "line" is the element number.
    assert found(report) == [(11, "messages", "example_missing_assistant_message")]
    assert read_jsonl(tmp_path / "out.jsonl")[9]["messages"] == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Row question"},
        {"role": "assistant", "content": "Row answer"},
    ]


def test_broken_json_array_reports_element_and_position(tmp_path: Path) -> None:
    source = tmp_path / "broken.json"
    source.write_text('[\n {"messages": []},\n {"messages": [tru]}\n]', encoding="utf-8")
    report = ingest_file(source, tmp_path / "out.jsonl", IngestOptions())
    assert found(report)[-1] == (2, None, "invalid_json")
    assert "line 3, column" in report.errors[-1].message


def test_duplicates_and_warnings(tmp_path: Path) -> None:
    rows: list[Any] = valid_rows(10)
    rows.append(rows[2])
    rows.append(
        {
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "assistant", "content": "unprompted"},
            ]
        }
    )
    report = ingest_file(
        write_jsonl(tmp_path / "dup.jsonl", rows), tmp_path / "out.jsonl", IngestOptions()
    )
    assert report.ok
    by_code = {issue.code: issue for issue in report.warnings}
    assert by_code["duplicate_example"].line == 11
    assert "line 3" in by_code["duplicate_example"].message
    assert by_code["missing_user_message"].line == 12


def test_examples_over_the_token_limit_warn(tmp_path: Path) -> None:
    rows = valid_rows(10)
    rows.append(chat("q", "word " * 5000))
    report = ingest_file(
        write_jsonl(tmp_path / "long.jsonl", rows),
        tmp_path / "out.jsonl",
        IngestOptions(spec=packaged_spec("gpt-3.5-turbo-0613")),
    )
    assert report.ok
    assert report.tokens.examples_over_limit == 1
    assert report.warning_totals == {"example_over_token_limit": 1}
    long_tokens = report.tokens.max
    assert report.tokens.billed_tokens_per_epoch == report.token_count - long_tokens + 4096


def test_ingest_examples_accepts_mixed_shapes(tmp_path: Path) -> None:
    examples: list[Any] = [
        *valid_rows(8),
        {"prompt": "p", "completion": "c"},
        {"user": "u", "assistant": "a"},
        "not an object",
    ]
    report = ingest_examples(examples, tmp_path / "out.jsonl", IngestOptions())
    assert found(report) == [(11, None, "data_type")]
    assert report.example_count == 11
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 10


def test_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "big.jsonl", valid_rows(20))
    report = ingest_file(source, tmp_path / "out.jsonl", IngestOptions(max_file_bytes=100))
    assert found(report) == [(None, None, "file_too_large")]
    assert report.source_sha256 is None


def test_special_token_text_is_counted_as_text(tmp_path: Path) -> None:
    example = chat("What is <|endoftext|>?", "A special token spelled out.")
    report = ingest_examples([example], tmp_path / "out.jsonl", IngestOptions(min_examples=1))
    assert report.ok
    assert report.token_count > 0
