"""OpenAI's results file: a CSV of per-step metrics, served base64-encoded.

`step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy` with
blank cells where no validation ran. Columns are renamed to the metric names
the events use, so one step has one set of names whichever way it arrived.
"""

from __future__ import annotations

import base64
import csv
import io

# The results file's columns -> the names metrics events use.
COLUMNS = {
    "train_loss": "train_loss",
    "train_accuracy": "train_mean_token_accuracy",
    "valid_loss": "valid_loss",
    "valid_mean_token_accuracy": "valid_mean_token_accuracy",
}


def decode_results(raw: bytes) -> str:
    """The CSV text: OpenAI sends it base64-encoded, some compatible servers plain."""
    try:
        return base64.b64decode(raw, validate=True).decode()
    except ValueError:
        return raw.decode(errors="replace")


def metrics_from_results(raw: bytes) -> list[dict[str, float]]:
    """One metrics point per step row (rows without a step are skipped)."""
    points: list[dict[str, float]] = []
    for row in csv.DictReader(io.StringIO(decode_results(raw))):
        values: dict[str, float] = {}
        for key, value in row.items():
            if key and value not in (None, ""):
                try:
                    values[key] = float(value)
                except ValueError:
                    continue
        if "step" not in values:
            continue
        point: dict[str, float] = {"step": int(values["step"])}
        for column, name in COLUMNS.items():
            if column in values:
                point[name] = values[column]
        points.append(point)
    return points
