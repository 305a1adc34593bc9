"""The model catalog: every base model the service can train, in one table.

Each entry says which provider trains it, how its tokens are counted, the
longest example it keeps, the fewest examples a job needs, what training
costs, and its lifecycle: the last day new training is accepted and the day
serving ends. Dataset checks, estimates, job creation, routing and
`GET /models` all read it, so a model name means the same thing everywhere:
aliases (`gpt-3.5-turbo`) resolve here, once, the way the provider resolves
them, and a tuned model (`ft:<base>:…`) finds its base model here.

Pure data and rules; `service.providers.registry` builds it from the packaged
model table, the price table and PROVIDERS_FILE.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date

from service.errors import InvalidContent

# The cookbook's rule (see service.domain.tokens): per message, per name, per conversation.
COOKBOOK_OVERHEAD = (3, 1, 3)


@dataclass(frozen=True, slots=True)
class Price:
    """What training costs for one base model, from a dated table."""

    training_per_million: float
    input_per_million: float | None
    output_per_million: float | None
    currency: str
    as_of: str
    source: str


@dataclass(frozen=True, slots=True)
class Counting:
    """How an example's tokens are counted for one model.

    `tokenizer` names a tiktoken encoding (`o200k_base`) or a Hugging Face
    tokenizer file (`hf:/path/tokenizer.json`). The overheads are the tokens a
    chat template adds per message, per `name` and per conversation: the
    cookbook's 3/1/3 for OpenAI models, measured from the model's own chat
    template for open-weight ones.
    """

    tokenizer: str
    per_message: int = COOKBOOK_OVERHEAD[0]
    per_name: int = COOKBOOK_OVERHEAD[1]
    per_conversation: int = COOKBOOK_OVERHEAD[2]
    # What responses call the tokenizer (a file path means nothing to a caller).
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.tokenizer


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What counting, checking and pricing need about the model a dataset is for."""

    requested: str
    base_model: str
    counting: Counting
    example_token_limit: int
    limit_confirmed: bool
    min_examples: int = 10
    price: Price | None = None

    @property
    def encoding(self) -> str:
        return self.counting.tokenizer


@dataclass(frozen=True, slots=True)
class CatalogModel:
    id: str
    provider: str
    counting: Counting
    example_token_limit: int
    limit_confirmed: bool = False
    min_examples: int = 10
    aliases: tuple[str, ...] = ()
    price: Price | None = None
    # Last day new training is accepted, and the day serving ends (None: not announced).
    training_until: date | None = None
    serving_until: date | None = None
    dates_confirmed: bool = False
    owned_by: str = "system"

    def training_open(self, today: date) -> bool:
        return self.training_until is None or today <= self.training_until

    def spec(self, requested: str) -> ModelSpec:
        return ModelSpec(
            requested=requested,
            base_model=self.id,
            counting=self.counting,
            example_token_limit=self.example_token_limit,
            limit_confirmed=self.limit_confirmed,
            min_examples=self.min_examples,
            price=self.price,
        )


@dataclass(frozen=True, slots=True)
class Family:
    """Snapshots the catalog does not list by name but can still count (`gpt-4o-2024-11-20`)."""

    prefix: str
    counting: Counting
    example_token_limit: int
    limit_confirmed: bool = False


class UnknownModel(InvalidContent):
    code = "unknown_model"


class TrainingClosed(InvalidContent):
    code = "model_training_closed"


_AZURE_TUNED = re.compile(r"^(?P<base>.+?)\.ft-[0-9a-f]+$")


def base_model_of(model: str) -> str:
    """The base model a tuned model was trained from; other names pass through.

    OpenAI and the trainer: `ft:<base>:…` (checkpoints add `:ckpt-step-N`).
    Azure OpenAI: `<base>.ft-<hex>`.
    """
    model = model.strip()
    if model.startswith("ft:"):
        parts = model.split(":")
        return parts[1] if len(parts) > 1 and parts[1] else model
    azure = _AZURE_TUNED.match(model)
    if azure is not None:
        return azure.group("base")
    return model


@dataclass(frozen=True)
class Catalog:
    models: Mapping[str, CatalogModel]
    families: tuple[Family, ...] = ()
    # Where chat for a base model the catalog does not list goes (the first provider).
    default_provider: str | None = None
    aliases: Mapping[str, str] = field(init=False)

    def __post_init__(self) -> None:
        aliases = {alias: model.id for model in self.models.values() for alias in model.aliases}
        object.__setattr__(self, "aliases", aliases)

    def find(self, name: str) -> CatalogModel | None:
        """The entry for a snapshot, an alias or a model tuned from either."""
        base = base_model_of(name)
        return self.models.get(self.aliases.get(base, base))

    def spec(self, name: str) -> ModelSpec:
        """How to count and price data for `name`; UnknownModel when nobody knows it."""
        entry = self.find(name)
        if entry is not None:
            return entry.spec(name)
        base = base_model_of(name)
        # Longest matching prefix wins, so "gpt-4o" beats "gpt-4-" style families.
        for family in sorted(self.families, key=lambda f: len(f.prefix), reverse=True):
            if base.startswith(family.prefix):
                return ModelSpec(
                    requested=name,
                    base_model=base,
                    counting=family.counting,
                    example_token_limit=family.example_token_limit,
                    limit_confirmed=family.limit_confirmed,
                )
        raise UnknownModel(
            f"Unknown model {name!r}: its tokenizer and example token limit are not known. "
            f"Use one of: {', '.join(self.trainable_names(None))}.",
            extra=_model_error(name, "unknown_model", "is not a model this service knows"),
        )

    def open_models(self, today: date | None) -> list[CatalogModel]:
        return [
            model for model in self.models.values() if today is None or model.training_open(today)
        ]

    def trainable_names(self, today: date | None) -> list[str]:
        return sorted(model.id for model in self.open_models(today))

    def for_training(self, name: str, today: date) -> CatalogModel:
        """The entry to train `name` on, today. Raises UnknownModel or TrainingClosed
        (naming the date and the models still open)."""
        entry = self.find(name)
        if entry is None or base_model_of(name) != name.strip():  # unknown, or a tuned model
            raise UnknownModel(
                f"Model {name!r} cannot be fine-tuned here; choose one of: "
                + ", ".join(self.trainable_names(today)),
                code="model_not_fine_tunable",
                extra=_model_error(name, "model_not_fine_tunable", "cannot be fine-tuned here"),
            )
        if not entry.training_open(today):
            raise TrainingClosed(
                closed_message(entry, self.trainable_names(today)),
                extra={
                    **_model_error(name, "model_training_closed", "no longer takes new training"),
                    "training_until": entry.training_until.isoformat()
                    if entry.training_until
                    else None,
                    "alternatives": self.trainable_names(today),
                },
            )
        return entry

    def closed_warning(self, name: str, today: date) -> str | None:
        """A sentence for a dataset made for a model that can no longer be trained."""
        entry = self.find(name)
        if entry is None or entry.training_open(today):
            return None
        return closed_message(entry, self.trainable_names(today))

    def providers(self) -> Iterable[str]:
        return sorted({model.provider for model in self.models.values()})


def closed_message(entry: CatalogModel, alternatives: list[str]) -> str:
    when = entry.training_until.isoformat() if entry.training_until else "an earlier date"
    instead = ", ".join(alternatives) if alternatives else "none is open at the moment"
    return (
        f"{entry.id} stopped taking new fine-tuning jobs after {when}; "
        f"models that can still be trained: {instead}"
    )


def _model_error(name: str, code: str, what: str) -> dict[str, object]:
    return {"errors": [{"line": None, "path": "model", "code": code, "message": f"{name} {what}"}]}
