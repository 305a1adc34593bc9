"""Providers and the model catalog, built from configuration.

`PROVIDERS_FILE` (TOML, see `service.providers.config`) lists the providers;
unset, there is one, `openai`, from `OPENAI_API_KEY`/`OPENAI_BASE_URL`. Each
provider's `kind` is a folder under `service/providers/` whose `build(config)`
makes it, so adding a kind is adding a folder.

The catalog joins what the packaged model table knows about OpenAI's models
(`service/data/models.json`: tokenizers, limits, lifecycle dates), the dated
price table, the models each provider says it trains, and for a provider's
own models (an open-weight model on the trainer) what the provider itself
tells: its tokenizer file and chat template, fetched once and kept under
DATA_DIR.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

from service.domain.catalog import (
    Catalog,
    CatalogModel,
    Counting,
    Family,
    ModelSpec,
    Price,
    UnknownModel,
)
from service.errors import Unavailable
from service.providers.base import ModelFacts, Provider, ProviderError
from service.providers.config import ProviderConfig, ProviderConfigError, parse_provider
from service.settings import Settings

logger = logging.getLogger(__name__)

DATA = Path(__file__).resolve().parent.parent / "data"
MODEL_TABLE = DATA / "models.json"
PRICE_TABLE = DATA / "prices-2026-11-01.json"
DEFAULT_PROVIDER = "openai"


# The packaged tables ----------------------------------------------------------


def _day(value: object) -> date | None:
    return date.fromisoformat(str(value)) if value else None


def read_prices(path: Path | None = None) -> dict[str, Price]:
    raw = json.loads((path or PRICE_TABLE).read_text(encoding="utf-8"))
    return {
        name: Price(
            training_per_million=float(entry["training"]),
            input_per_million=None if entry.get("input") is None else float(entry["input"]),
            output_per_million=None if entry.get("output") is None else float(entry["output"]),
            currency=str(raw.get("currency", "USD")),
            as_of=str(raw["as_of"]),
            source=str(raw["source"]),
        )
        for name, entry in raw["models"].items()
    }


def read_model_table(
    provider: str, prices: Mapping[str, Price], path: Path | None = None
) -> tuple[dict[str, CatalogModel], tuple[Family, ...]]:
    """The packaged (or a deployment's own) table, every model trained by `provider`."""
    raw = json.loads((path or MODEL_TABLE).read_text(encoding="utf-8"))
    defaults = raw.get("defaults", {})
    default_limit = int(raw.get("default_example_token_limit", 65536))
    models: dict[str, CatalogModel] = {}
    for name, entry in raw["models"].items():
        models[name] = CatalogModel(
            id=name,
            provider=provider,
            counting=Counting(tokenizer=str(entry["encoding"])),
            example_token_limit=int(entry.get("example_token_limit", default_limit)),
            limit_confirmed=bool(entry.get("limit_confirmed", False)),
            min_examples=int(entry.get("min_examples", defaults.get("min_examples", 10))),
            aliases=tuple(entry.get("aliases", ())),
            price=prices.get(name),
            training_until=_day(entry.get("training_until", defaults.get("training_until"))),
            serving_until=_day(entry.get("serving_until")),
            dates_confirmed=bool(entry.get("dates_confirmed", defaults.get("dates_confirmed"))),
            owned_by="openai",
        )
    families = tuple(
        Family(
            prefix=str(entry["prefix"]),
            counting=Counting(tokenizer=str(entry["encoding"])),
            example_token_limit=int(entry.get("example_token_limit", default_limit)),
            limit_confirmed=bool(entry.get("limit_confirmed", False)),
        )
        for entry in raw.get("families", [])
    )
    return models, families


@cache
def packaged_catalog() -> Catalog:
    """Every packaged model, trained by `openai` (what runs with no PROVIDERS_FILE)."""
    models, families = read_model_table(DEFAULT_PROVIDER, read_prices())
    return Catalog(models=models, families=families, default_provider=DEFAULT_PROVIDER)


def packaged_spec(model: str) -> ModelSpec:
    return packaged_catalog().spec(model)


# Configuration -----------------------------------------------------------------


def provider_configs(settings: Settings) -> list[ProviderConfig]:
    """PROVIDERS_FILE's providers, or the single default one."""
    if settings.providers_file is None:
        if settings.openai_api_key is None or not settings.openai_api_key.get_secret_value():
            return []
        return [
            ProviderConfig(
                name=DEFAULT_PROVIDER,
                kind="openai",
                base_url=settings.openai_base_url,
                api_key_env="OPENAI_API_KEY",
                models=tuple(settings.fine_tunable_models),
                webhook_secret_env="OPENAI_WEBHOOK_SECRET",  # noqa: S106 - a variable's name
                timeout_seconds=settings.provider_timeout_seconds,
                options={
                    "organization": settings.openai_organization,
                    "project": settings.openai_project,
                    "job_extra_body": json.loads(settings.openai_job_extra_body)
                    if settings.openai_job_extra_body
                    else None,
                },
            )
        ]
    path = settings.providers_file
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProviderConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProviderConfigError(f"{path} is not valid TOML: {exc}") from None
    entries = raw.get("provider")
    if not isinstance(entries, list) or not entries:
        raise ProviderConfigError(f"{path} lists no [[provider]] tables")
    configs = [parse_provider(entry, position) for position, entry in enumerate(entries, 1)]
    names = [config.name for config in configs]
    if len(set(names)) != len(names):
        raise ProviderConfigError(f"{path}: provider names must be unique")
    trained: dict[str, str] = {}
    for config in configs:
        for model in config.models:
            if model in trained:
                raise ProviderConfigError(
                    f"{path}: model {model!r} is listed by providers {trained[model]!r} and "
                    f"{config.name!r}; a base model is trained by one provider"
                )
            trained[model] = config.name
    return configs


def providers_or_exit(settings: Settings) -> None:
    """For process entry points: a PROVIDERS_FILE that cannot be used (bad TOML, an
    unknown kind, a key variable that is unset) stops start-up with one line, exit 2."""
    try:
        for config in provider_configs(settings):
            if config.kind not in _kinds():
                raise ProviderConfigError(
                    f"provider {config.name!r}: no provider kind {config.kind!r} "
                    f"(kinds here: {', '.join(_kinds())})"
                )
            config.api_key()
    except ProviderConfigError as exc:
        where = "PROVIDERS_FILE" if settings.providers_file else "OPENAI_API_KEY"
        print(f"configuration error: {where}: {exc}", file=sys.stderr)  # noqa: T201
        raise SystemExit(2) from None


def _kinds() -> list[str]:
    """Every provider kind: the folders under service/providers/ that can build one."""
    return sorted(
        path.parent.name
        for path in Path(__file__).resolve().parent.glob("*/__init__.py")
        if "def build(" in path.read_text(encoding="utf-8")
    )


def build_provider(config: ProviderConfig) -> Provider:
    try:
        module = importlib.import_module(f"service.providers.{config.kind}")
    except ModuleNotFoundError:
        raise ProviderConfigError(
            f"provider {config.name!r}: no provider kind {config.kind!r} "
            "(a kind is a folder under service/providers/)"
        ) from None
    provider: Provider = module.build(config)
    return provider


def _override(model: CatalogModel, overrides: Mapping[str, Any]) -> CatalogModel:
    changes: dict[str, Any] = {}
    for key in ("example_token_limit", "min_examples"):
        if key in overrides:
            changes[key] = int(overrides[key])
    for key in ("training_until", "serving_until"):
        if key in overrides:
            changes[key] = _day(overrides[key])
            changes["dates_confirmed"] = True
    if "aliases" in overrides:
        changes["aliases"] = tuple(overrides["aliases"])
    if "training_price_per_million" in overrides:
        base = model.price
        changes["price"] = Price(
            training_per_million=float(overrides["training_price_per_million"]),
            input_per_million=base.input_per_million if base else None,
            output_per_million=base.output_per_million if base else None,
            currency=str(overrides.get("currency", base.currency if base else "USD")),
            as_of=str(overrides.get("price_as_of", date.today().isoformat())),
            source=f"PROVIDERS_FILE model_overrides for {model.id}",
        )
    return replace(model, **changes)


def build_catalog(
    configs: Sequence[ProviderConfig],
    facts: Mapping[str, CatalogModel] | None = None,
    *,
    price_table: Path | None = None,
) -> Catalog:
    """One entry per model a provider lists. Models the packaged table does not know
    come from `facts` (what their provider described), or are left out until it has."""
    prices = read_prices(price_table)
    models: dict[str, CatalogModel] = {}
    families: tuple[Family, ...] = ()
    for config in configs:
        known, families = read_model_table(config.name, prices)
        for model_id in config.models:
            entry = known.get(model_id) or (facts or {}).get(model_id)
            if entry is None:
                continue
            models[model_id] = _override(
                replace(entry, provider=config.name), config.model_overrides.get(model_id, {})
            )
    return Catalog(
        models=models,
        families=families,
        default_provider=configs[0].name if configs else None,
    )


# Open-weight models: tokenizer files and template overheads -------------------


def _render(template: str, messages: list[dict[str, str]], special: Mapping[str, str]) -> str:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_generation_markers()]
    )
    # Templates written for transformers use these two extensions of Jinja.
    environment.globals["raise_exception"] = _template_error
    return environment.from_string(template).render(
        messages=messages, add_generation_prompt=False, **special
    )


def _template_error(message: str) -> None:
    raise ValueError(message)


def _generation_markers() -> type[Any]:
    """`{% generation %}…{% endgeneration %}`, an extension of transformers' templates that
    marks what the assistant writes (for assistant-only loss); rendering keeps its body."""
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.parser import Parser

    class GenerationMarkers(Extension):
        tags = {"generation"}  # noqa: RUF012 - Jinja reads it from the class

        def parse(self, parser: Parser) -> list[nodes.Node]:
            next(parser.stream)
            body: list[nodes.Node] = parser.parse_statements(
                ("name:endgeneration",), drop_needle=True
            )
            return body

    return GenerationMarkers


def counting_from_facts(facts: ModelFacts, tokenizer_path: Path, model: str) -> Counting:
    """The model's chat template measured once: the tokens it adds around a message and
    around a conversation, so counting stays overhead + the tokens of each text."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    name = f"{model} tokenizer.json"
    if not facts.chat_template:
        return Counting(
            tokenizer=f"hf:{tokenizer_path}", per_message=0, per_conversation=0, name=name
        )
    empty = _render(facts.chat_template, [], facts.special_tokens)
    text = "x"
    one = _render(facts.chat_template, [{"role": "user", "content": text}], facts.special_tokens)
    per_conversation = count(empty)
    per_message = count(one) - per_conversation - count(text) - count("user")
    return Counting(
        tokenizer=f"hf:{tokenizer_path}",
        per_message=max(0, per_message),
        per_name=0,
        per_conversation=per_conversation,
        name=name,
    )


class ProviderRegistry:
    """The live providers and the catalog, for one process (API or worker)."""

    def __init__(
        self,
        configs: Sequence[ProviderConfig],
        providers: Mapping[str, Provider],
        data_dir: Path,
        price_table: Path | None = None,
    ) -> None:
        self.configs = list(configs)
        self.providers = dict(providers)
        self._data_dir = data_dir
        self._price_table = price_table
        self._facts: dict[str, CatalogModel] = {}
        self.catalog = build_catalog(self.configs, price_table=price_table)

    @classmethod
    def from_settings(cls, settings: Settings) -> ProviderRegistry:
        configs = provider_configs(settings)
        providers = {config.name: build_provider(config) for config in configs}
        return cls(configs, providers, settings.data_dir, settings.price_table_path)

    @property
    def empty(self) -> bool:
        return not self.providers

    def get(self, name: str) -> Provider:
        provider = self.providers.get(name)
        if provider is None:
            raise Unavailable(
                f"Provider {name!r} is not configured here (PROVIDERS_FILE)",
                code="provider_not_configured",
            )
        return provider

    def default(self) -> Provider:
        if not self.configs:
            raise Unavailable(
                "No provider is configured (set OPENAI_API_KEY or PROVIDERS_FILE)",
                code="no_provider",
            )
        return self.get(self.configs[0].name)

    def missing_models(self) -> list[tuple[ProviderConfig, str]]:
        """Listed models the catalog cannot describe yet (their provider has not told)."""
        return [
            (config, model)
            for config in self.configs
            for model in config.models
            if model not in self.catalog.models
        ]

    async def learn_models(self) -> None:
        """Ask providers about their own models (tokenizer, limits); keep what they say
        under DATA_DIR so counting works in every process, then rebuild the catalog."""
        learned = False
        for config, model in self.missing_models():
            try:
                facts = await self.providers[config.name].describe_model(model)
            except ProviderError as exc:
                logger.warning(
                    "provider could not describe a model",
                    extra={"provider": config.name, "model": model, "error": exc.message},
                )
                continue
            if facts is None:
                continue
            folder = self._data_dir / "tokenizers" / config.name / model.replace("/", "_")
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / "tokenizer.json"
            path.write_bytes(facts.tokenizer_json)
            try:
                counting = counting_from_facts(facts, path, model)
            except Exception as exc:  # a tokenizer file or template we cannot use
                # The model stays undescribed (uploads for it answer 503), the rest go on.
                logger.warning(
                    "cannot count tokens for a provider's model",
                    extra={"provider": config.name, "model": model, "error": repr(exc)},
                )
                continue
            self._facts[model] = CatalogModel(
                id=model,
                provider=config.name,
                counting=counting,
                example_token_limit=facts.example_token_limit,
                limit_confirmed=True,
                price=None,
                owned_by=config.name,
            )
            learned = True
        if learned:
            self.catalog = build_catalog(self.configs, self._facts, price_table=self._price_table)

    async def spec(self, model: str) -> ModelSpec:
        """Counting and pricing for `model`, asking its provider first if needed."""
        try:
            return self.catalog.spec(model)
        except UnknownModel:
            if not any(name == model for _, name in self.missing_models()):
                raise
        await self.learn_models()
        try:
            return self.catalog.spec(model)
        except UnknownModel:
            raise Unavailable(
                f"The provider of {model!r} has not described its tokenizer yet; retry shortly",
                code="model_not_described",
                retry_after=5,
            ) from None

    def training_provider(self, model: str, today: date) -> tuple[CatalogModel, Provider]:
        entry = self.catalog.for_training(model, today)
        return entry, self.get(entry.provider)

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()
