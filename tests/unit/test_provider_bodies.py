"""The JSON bodies sent to OpenAI-style providers."""

from __future__ import annotations

import json

from service.providers.openai.client import _json_bytes


def test_a_body_is_utf8_json_with_its_text_unescaped() -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "西村 🍣 \u2028"}]}
    sent = _json_bytes(body)
    assert "西村 🍣".encode() in sent
    assert json.loads(sent) == body


def test_a_value_orjson_refuses_is_still_sent() -> None:
    body = {"seed": 2**70, "temperature": 0.5}
    assert json.loads(_json_bytes(body)) == body
