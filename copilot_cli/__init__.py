"""Composition root of the `copilot` command: core commands + `serve` (api) + `eval` (harness).

It sits above copilot/, api/ and eval/ so the layering holds: api -> copilot, eval -> copilot, never the reverse.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from copilot.cli import app, err
from copilot.config import get_settings
from eval.cli import eval_app

app.add_typer(eval_app, name="eval")


@app.command()
def serve(host: Annotated[str, typer.Option(help="Interface to bind; keep 127.0.0.1 unless a proxy fronts it.")] = "",
          port: Annotated[int, typer.Option(help="TCP port.")] = 0) -> None:
    """Start the HTTP service with its web console (http://HOST:PORT/, API docs at /docs)."""
    import uvicorn

    from api.app import create_app

    settings = get_settings()
    host, port = host or settings.host, port or settings.port
    err.print(f"Moderation Copilot on [bold]http://{host}:{port}/[/bold] (console), API docs at http://{host}:{port}/docs")
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
