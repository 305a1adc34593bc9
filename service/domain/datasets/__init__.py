"""Dataset logic: recognising, converting and validating training examples.

Pure functions over bytes, text and parsed values; files and executors are
handled by `service.ingest`. Kept import-light because pool workers import it.
"""

from service.domain.datasets.examples import ConversionSettings, ExampleKind, PreparedExample
from service.domain.datasets.issues import Issue, IssueList
from service.domain.datasets.stats import TokenStats

__all__ = [
    "ConversionSettings",
    "ExampleKind",
    "Issue",
    "IssueList",
    "PreparedExample",
    "TokenStats",
]
