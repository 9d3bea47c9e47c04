"""Hot-reloaded personas and numbers: last good version kept, every broken edit reported.

Usage::

    store = PersonaStore(settings.personas_dir, registry=registry,
                         interval_s=settings.reload_interval_s, on_change=engine_reload)
    store.load()                      # first scan, synchronous (on_change runs for each persona)
    store.start()                     # polls on its own thread; on_change runs on that thread
    numbers = NumbersStore(settings.numbers_file, store, registry=registry)
    numbers.load(); numbers.start()
    persona = store.get(numbers.router.route(called))
    ...
    numbers.close(); store.close()

An edit is picked up on the next poll (``interval_s``, 0.5 s by default) and takes effect for
calls that start after it; calls in progress keep the persona they started with. A file that
fails to load within ``settle_s`` (default: one interval) of its last write is read once more
on the next poll before it is reported, so an editor caught half-way through writing in place
costs no false alarm. A broken edit
(a YAML error, a bad key, a missing clip, or ``on_change`` raising) keeps the last good version,
logs every problem as ``file:line:col: error: ...``, counts
``voicegate_persona_reload_errors_total{persona}``, sets ``voicegate_persona_broken{persona}``
to 1 and shows in ``/readyz`` details. The gateway stays ready while a last good version serves;
it is unready only when no persona at all is loaded, or the numbers default is not.

Owns: PersonaStore, NumbersStore. Imports loader/numbers/watch; never calls, legs or app.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from voicegate.errors import RoutingError, UnknownPersona
from voicegate.personas.loader import persona_files, read_persona_file
from voicegate.personas.numbers import Router, read_numbers
from voicegate.personas.problems import Problem
from voicegate.personas.schema import Persona, RecordingSpec
from voicegate.personas.tokens import TokenCounter, estimate_tokens
from voicegate.personas.watch import FileSignature, ReloadLoop, is_racy, signature

__all__ = ["NumbersStore", "OnPersonaChange", "PersonaStore"]

log = logging.getLogger("voicegate.personas")

OnPersonaChange = Callable[[str, Persona | None], None]
"""Called with (name, new persona) before a version is published, or (name, None) after a
persona's file is deleted. Runs on the caller of load()/poll() (the store's thread once started),
so it may block (``engine.load_persona``). Raising rejects the new version: the last good stays."""


@dataclass(slots=True)
class _FileState:
    path: Path
    sig: FileSignature | None = None
    voice_sig: FileSignature | None = None
    voice_path: Path | None = None
    attempt: str = ""  # hash of the bytes last read (YAML + clip signature)
    deferred: str = ""  # a failed attempt held back once: the file may be half-written
    problems: list[Problem] = field(default_factory=list)
    is_broken: bool = False
    broken_at: float = 0.0


def _read_hash(path: Path, voice_sig: FileSignature | None) -> str | None:
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    return hashlib.sha256(raw + repr(voice_sig).encode()).hexdigest()


class PersonaStore:
    """The personas of a folder, by name, reloaded on edits; ``get`` never touches the disk."""

    def __init__(
        self,
        personas_dir: Path,
        *,
        count_tokens: TokenCounter = estimate_tokens,
        registry: CollectorRegistry | None = None,
        interval_s: float = 0.5,
        on_change: OnPersonaChange | None = None,
        settle_s: float | None = None,
    ) -> None:
        self._dir = personas_dir
        # a file that fails to load within settle_s of its last write is read once more before
        # it is reported: an editor writing in place may have been caught half-way
        self._settle_ns = int((interval_s if settle_s is None else settle_s) * 1e9)
        self._count_tokens = count_tokens
        self._on_change = on_change
        self._personas: Mapping[str, Persona] = {}  # replaced whole, never mutated
        self._files: dict[Path, _FileState] = {}
        self._is_dir_missing = False
        self._has_loaded = False  # the first scan reports at once; later edits may settle
        self._poll_lock = threading.Lock()
        self._loop = ReloadLoop("persona-reload", interval_s, self.poll)
        registry = registry if registry is not None else CollectorRegistry()
        self._m_reloads = Counter(
            "voicegate_persona_reloads_total",
            "Persona versions loaded (first load and edits).",
            ["persona"],
            registry=registry,
        )
        self._m_errors = Counter(
            "voicegate_persona_reload_errors_total",
            "Persona files that failed to load (each broken version counts once).",
            ["persona"],
            registry=registry,
        )
        self._m_broken = Gauge(
            "voicegate_persona_broken",
            "1 while a persona's file is broken (its last good version, if any, still serves).",
            ["persona"],
            registry=registry,
        )
        self._m_loaded = Gauge(
            "voicegate_personas_loaded", "Personas ready for new calls.", registry=registry
        )

    # --- reading (any thread, never blocks) ---
    @property
    def personas_dir(self) -> Path:
        return self._dir

    def get(self, name: str) -> Persona:
        """The current version of persona ``name``; raises UnknownPersona."""
        try:
            return self._personas[name]
        except KeyError:
            known = ", ".join(sorted(self._personas)) or "none"
            raise UnknownPersona(f"no persona '{name}' is loaded (loaded: {known})") from None

    def has(self, name: str) -> bool:
        return name in self._personas

    def names(self) -> list[str]:
        return sorted(self._personas)

    def all(self) -> Mapping[str, Persona]:
        """A snapshot of every loaded persona by name."""
        return self._personas

    def problems(self) -> list[Problem]:
        """Every current problem (errors and warnings) of every file, in file order."""
        states = sorted(self._files.values(), key=lambda s: str(s.path))
        return [p for s in states for p in s.problems]

    def broken(self) -> dict[str, str]:
        """Broken files by persona name: the first error and whether a last good version serves."""
        out: dict[str, str] = {}
        for state in list(self._files.values()):
            if not state.is_broken:
                continue
            name = state.path.stem
            first = next((p for p in state.problems if p.is_error), None)
            fallback = "serving the last good version" if name in self._personas else "not loaded"
            out[name] = f"{first}; {fallback}" if first else fallback
        return out

    def readiness_check(self) -> str | None:
        """For ``Readiness.add``: unready only when no persona at all is loaded."""
        if self._personas:
            return None
        broken = self.broken()
        if broken:
            return "no persona loaded: " + "; ".join(broken.values())
        return f"no persona files in {self._dir}"

    def readiness_detail(self) -> dict[str, str]:
        """For ``Readiness.add_detail``: broken persona files (empty when all are fine)."""
        detail = self.broken()
        if self._is_dir_missing:
            detail[str(self._dir)] = "folder missing; keeping the loaded personas"
        return detail

    # --- reloading ---
    def load(self) -> list[Problem]:
        """Scan the folder now (blocking); returns every current problem."""
        self.poll()
        self._has_loaded = True
        return self.problems()

    def start(self) -> None:
        """Poll for edits on a daemon thread every ``interval_s``."""
        self._loop.start()

    def close(self) -> None:
        self._loop.close()

    def poll(self) -> bool:
        """Check the folder once; True when a persona was added, changed or removed."""
        with self._poll_lock:
            return self._poll()

    def _poll(self) -> bool:
        changed = False
        present: dict[str, Path] = {}
        if not self._dir.is_dir():
            # an unmounted volume or a folder swapped mid-deploy: deleting every persona would
            # take the gateway down, so keep what is loaded until the folder is back
            if not self._is_dir_missing:
                log.warning(
                    "personas folder %s is missing; keeping the %d loaded personas",
                    self._dir,
                    len(self._personas),
                )
            self._is_dir_missing = True
            return False
        self._is_dir_missing = False
        listed = persona_files(self._dir)
        for path in listed:
            name = path.stem
            if name in present:
                state = self._files.setdefault(path, _FileState(path))
                first = present[name].name
                state.problems = [
                    Problem(path, 1, 1, "error", f"persona '{name}' is also defined by {first}")
                ]
                self._mark_broken(state, new=not state.is_broken)
                continue
            present[name] = path
            try:
                changed |= self._check_file(path)
            except Exception:  # one odd file must not stop the others from reloading
                log.exception("persona %s: reload failed", path)
        for path in [p for p in self._files if p not in set(listed)]:
            state = self._files.pop(path)
            name = path.stem
            remaining = present.get(name)
            if remaining is not None:  # a duplicate went away; the other file still defines it
                self._m_broken.labels(name).set(int(self._files[remaining].is_broken))
                continue
            self._m_broken.labels(name).set(0)
            if name in self._personas:
                try:
                    self._notify(name, None)
                except Exception:  # the persona goes regardless: its file is gone
                    log.exception("persona %s: on_change failed for its removal", name)
                self._personas = {k: v for k, v in self._personas.items() if k != name}
                log.info("persona %s removed (%s deleted)", name, state.path)
                changed = True
        self._m_loaded.set(len(self._personas))
        return changed

    def _check_file(self, path: Path) -> bool:
        state = self._files.get(path)
        if state is None:
            state = self._files[path] = _FileState(path)
        sig, voice_sig = signature(path), signature(state.voice_path)
        if (
            sig == state.sig
            and voice_sig == state.voice_sig
            and not (is_racy(sig) or is_racy(voice_sig))
        ):
            return False
        attempt = _read_hash(path, voice_sig)
        state.sig, state.voice_sig = sig, voice_sig
        if attempt is None or attempt == state.attempt:
            return False
        state.attempt = attempt
        result = read_persona_file(path, self._dir, self._count_tokens)
        persona, problems = result.persona, result.problems
        state.problems = problems
        # watch the clip the file names now (even a missing one), so that adding, fixing or
        # editing only the WAV reloads too
        state.voice_path = result.clip
        state.voice_sig = signature(state.voice_path)
        if persona is None:
            is_young = sig is not None and time.time_ns() - sig[0] < self._settle_ns
            if self._has_loaded and is_young and state.deferred != attempt:
                state.deferred = attempt
                state.attempt, state.sig = "", None  # read it again on the next poll
                return False
            self._mark_broken(state, new=True)
            return False
        current = self._personas.get(persona.name)
        if current is not None and current.digest == persona.digest:
            self._mark_fixed(state)
            return False
        try:
            self._notify(persona.name, persona)
        except Exception as exc:
            state.problems = [
                *problems,
                Problem(path, 1, 1, "error", f"the engine refused this version: {exc}"),
            ]
            self._mark_broken(state, new=True)
            return False
        self._personas = {**self._personas, persona.name: persona}
        self._m_reloads.labels(persona.name).inc()
        self._mark_fixed(state)
        for warning in problems:
            log.warning("%s", warning)
        log.info(
            "persona %s %s (%d prompt tokens, voice %s)",
            persona.name,
            "reloaded" if current is not None else "loaded",
            persona.prompt_tokens,
            persona.voice,
        )
        return True

    def _notify(self, name: str, persona: Persona | None) -> None:
        if self._on_change is not None:
            self._on_change(name, persona)

    def _mark_broken(self, state: _FileState, *, new: bool) -> None:
        name = state.path.stem
        if new:
            self._m_errors.labels(name).inc()
            kept = "keeping the last good version" if name in self._personas else "not loaded"
            for problem in state.problems:
                log.warning("%s (persona %s %s)", problem, name, kept)
        if not state.is_broken:
            state.broken_at = time.time()
        state.is_broken = True
        self._m_broken.labels(name).set(1)

    def _mark_fixed(self, state: _FileState) -> None:
        if state.is_broken:
            log.info("persona %s: %s is fixed", state.path.stem, state.path)
        state.is_broken = False
        self._m_broken.labels(state.path.stem).set(0)


class NumbersStore:
    """The numbers file behind a Router, reloaded on edits and when the persona names change.

    A broken edit keeps the last good map (routes keep working), is logged with file:line:col,
    counts ``voicegate_numbers_reload_errors_total`` and sets ``voicegate_numbers_broken``.
    """

    def __init__(
        self,
        path: Path,
        personas: PersonaStore,
        *,
        registry: CollectorRegistry | None = None,
        interval_s: float = 0.5,
    ) -> None:
        self._path = path
        self._personas = personas
        self._router: Router | None = None
        self._problems: list[Problem] = []
        self._sig: FileSignature | None = None
        self._attempt: tuple[str, tuple[str, ...]] | None = None
        self._poll_lock = threading.Lock()
        self._loop = ReloadLoop("numbers-reload", interval_s, self.poll)
        registry = registry if registry is not None else CollectorRegistry()
        self._m_errors = Counter(
            "voicegate_numbers_reload_errors_total",
            "Versions of the numbers file that failed to load.",
            registry=registry,
        )
        self._m_broken = Gauge(
            "voicegate_numbers_broken",
            "1 while the numbers file is broken (the last good map, if any, still routes).",
            registry=registry,
        )

    @property
    def router(self) -> Router:
        """The current Router; raises RoutingError until a valid numbers file has loaded."""
        if self._router is None:
            raise RoutingError(f"no valid numbers file loaded from {self._path}")
        return self._router

    @property
    def is_loaded(self) -> bool:
        return self._router is not None

    def route(self, to: str) -> str:
        """Shortcut for ``router.route``."""
        return self.router.route(to)

    def overflow(self, to: str) -> str:
        """Shortcut for ``router.overflow`` ("" while no numbers file is loaded)."""
        router = self._router
        return router.overflow(to) if router is not None else ""

    def webhook(self, to: str, persona_url: str = "") -> str:
        """Shortcut for ``router.webhook`` (``persona_url`` while no numbers file is loaded)."""
        router = self._router
        return router.webhook(to, persona_url) if router is not None else persona_url

    def variables(self, to: str) -> dict[str, str]:
        """Shortcut for ``router.variables`` ({} while no numbers file is loaded)."""
        router = self._router
        return router.variables(to) if router is not None else {}

    def recording(self, to: str) -> tuple[RecordingSpec | None, RecordingSpec | None]:
        """Shortcut for ``router.recording`` ((None, None) while no numbers file is loaded)."""
        router = self._router
        return router.recording(to) if router is not None else (None, None)

    def problems(self) -> list[Problem]:
        return list(self._problems)

    def readiness_check(self) -> str | None:
        """Unready when no numbers map is loaded, or its default persona is not loaded."""
        if self._router is None:
            first = next((p for p in self._problems if p.is_error), None)
            return f"numbers file not loaded: {first}" if first else "numbers file not loaded"
        default = self._router.numbers.default
        if not self._personas.has(default):
            return f"default persona '{default}' of {self._path} is not loaded"
        return None

    def readiness_detail(self) -> str | None:
        first = next((p for p in self._problems if p.is_error), None)
        if first is None:
            return None
        return f"{first}; " + ("routing by the last good version" if self._router else "not loaded")

    def load(self) -> list[Problem]:
        self.poll()
        return self.problems()

    def start(self) -> None:
        self._loop.start()

    def close(self) -> None:
        self._loop.close()

    def poll(self) -> bool:
        """Reload when the file or the set of persona names changed; True when routes changed."""
        with self._poll_lock:
            return self._poll()

    def _poll(self) -> bool:
        sig = signature(self._path)
        names = tuple(self._names_on_disk())
        try:
            raw_hash = hashlib.sha256(self._path.read_bytes()).hexdigest()
        except OSError:
            raw_hash = "missing"
        attempt = (raw_hash, names)
        if sig == self._sig and attempt == self._attempt and not is_racy(sig):
            return False
        self._sig = sig
        if attempt == self._attempt:
            return False
        self._attempt = attempt
        numbers, problems = read_numbers(self._path, set(names), self._personas.personas_dir)
        self._problems = problems
        if numbers is None:
            self._m_errors.inc()
            self._m_broken.set(1)
            kept = "keeping the last good version" if self._router else "no routes loaded"
            for problem in problems:
                log.warning("%s (numbers: %s)", problem, kept)
            return False
        self._m_broken.set(0)
        changed = self._router is None or self._router.numbers != numbers
        if self._router is None:
            self._router = Router(numbers, self._personas.has)
        else:
            self._router.replace(numbers)
        if changed:
            log.info(
                "numbers %s loaded: %d numbers, %d SIP users, default %s",
                self._path,
                len(numbers.numbers),
                len(numbers.sip_users),
                numbers.default,
            )
        return changed

    def _names_on_disk(self) -> list[str]:
        # the files present, not only the loaded personas: a persona with a broken edit is
        # still a valid route target (it serves its last good version, or will once fixed)
        return sorted(
            {p.stem for p in persona_files(self._personas.personas_dir)}
            | set(self._personas.names())
        )
