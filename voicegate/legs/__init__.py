"""The legs: one package per way a call arrives (``twilio``, ``sip``, ``webrtc``).

A leg turns its protocol into caller audio (16-bit PCM at its own rate) plus DTMF and hang-ups,
and plays the agent's audio it pulls from its Call. It knows the rest of the gateway only
through ``voicegate.contracts`` (``CallAdmission``, ``CallLike``, ``PersonaRouter``, and a
``LegReporter`` for what it reports itself) and may import ``voicegate.audio``; never the
engine, the Call or the event writer (tests/legs/test_legs_import_rule.py checks it).
"""
