"""The HTTP floor of the control plane's stack: uvicorn with the settings `rrm server` gives it
(`rrm.server.app.uvicorn_options`: uvloop and httptools where installed, proxy headers, keep-alive 75 s,
no access log) serving an ASGI app that reads each request's body and answers 204, nothing else. What a
request costs here no endpoint of the control plane can go below.

    .venv/bin/python -m benchmarks.bare_asgi --port 8080
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.types import Receive, Scope, Send

from rrm.server.app import uvicorn_options
from rrm.server.settings import ServerSettings


async def answer_204(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body", False):
        pass
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.bare_asgi", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    options = uvicorn_options(ServerSettings(port=args.port, log_level="warning"))
    config = uvicorn.Config(answer_204, **options, lifespan="off")
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
