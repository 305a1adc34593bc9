"""Write or check `openapi/openapi.json`, the contract other teams generate clients from.

python -m service.openapi_export          # write the file
python -m service.openapi_export --check  # exit 1 if the committed file is stale
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path

from pydantic import SecretStr

from service.app import create_app
from service.settings import Settings

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "openapi" / "openapi.json"


def export() -> str:
    # The document must not depend on the environment it is exported in.
    settings = Settings(
        _env_file=None,
        service_api_keys=SecretStr("export:export-only-key-0123456789"),
        webhook_signing_secret=SecretStr("whsec_b3BlbmFwaS1leHBvcnQtc2lnbmluZy1rZXk="),
        redis_url="redis://127.0.0.1:6379/0",
    )
    app = create_app(settings)
    schema = app.openapi_schema.to_schema()
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the file differs")
    parser.add_argument("--path", type=Path, default=DEFAULT_PATH)
    args = parser.parse_args(argv)
    fresh = export()
    if args.check:
        current = args.path.read_text(encoding="utf-8") if args.path.exists() else ""
        if current != fresh:
            diff = difflib.unified_diff(
                current.splitlines(), fresh.splitlines(), "committed", "fresh export", lineterm=""
            )
            sys.stderr.write("\n".join(list(diff)[:60]) + "\n")
            sys.stderr.write(f"{args.path} is out of date: run `make openapi` and commit it\n")
            return 1
        return 0
    args.path.parent.mkdir(parents=True, exist_ok=True)
    args.path.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
