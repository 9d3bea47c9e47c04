"""Persona editing for the page: validate YAML text as ``voicegate personas validate`` does, save it
atomically keeping the previous version, and hot-reload it into the running gateway.

Usage::

    editor = PersonaEditor(store, display_dir=settings.personas_dir,
                           count_tokens=count_tokens)
    problems = editor.validate("bank_teller", text)        # blocking: run it off the loop
    result = await editor.save("bank_teller", text)         # SaveResult(ok, problems, ...)

``validate`` writes the text to a private temporary file of the persona's name and reads it with
the personas loader (voice clips resolved in the real personas folder), so the messages, lines
and columns are exactly the CLI's; the file shown is ``display_dir/<name>.yaml``.

``save`` never writes a persona with an error. A valid one is written to a hidden temporary
file in the personas folder, fsynced and renamed over the old file (readers see the old or the
new file, never half of one); the old file is first copied to ``.versions/<name>/<UTC time>.yaml``
(the newest ``KEEP_VERSIONS`` are kept). Then the store polls at once, so the next call gets
the new version. If the store or the engine refuses it all the same (e.g. a prompt longer than
the model's context), the previous file is put back and the problems are returned.

Owns: PersonaEditor, SaveResult. Imports personas only; file I/O, no HTTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from voicegate.personas.loader import PERSONA_SUFFIXES, read_persona_file
from voicegate.personas.problems import Problem, has_errors
from voicegate.personas.schema import NAME_PATTERN, Persona
from voicegate.personas.tokens import TokenCounter, estimate_tokens

__all__ = ["KEEP_VERSIONS", "MAX_PERSONA_BYTES", "PersonaEditor", "SaveResult", "VERSIONS_DIR"]

VERSIONS_DIR = ".versions"
KEEP_VERSIONS = 20
MAX_PERSONA_BYTES = 64 * 1024


class Store(Protocol):
    """What the editor needs of ``voicegate.personas.PersonaStore``."""

    @property
    def personas_dir(self) -> Path: ...

    def poll(self) -> bool: ...

    def has(self, name: str) -> bool: ...

    def get(self, name: str) -> Persona: ...

    def problems(self) -> list[Problem]: ...


@dataclass(frozen=True, slots=True)
class SaveResult:
    """What a save did: ``ok`` when the new version is written and serving."""

    ok: bool
    problems: list[Problem]
    file: Path | None = None
    backup: Path | None = None
    detail: str = ""
    warnings: list[Problem] = field(default_factory=list)


def check_name(name: str) -> str | None:
    """None for a valid persona name, else why not."""
    if NAME_PATTERN.match(name):
        return None
    return (
        f"'{name[:80]}' is not a persona name: use lowercase letters, digits, '_' and '-' "
        "(at most 64, starting with a letter or digit)"
    )


class PersonaEditor:
    """Validate, read and save persona files of one store's folder."""

    def __init__(
        self,
        store: Store,
        *,
        display_dir: Path | None = None,
        count_tokens: TokenCounter = estimate_tokens,
    ) -> None:
        self._store = store
        self._dir = store.personas_dir
        self._display_dir = display_dir if display_dir is not None else self._dir
        self._count_tokens = count_tokens
        self._lock = asyncio.Lock()

    # --- reading -----------------------------------------------------------------------------

    def file_of(self, name: str) -> Path:
        """The file that defines ``name`` (an existing .yaml/.yml), else ``<name>.yaml``."""
        for suffix in PERSONA_SUFFIXES:
            path = self._dir / f"{name}{suffix}"
            if path.is_file():
                return path
        return self._dir / f"{name}.yaml"

    def read(self, name: str) -> str | None:
        """The persona's YAML text, or None when it has no file."""
        path = self.file_of(name)
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def versions(self, name: str) -> list[Path]:
        """Saved previous versions of ``name``, oldest first."""
        folder = self._dir / VERSIONS_DIR / name
        try:
            return sorted(p for p in folder.iterdir() if p.suffix == ".yaml")
        except OSError:
            return []

    # --- validating --------------------------------------------------------------------------

    def validate(self, name: str, text: str) -> list[Problem]:
        """Every problem of ``text`` as persona ``name`` (blocking: file I/O, tokenizer)."""
        display = self._display_dir / self.file_of(name).name
        bad_name = check_name(name)
        if bad_name is not None:
            return [Problem(display, 1, 1, "error", bad_name)]
        raw = text.encode("utf-8")
        if len(raw) > MAX_PERSONA_BYTES:
            return [
                Problem(
                    display,
                    1,
                    1,
                    "error",
                    f"persona file of {len(raw)} bytes exceeds {MAX_PERSONA_BYTES}",
                )
            ]
        with tempfile.TemporaryDirectory(prefix="voicegate-persona-") as tmp:
            path = Path(tmp) / display.name
            path.write_bytes(raw)
            result = read_persona_file(path, self._dir, self._count_tokens)
        return [_moved(p, display) for p in result.problems]

    # --- saving ------------------------------------------------------------------------------

    async def save(self, name: str, text: str) -> SaveResult:
        """Validate and, when valid, write atomically, keep the old version, and reload now."""
        problems = await asyncio.to_thread(self.validate, name, text)
        if has_errors(problems):
            return SaveResult(False, problems, detail="not saved: the persona has errors")
        async with self._lock:
            return await asyncio.to_thread(self._save_valid, name, text, problems)

    def _save_valid(self, name: str, text: str, problems: list[Problem]) -> SaveResult:
        path = self.file_of(name)
        raw = text.encode("utf-8")
        try:
            previous: bytes | None = path.read_bytes()
        except FileNotFoundError:
            previous = None
        backup = self._keep_version(name, previous) if previous is not None else None
        _write_atomically(path, raw)
        self._store.poll()
        if self._is_serving(name, raw):
            return SaveResult(True, [], path, backup, "saved and loaded", problems)
        # valid YAML the store or the engine refused all the same: put the old file back
        refused = [p for p in self._store.problems() if p.file == path and p.is_error]
        if previous is None:
            path.unlink(missing_ok=True)
        else:
            _write_atomically(path, previous)
        self._store.poll()
        display = self._display_dir / path.name
        shown = [_moved(p, display) for p in refused] or [
            Problem(display, 1, 1, "error", "the gateway did not load this version")
        ]
        return SaveResult(False, shown, None, backup, "not kept: the gateway refused it")

    def _is_serving(self, name: str, raw: bytes) -> bool:
        if not self._store.has(name):
            return False
        # the loader's digest covers the YAML bytes and then the clip's bytes (if any)
        persona = self._store.get(name)
        digest = hashlib.sha256(raw)
        if persona.voice_path is not None:
            try:
                digest.update(persona.voice_path.read_bytes())
            except OSError:
                return False
        return persona.digest == digest.hexdigest()

    def _keep_version(self, name: str, previous: bytes) -> Path:
        folder = self._dir / VERSIONS_DIR / name
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        path = folder / f"{stamp}-{time.time_ns() % 1_000_000_000:09d}.yaml"
        _write_atomically(path, previous)
        for old in self.versions(name)[:-KEEP_VERSIONS]:
            old.unlink(missing_ok=True)
        return path


def _moved(problem: Problem, file: Path) -> Problem:
    return Problem(
        file, problem.line, problem.col, problem.severity, problem.message, problem.suggestion
    )


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a hidden temporary file in its folder, fsync and rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
