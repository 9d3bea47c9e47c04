"""The ``voicegate`` command (typer): serve, demo, personas, call, bench, webhooks."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from voicegate.config import Settings
from voicegate.contracts import TokenCounter
from voicegate.personas.cli import build_personas_app
from voicegate.personas.tokens import estimate_tokens

__all__ = ["app", "main"]

app = typer.Typer(
    help="VoiceGate: phone calls into a full-duplex voice model.", no_args_is_help=True
)


def _settings_help() -> str:
    lines = ["Settings (environment variables):\n\n"]
    for name, info in Settings.model_fields.items():
        default = info.default
        lines.append(f"VOICEGATE_{name.upper()} (default {default!r}): {info.description}\n\n")
    return "".join(lines)


@app.command(epilog=_settings_help())
def serve(
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Edge worker processes (default VOICEGATE_EDGE_WORKERS, 1: one process).",
        ),
    ] = None,
) -> None:
    """Run the gateway (HTTP, Twilio, WebRTC, SIP) until SIGTERM/SIGINT."""
    import uvicorn

    from voicegate.app import SERVER_OPTIONS, create_app

    # uvicorn re-raises the signal that stopped it once it has shut down, into the handler that
    # was there before it started: with the default one a drained SIGTERM killed the process
    # (status 143), which Docker and Kubernetes record as a failure. A drain is a clean stop.
    signal.signal(signal.SIGTERM, _stopped_by_sigterm)
    settings = Settings()
    if workers is not None:
        settings = settings.model_copy(update={"edge_workers": workers})
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.edge_workers > 1:
        from voicegate.edge.serve import serve_workers

        # the workers read their settings from the environment: pass the count on
        os.environ["VOICEGATE_EDGE_WORKERS"] = str(settings.edge_workers)
        serve_workers(settings, settings.edge_workers)
        return
    app = create_app(settings)
    app.state.settle_gc = True  # a serving process: startup's objects leave the GC's walk
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        **SERVER_OPTIONS,
    )


def _prompt_token_counter(model_dir: Path | None) -> TokenCounter:
    """The release tokenizer's count when the model folder has it, else the personas' estimate
    (the engine, and torch with it, is imported only when a model folder is set)."""
    if model_dir is None:
        return estimate_tokens
    from voicegate.engine.tokenizer import release_token_counter

    return release_token_counter(model_dir) or estimate_tokens


app.add_typer(build_personas_app(_prompt_token_counter), name="personas")

bench_app = typer.Typer(help="Benchmarks that print tables (never part of the tests).")
app.add_typer(bench_app, name="bench")


@bench_app.command("audio")
def bench_audio(
    chunks: Annotated[int, typer.Option(min=100, help="20 ms chunks per repeat.")] = 2000,
    repeats: Annotated[int, typer.Option(min=1, help="Repeats (the median is shown).")] = 5,
) -> None:
    """CPU microseconds per 20 ms chunk: G.711, each resampler direction, the caller VAD."""
    from voicegate.audio._bench import main as audio_bench

    audio_bench(chunks, repeats)


@bench_app.command(
    "engine", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def bench_engine(ctx: typer.Context) -> None:
    """GPU: our engine and the reference runtime side by side (bench/engine_bench.py; pass
    its options after the command, e.g. `voicegate bench engine -- --help`)."""
    import runpy
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "bench" / "engine_bench.py"
    if not script.is_file():
        raise typer.BadParameter(f"{script} not found: run from a checkout of the repository")
    sys.argv = [str(script), *ctx.args]
    runpy.run_path(str(script), run_name="__main__")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Where to write what the caller heard.")] = Path(
        "demo_agent.wav"
    ),
    caller_wav: Annotated[
        Path | None, typer.Option(help="Caller audio (mono 16-bit WAV); default: the bundled one.")
    ] = None,
    seconds: Annotated[
        float, typer.Option(min=1.0, max=60.0, help="Most caller audio to play.")
    ] = 8.0,
    caller_words: Annotated[
        bool,
        typer.Option(help="Also run the tiny caller STT (random weights): transcript.caller."),
    ] = False,
) -> None:
    """One whole call on this machine: local Redis, tiny engine, the real Twilio path (simulated)."""
    from voicegate.demo import run_demo

    logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("voicegate.personas").setLevel(logging.ERROR)  # prompt-length advice
    raise typer.Exit(run_demo(out, caller_wav, seconds, caller_words=caller_words))


@app.command("call")
def call_offline(
    persona: Annotated[str, typer.Option(help="Persona name (from VOICEGATE_PERSONAS_DIR).")],
    in_wav: Annotated[Path, typer.Option("--in", help="Caller audio: a WAV at any rate.")],
    out: Annotated[Path, typer.Option(help="Where to write the agent's audio (24 kHz WAV).")],
    transcript: Annotated[Path, typer.Option(help="Where to write the agent's timed text (JSON).")],
    seed: Annotated[int, typer.Option(help="Sampling seed (same seed, same output).")] = 0,
) -> None:
    """A whole conversation offline, no telephony: caller WAV in, agent WAV and text out."""
    from voicegate.engine import create_engine
    from voicegate.engine.offline import read_caller_wav, run_offline_call, write_call_outputs
    from voicegate.personas import PersonaStore

    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    store = PersonaStore(settings.personas_dir)
    store.load()
    prompt = store.get(persona).to_prompt()
    engine = create_engine(settings, offline=True, seed=seed)
    engine.start()
    try:
        engine.load_persona(prompt)
        result = run_offline_call(engine, prompt.key, read_caller_wav(in_wav), seed=seed)
    finally:
        engine.close()
    write_call_outputs(result, out, transcript)
    typer.echo(
        f"{out}: {len(result.pcm) / 24000:.1f} s of agent audio; {transcript}: {result.text!r}"
    )


webhooks_app = typer.Typer(help="Post-call webhooks (delivered by the running gateways).")
app.add_typer(webhooks_app, name="webhooks")


@webhooks_app.command("replay")
def webhooks_replay(
    call_id: Annotated[str, typer.Argument(help="The call whose report to send again.")],
    url: Annotated[
        str, typer.Option(help="Send here instead of the stored URL (needed if none is stored).")
    ] = "",
) -> None:
    """Send one call's post-call report again, now, once (same body and idempotency key, signed
    now with VOICEGATE_WEBHOOK_SECRET); exit 1 unless the receiver answered 2xx."""
    import asyncio

    from voicegate.webhooks import replay

    settings = Settings()
    if not settings.webhook_secret:
        raise typer.BadParameter("VOICEGATE_WEBHOOK_SECRET is not set: reports are signed with it")
    try:
        result = asyncio.run(
            replay(
                settings.redis_url,
                call_id,
                secret=settings.webhook_secret,
                url=url,
                timeout_s=settings.webhook_timeout_s,
                retention_s=settings.events_retention_s,
            )
        )
    except LookupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    attempt = result.attempt
    if attempt.ok:
        typer.echo(f"{call_id}: delivered to {result.url} (HTTP {attempt.status})")
        return
    typer.echo(f"{call_id}: {result.url} did not take it: {attempt.error}", err=True)
    raise typer.Exit(1)


def _stopped_by_sigterm(sig: int, frame: FrameType | None) -> None:
    """SIGTERM outside uvicorn's own handler (after its shutdown, or before it started): exit 0."""
    raise SystemExit(0)


def main() -> None:
    app()
