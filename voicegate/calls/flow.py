"""A persona's call flow: which keys, agent phrases and limits hand the caller on or hang up.

A full-duplex model has no tool-calling turn, so the decisions come from rules the persona's
author writes, on signals the Call already has:

* ``dtmf``: a key sequence (``"0"``, ``"*9"``) -> an action. Digits are matched as typed; a
  sequence that is the start of a longer rule waits up to ``DIGIT_TIMEOUT_MS`` for the rest.
* ``agent_says``: a phrase matched on the agent's own words *as the caller heard them* (the
  Call feeds the text of each played 80 ms tick, so a match is never ahead of the playout),
  case-insensitive, on word boundaries, across token pieces ("good" + "bye" -> "goodbye"). A
  word's end is known when the next piece starts a new word, or when the agent's text pauses.
  A transfer fires at the match; a hang-up fires only once the caller has also been silent for
  ``hangup_silence_ms`` after the phrase was played, so a caller who answers "wait, one more
  thing" keeps the call, and "say goodbye to high fees" in mid-sentence ends nothing unless the
  caller then stays quiet.
* ``caller_says``: a phrase matched the same way on the caller's words (the engine's caller
  STT; the Call feeds each word as the STT completes it, with its end on the call clock). A
  transfer fires at the match; a hang-up once the caller has then been silent as above.
* ``limits``: what ``max_duration`` and ``silence_timeout`` do (default: hang up as before).

Owns: ``FlowTrigger``, ``CallFlow`` (the rules, ``FlowRules``/``FlowAction``, are contracts: the
persona schema builds them). Pure: no I/O, no clock of its own (times are call ms passed in), no
asyncio. Imports the contracts only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from voicegate.contracts import FlowAction, FlowRules

__all__ = ["DIGIT_TIMEOUT_MS", "CallFlow", "FlowTrigger", "normalise"]

DIGIT_TIMEOUT_MS = 3000  # a partial key sequence is forgotten after this long without a key
MAX_HEARD_CHARS = 400  # the agent's recent words kept for matching
_NON_WORD = re.compile(r"[^\w']+")


@dataclass(frozen=True, slots=True)
class FlowTrigger:
    """A rule that fired: what set it off (``dtmf``, ``agent_says``, ``max_duration``,
    ``silence_timeout``), the digits or phrase, and the action."""

    trigger: str
    detail: str
    action: FlowAction


def normalise(text: str) -> str:
    """Lower case, words separated by single spaces, punctuation dropped ("Good-bye!" ->
    "good bye")."""
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


class CallFlow:
    """The rules applied to one call. Feed it keys and played agent text; ask ``poll``."""

    __slots__ = (
        "_digit_ms",
        "_digits",
        "_heard",
        "_is_word_open",
        "_pending_hangup",
        "_phrases",
        "_caller_heard",
        "_caller_phrases",
        "rules",
    )

    def __init__(self, rules: FlowRules) -> None:
        self.rules = rules
        self._digits = ""
        self._digit_ms = 0
        self._heard = ""  # normalised recent agent words, ending at a word boundary or not
        self._is_word_open = False  # the last word may still be continued by the next piece
        self._phrases = [(normalise(p), p, a) for p, a in rules.agent_says if normalise(p)]
        self._pending_hangup: tuple[FlowTrigger, int] | None = None  # (trigger, played at ms)
        self._caller_heard = ""  # normalised recent caller words, complete words only
        self._caller_phrases = [(normalise(p), p, a) for p, a in rules.caller_says if normalise(p)]

    # --- keys -----------------------------------------------------------------------------

    def on_dtmf(self, digit: str, now_ms: int) -> FlowTrigger | None:
        rules = self.rules.dtmf
        if not rules:
            return None
        if self._digits and now_ms - self._digit_ms > DIGIT_TIMEOUT_MS:
            self._digits = ""
        self._digit_ms = now_ms
        typed = self._digits + digit
        # the longest suffix of what was typed that is a rule or the start of one
        for start in range(len(typed)):
            tail = typed[start:]
            action = rules.get(tail)
            if action is not None and not any(k != tail and k.startswith(tail) for k in rules):
                self._digits = ""
                return FlowTrigger("dtmf", tail, action)
            if any(k.startswith(tail) for k in rules):
                self._digits = tail
                return None
        self._digits = ""
        return None

    def expire_digits(self, now_ms: int) -> FlowTrigger | None:
        """A sequence that is both a rule and the start of a longer one fires after the
        inter-digit timeout."""
        if self._digits and now_ms - self._digit_ms > DIGIT_TIMEOUT_MS:
            typed, self._digits = self._digits, ""
            action = self.rules.dtmf.get(typed)
            if action is not None:
                return FlowTrigger("dtmf", typed, action)
        return None

    # --- the agent's words, as played -----------------------------------------------------

    def on_agent_played(self, text: str, played_end_ms: int) -> FlowTrigger | None:
        """Text of one tick the caller has just heard (ending at ``played_end_ms``); returns a
        transfer that fires now. Hang-ups wait for ``poll`` (caller silence)."""
        if not self._phrases:
            return None
        if not text:
            if self._is_word_open:  # the agent paused: its last word is complete
                self._is_word_open = False
                return self._match(played_end_ms, closed=True)
            return None
        starts_word = not text[0].isalnum() or text[0] in " \u2581"
        piece = normalise(text.replace("\u2581", " "))
        if not piece:  # punctuation only: closes the word
            self._is_word_open = False
            return self._match(played_end_ms, closed=True)
        closes_previous = starts_word and self._is_word_open
        found = self._match(played_end_ms, closed=True) if closes_previous else None
        joiner = " " if (starts_word or not self._heard) else ""
        self._heard = (self._heard + joiner + piece).strip()[-MAX_HEARD_CHARS:]
        ends_word = not text[-1].isalnum()
        self._is_word_open = not ends_word
        if ends_word:
            found = found or self._match(played_end_ms, closed=True)
        return found

    def _match(self, played_end_ms: int, *, closed: bool) -> FlowTrigger | None:
        heard = self._heard
        for norm, phrase, action in self._phrases:
            if closed and (heard == norm or heard.endswith(" " + norm)):
                self._heard = ""  # matched words are used up
                trigger = FlowTrigger("agent_says", phrase, action)
                if action.kind == "hangup":
                    self._pending_hangup = (trigger, played_end_ms)
                    return None
                self._pending_hangup = None
                return trigger
        return None

    # --- the caller's words (caller STT) ---------------------------------------------------

    def on_caller_word(self, word: str, end_ms: int) -> FlowTrigger | None:
        """One complete caller word (ending at ``end_ms``); returns a transfer that fires now.
        Hang-ups wait for ``poll`` (the caller's silence after the phrase)."""
        if not self._caller_phrases:
            return None
        piece = normalise(word)
        if not piece:
            return None
        heard = (self._caller_heard + " " + piece).strip()[-MAX_HEARD_CHARS:]
        self._caller_heard = heard
        for norm, phrase, action in self._caller_phrases:
            if heard == norm or heard.endswith(" " + norm):
                self._caller_heard = ""
                trigger = FlowTrigger("caller_says", phrase, action)
                if action.kind == "hangup":
                    self._pending_hangup = (trigger, end_ms)
                    return None
                self._pending_hangup = None
                return trigger
        return None

    # --- time -----------------------------------------------------------------------------

    def poll(
        self, now_ms: int, is_caller_speaking: bool, last_caller_voice_ms: int
    ) -> FlowTrigger | None:
        """A hang-up phrase fires once the caller has been silent ``hangup_silence_ms`` since
        it was played; the caller speaking after it cancels it."""
        pending = self._pending_hangup
        if pending is None:
            return self.expire_digits(now_ms)
        trigger, played_ms = pending
        if is_caller_speaking or last_caller_voice_ms > played_ms:
            self._pending_hangup = None  # the caller answered: the conversation goes on
            return None
        if now_ms - played_ms >= self.rules.hangup_silence_ms:
            self._pending_hangup = None
            return trigger
        return None

    def on_limit(self, limit: str) -> FlowTrigger | None:
        """``max_duration`` or ``silence_timeout`` was reached: the persona's action, if any."""
        action = (
            self.rules.on_max_duration if limit == "max_duration" else self.rules.on_silence_timeout
        )
        return None if action is None else FlowTrigger(limit, "", action)
