"""What the OpenAPI document says about request bodies Litestar cannot infer on its own.

`POST /datasets` and `POST /datasets/validate` stream the body (multipart is
written to disk part by part) and `POST /webhooks/openai` needs the exact bytes
to check the signature, so none of them declares a `data` parameter and
Litestar cannot infer a request body. These operation classes add it, so the
contract (and clients generated from it) know what to send.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar.openapi.spec import (
    Example,
    OpenAPIMediaType,
    Operation,
    Reference,
    RequestBody,
    Schema,
)
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.params import Body, BodyKwarg
from pydantic import BaseModel

_STRING = OpenAPIType.STRING


def example_body(model: type[BaseModel]) -> BodyKwarg:
    """`Body(...)` carrying the model's own `json_schema_extra` examples.

    Litestar does not copy pydantic's `json_schema_extra["examples"]` into the
    document; `data: Annotated[JobCreate, example_body(JobCreate)]` does.
    """
    extra: Any = model.model_config.get("json_schema_extra") or {}
    body: BodyKwarg = Body(
        examples=[
            Example(summary=f"{model.__name__} example {i}", value=value)
            for i, value in enumerate(extra.get("examples", []), start=1)
        ]
    )
    return body


_FORMATS = ["auto", "jsonl", "csv", "tsv", "json", "xlsx"]
_EXAMPLE_PAIRS = [
    {"user": "What is the capital of France?", "assistant": "Paris."},
    {"user": "2 + 2?", "assistant": "4."},
]

# Fields shared by the multipart form and the JSON body (see service.datasets.DatasetRequest).
_COMMON_FIELDS: dict[str, Schema] = {
    "name": Schema(type=_STRING, max_length=200, description="Defaults to the file name"),
    "model": Schema(
        type=_STRING,
        max_length=128,
        description="The model the dataset is for (token counting, estimate)",
    ),
    "system_prompt": Schema(
        type=_STRING,
        max_length=20_000,
        description="Added as the system message of every example that has none",
    ),
    "validation_fraction": Schema(
        type=OpenAPIType.NUMBER,
        exclusive_minimum=0,
        exclusive_maximum=1,
        description="Split this share off into a validation dataset",
    ),
    "seed": Schema(type=OpenAPIType.INTEGER, minimum=0, maximum=2**31 - 1, default=0),
}

DATASET_UPLOAD = Schema(
    title="DatasetUpload",
    type=OpenAPIType.OBJECT,
    required=["file"],
    properties={
        "file": Schema(
            type=_STRING,
            format=OpenAPIFormat.BINARY,
            description="The dataset: JSONL, CSV, TSV, JSON or XLSX",
        ),
        "format": Schema(type=_STRING, enum=_FORMATS, default="auto"),
        **_COMMON_FIELDS,
        "user_column": Schema(type=_STRING, min_length=1, max_length=200, default="user"),
        "assistant_column": Schema(type=_STRING, min_length=1, max_length=200, default="assistant"),
        "system_column": Schema(type=_STRING, min_length=1, max_length=200),
        "n_epochs": Schema(type=OpenAPIType.INTEGER, minimum=1, maximum=50),
    },
)

DATASET_JSON = Schema(
    title="DatasetJson",
    type=OpenAPIType.OBJECT,
    required=["examples"],
    additional_properties=False,
    description=(
        "Examples built in code: each item a chat or preference example, a "
        "prompt/completion pair, or a {user, assistant} object"
    ),
    properties={
        "examples": Schema(
            type=OpenAPIType.ARRAY,
            min_items=1,
            items=Schema(type=OpenAPIType.OBJECT, additional_properties=True),
        ),
        **_COMMON_FIELDS,
    },
    examples=[{"name": "capitals", "examples": _EXAMPLE_PAIRS}],
)


@dataclass
class DatasetUploadOperation(Operation):
    """`POST /datasets` and `/datasets/validate`: a multipart file or JSON examples."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=False,
            description="A multipart upload with a `file` part, or JSON examples",
            content={
                "multipart/form-data": OpenAPIMediaType(schema=DATASET_UPLOAD),
                "application/json": OpenAPIMediaType(schema=DATASET_JSON),
            },
        )


FILE_UPLOAD = Schema(
    title="FileUpload",
    type=OpenAPIType.OBJECT,
    required=["file", "purpose"],
    properties={
        "file": Schema(
            type=_STRING,
            format=OpenAPIFormat.BINARY,
            description="JSONL training data, one JSON object per line",
        ),
        "purpose": Schema(type=_STRING, enum=["fine-tune"]),
    },
)


@dataclass
class FileUploadOperation(Operation):
    """`POST /v1/files`: OpenAI's multipart file upload."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="A multipart upload with a `file` part and `purpose=fine-tune`",
            content={"multipart/form-data": OpenAPIMediaType(schema=FILE_UPLOAD)},
        )


OPENAI_EVENT = Schema(
    title="OpenAIWebhookEvent",
    type=OpenAPIType.OBJECT,
    required=["id", "type", "created_at", "data"],
    additional_properties=True,
    description="An OpenAI webhook event, signed with OPENAI_WEBHOOK_SECRET",
    properties={
        "id": Schema(type=_STRING),
        "object": Schema(type=_STRING),
        "type": Schema(type=_STRING),
        "created_at": Schema(type=OpenAPIType.INTEGER),
        "data": Schema(
            type=OpenAPIType.OBJECT,
            properties={"id": Schema(type=_STRING)},
            additional_properties=True,
        ),
    },
    examples=[
        {
            "id": "evt_685343a1381c819085d44c354e1b330e",
            "object": "event",
            "type": "fine_tuning.job.succeeded",
            "created_at": 1750287018,
            "data": {"id": "ftjob_abc123"},
        }
    ],
)


@dataclass
class OpenAIWebhookOperation(Operation):
    """`POST /webhooks/openai`: OpenAI's signed event, read raw for the signature check."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True, content={"application/json": OpenAPIMediaType(schema=OPENAI_EVENT)}
        )


@dataclass
class ChatCompletionOperation(Operation):
    """`POST /chat`: JSON by default, Server-Sent Events with `"stream": true`.

    The JSON schema comes from the route's `responses={200: ...}`; this adds the
    event-stream form, which Litestar cannot express on one response.
    """

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if ok is not None and not isinstance(ok, Reference) and ok.content is not None:
            ok.content["text/event-stream"] = OpenAPIMediaType(
                schema=Schema(
                    type=_STRING,
                    description="`data: {chat.completion.chunk}` lines, then `data: [DONE]`",
                )
            )
