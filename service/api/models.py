"""`/models`: the base models this service trains (the catalog) and the tenant's tuned models."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from litestar import Controller, get
from litestar.params import FromPath, FromQuery, QueryParameter
from pydantic import BaseModel, Field

from service.api.auth import Injected, Tenant
from service.api.pagination import MAX_LIMIT, ListResponse
from service.api.problems import problems
from service.domain.catalog import CatalogModel, base_model_of
from service.errors import MalformedRequest, NotFound


class ModelPrice(BaseModel):
    training_per_million: float
    input_per_million: float | None
    output_per_million: float | None
    currency: str
    as_of: str


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    kind: Literal["base", "tuned"]
    provider: str
    base_model: str | None = Field(description="For a tuned model, the model it was trained from")
    aliases: list[str] = Field(default_factory=list)
    tokenizer: str | None = Field(
        default=None, description="A tiktoken encoding, or `huggingface` for an open-weight model"
    )
    example_token_limit: int | None = None
    min_examples: int | None = None
    price: ModelPrice | None = None
    training_until: str | None = Field(
        default=None, description="The last day new fine-tuning jobs are accepted (null: open)"
    )
    serving_until: str | None = Field(default=None, description="The day serving ends, if known")
    dates_confirmed: bool | None = None
    training_open: bool | None = None


def base_view(entry: CatalogModel, today: date) -> Model:
    tokenizer = entry.counting.tokenizer
    price = entry.price
    return Model(
        id=entry.id,
        kind="base",
        provider=entry.provider,
        base_model=None,
        aliases=list(entry.aliases),
        tokenizer="huggingface" if tokenizer.startswith("hf:") else tokenizer,
        example_token_limit=entry.example_token_limit,
        min_examples=entry.min_examples,
        price=ModelPrice(
            training_per_million=price.training_per_million,
            input_per_million=price.input_per_million,
            output_per_million=price.output_per_million,
            currency=price.currency,
            as_of=price.as_of,
        )
        if price
        else None,
        training_until=entry.training_until.isoformat() if entry.training_until else None,
        serving_until=entry.serving_until.isoformat() if entry.serving_until else None,
        dates_confirmed=entry.dates_confirmed,
        training_open=entry.training_open(today),
    )


def _by_id(entry: CatalogModel) -> str:
    return entry.id


def tuned_view(model: str, provider: str) -> Model:
    return Model(id=model, kind="tuned", provider=provider, base_model=base_model_of(model))


class ModelController(Controller):
    path = "/models"
    tags = ["Models"]

    @get(
        "/",
        operation_id="ListModels",
        summary="Base models this service trains (provider, limits, prices, dates) and yours",
        responses=problems(400, 401, 429),
    )
    async def list_models(
        self,
        resources: Injected,
        tenant: Tenant,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = 100,
        after: FromQuery[str | None] = None,
    ) -> ListResponse[Model]:
        await resources.providers.learn_models()
        today = date.today()
        catalog = resources.providers.catalog
        bases = [base_view(entry, today) for entry in sorted(catalog.models.values(), key=_by_id)]
        tuned = await resources.jobs.tuned_models(tenant)
        mine = [tuned_view(model, provider) for model, provider in sorted(tuned.items())]
        listed = bases + mine
        start = 0
        if after is not None:
            ids = [model.id for model in listed]
            if after not in ids:
                raise MalformedRequest(
                    f"after: {after!r} is not an id in this list", code="invalid_cursor"
                )
            start = ids.index(after) + 1
        page = listed[start : start + limit]
        return ListResponse(data=page, has_more=start + limit < len(listed))

    @get(
        "/{model_id:str}",
        operation_id="GetModel",
        summary="One base model (an alias finds its snapshot) or one of your tuned models",
        responses=problems(400, 401, 404, 429),
    )
    async def get_model(
        self, resources: Injected, tenant: Tenant, model_id: FromPath[str]
    ) -> Model:
        provider = await resources.jobs.tuned_model_provider(tenant, model_id)
        if provider is not None:
            return tuned_view(model_id, provider)
        entry = resources.providers.catalog.find(model_id)
        if entry is None or base_model_of(model_id) != model_id:
            raise NotFound(
                f"Model {model_id!r} is not available to this tenant", code="model_not_found"
            )
        return base_view(entry, date.today())
