"""Problems found in a dataset: one shape for errors and warnings, and their codes.

`line` counts from 1 in the original upload (see docs/datasets.md for what a
"line" is per format) and is None for problems of the whole file. `path`
points inside the example (`messages[2].role`) or names a table column.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

# Errors: the dataset cannot be used until they are fixed.
INVALID_JSON: Final = "invalid_json"
TOO_DEEPLY_NESTED: Final = "too_deeply_nested"
EMPTY_FILE: Final = "empty_file"
VALIDATION_TIMEOUT: Final = "validation_timeout"
VALIDATION_FAILED: Final = "validation_failed"
DATA_TYPE: Final = "data_type"
MISSING_MESSAGES_LIST: Final = "missing_messages_list"
MESSAGE_MISSING_KEY: Final = "message_missing_key"
MESSAGE_UNRECOGNIZED_KEY: Final = "message_unrecognized_key"
UNRECOGNIZED_KEY: Final = "unrecognized_key"
UNRECOGNIZED_ROLE: Final = "unrecognized_role"
MISSING_CONTENT: Final = "missing_content"
INVALID_CONTENT: Final = "invalid_content"
INVALID_FIELD: Final = "invalid_field"
EXAMPLE_MISSING_ASSISTANT_MESSAGE: Final = "example_missing_assistant_message"
INVALID_WEIGHT: Final = "invalid_weight"
INVALID_TOOL_CALL: Final = "invalid_tool_call"
INVALID_TOOL_CALL_ARGUMENTS: Final = "invalid_tool_call_arguments"
INVALID_PREFERENCE_OUTPUT: Final = "invalid_preference_output"
INCONSISTENT_EXAMPLE_KIND: Final = "inconsistent_example_kind"
TOO_FEW_EXAMPLES: Final = "too_few_examples"
FILE_TOO_LARGE: Final = "file_too_large"
ENCODING: Final = "encoding"
MISSING_COLUMN: Final = "missing_column"
INVALID_TABLE: Final = "invalid_table"

# Warnings: the dataset is usable, but probably not what the caller meant.
MISSING_SYSTEM_MESSAGE: Final = "missing_system_message"
MISSING_USER_MESSAGE: Final = "missing_user_message"
EXAMPLE_OVER_TOKEN_LIMIT: Final = "example_over_token_limit"  # noqa: S105 - a code, not a secret
DUPLICATE_EXAMPLE: Final = "duplicate_example"


@dataclass(frozen=True, slots=True)
class Issue:
    line: int | None
    path: str | None
    code: str
    message: str


@dataclass
class IssueList:
    """A capped list of issues with exact totals per code.

    Only the first `limit` issues are kept, so a file with a million bad lines
    costs a million counter increments, not a million objects.
    """

    limit: int
    items: list[Issue] = field(default_factory=list)
    totals: Counter[str] = field(default_factory=Counter)

    def add(self, issue: Issue) -> None:
        self.totals[issue.code] += 1
        if len(self.items) < self.limit:
            self.items.append(issue)

    def merge(self, items: Iterable[Issue], totals: Counter[str]) -> None:
        """Fold in another list's issues (kept while room remains) and its totals."""
        for issue in items:
            if len(self.items) >= self.limit:
                break
            self.items.append(issue)
        self.totals.update(totals)

    @property
    def total(self) -> int:
        return sum(self.totals.values())
