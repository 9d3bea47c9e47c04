from __future__ import annotations

from voicegate.cli import main

main()
