"""A webhook receiver for trying the service on one machine: it checks every
delivery's Standard Webhooks signature and prints one line per event.

    uv run python scripts/webhook-receiver.py --port 9000 --secret whsec_...

Answers 204 to a delivery whose signature verifies, 400 to one that does not
(the service then retries it). With --until TYPE it exits 0 after the first
verified event of that type (for scripts that wait on a job).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--secret", required=True, help="the whsec_… secret deliveries are signed with"
    )
    parser.add_argument("--until", help="exit after the first verified event of this type")
    args = parser.parse_args()
    verifier = Webhook(args.secret)
    done = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {name.lower(): value for name, value in self.headers.items()}
            try:
                event = verifier.verify(body, headers)
            except WebhookVerificationError as exc:
                print(f"REJECTED {headers.get('webhook-id')}: {exc}", flush=True)  # noqa: T201
                self.send_response(400)
                self.end_headers()
                return
            data = event.get("data") or {}
            print(  # noqa: T201
                f"verified {event['type']} {event['id']}: "
                + json.dumps(
                    {k: data.get(k) for k in ("id", "status", "fine_tuned_model") if k in data},
                    ensure_ascii=False,
                ),
                flush=True,
            )
            self.send_response(204)
            self.end_headers()
            if args.until and event["type"] == args.until:
                done.set()

        def log_message(self, *_args: object) -> None:
            return

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"receiving webhooks on http://{args.host}:{args.port}/", flush=True)  # noqa: T201
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
