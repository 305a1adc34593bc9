"""The providers' wire client takes its proxy from the usual environment variables."""

from __future__ import annotations

import pytest

from service.providers.wire import Wire


@pytest.fixture(autouse=True)
def no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_no_proxy_variables_means_a_direct_connection() -> None:
    assert Wire("https://api.openai.com/v1", timeout=5).proxy is None


def test_the_proxy_for_the_base_urls_scheme_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://plain.internal:3128")
    assert Wire("https://api.openai.com/v1", timeout=5).proxy == "http://proxy.internal:3128"
    assert Wire("http://trainer.internal:8000/v1", timeout=5).proxy == (
        "http://plain.internal:3128"
    )


def test_hosts_in_no_proxy_connect_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,.openai.azure.com")
    assert Wire("https://res.openai.azure.com/openai/v1", timeout=5).proxy is None
    assert Wire("https://api.openai.com/v1", timeout=5).proxy == "http://proxy.internal:3128"
