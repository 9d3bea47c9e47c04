"""The ``voicegate`` command (typer): serve, demo, personas, call, bench."""

from __future__ import annotations

import logging

import typer

from voicegate.config import Settings
from voicegate.personas.cli import personas_app

__all__ = ["app", "main"]

app = typer.Typer(help="VoiceGate: phone calls into a full-duplex voice model.", no_args_is_help=True)


def _settings_help() -> str:
    lines = ["Settings (environment variables):\n\n"]
    for name, info in Settings.model_fields.items():
        default = info.default
        lines.append(f"VOICEGATE_{name.upper()} (default {default!r}): {info.description}\n\n")
    return "".join(lines)


@app.command(epilog=_settings_help())
def serve() -> None:
    """Run the gateway (HTTP, Twilio, WebRTC, SIP) until SIGTERM/SIGINT."""
    import uvicorn

    from voicegate.app import create_app

    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


app.add_typer(personas_app, name="personas")


def main() -> None:
    app()
