"""The baseline for the API benchmark: one Litestar route, served like `python -m service`.

    HOST=127.0.0.1 PORT=8001 python -m bench.hello_app

Same framework, same server and the same `uvicorn.run` arguments as
`service/__main__.py` (one process, one event loop, uvloop and httptools when
installed, no access log, no proxy headers), so the gap between this and a
real route is what the route itself costs: auth, Redis, serialization,
middleware.
"""

from __future__ import annotations

import os

import uvicorn
from litestar import Litestar, get

from service.__main__ import event_loop, http_protocol


@get("/hello", sync_to_thread=False)
def hello() -> dict[str, str]:
    return {"hello": "world"}


def create_app() -> Litestar:
    return Litestar(route_handlers=[hello], logging_config=None, debug=False)


def main() -> None:
    uvicorn.run(
        create_app(),
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8001")),
        loop=event_loop(),
        http=http_protocol(),
        log_config=None,
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
