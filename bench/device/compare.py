"""Run gateway_bench once per setting variant and print one table of them all, last.

For one device call of at most 10 minutes: each variant starts its own gateway (a setting is
read at startup) and runs the same levels; the rows come from each run's ``--json``. Example
(the GPU machine, after ``. bench/device/setup.sh``)::

    python3 bench/device/compare.py --out $OUT -- --engine personaplex --device cuda \\
        --kv-cache fp8 --levels 158,158 --seconds 30 --caller-procs 8 --workers 4 \\
        -- "" VOICEGATE_TWILIO_CUSHION_MS=10 VOICEGATE_TWILIO_CUSHION_MS=20

Between the two ``--``: gateway_bench's arguments, the same for every variant. After the
second: one variant per word, settings joined by ``,`` ("" = none).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "gateway_bench.py"


def _args(argv: list[str]) -> tuple[Path, list[str], list[str]]:
    if "--out" not in argv or argv.count("--") != 2:
        raise SystemExit(__doc__)
    out = Path(argv[argv.index("--out") + 1])
    first = argv.index("--")
    second = argv.index("--", first + 1)
    return out, argv[first + 1 : second], argv[second + 1 :]


def main() -> None:
    out, common, variants = _args(sys.argv[1:])
    out.mkdir(parents=True, exist_ok=True)
    table: list[tuple[str, dict[str, object]]] = []
    for k, variant in enumerate(variants):
        sets = [s for s in variant.split(",") if s]
        cmd = [sys.executable, str(BENCH), *common, "--json", str(out / f"v{k}.json")]
        for s in sets:
            cmd += ["--set", s]
        print(f"== variant {k}: {variant or '(none)'}", flush=True)
        run = subprocess.run(cmd, stderr=subprocess.STDOUT, stdout=subprocess.PIPE, text=True)
        (out / f"v{k}.log").write_text(run.stdout)
        if run.returncode != 0:
            print(run.stdout[-3000:], flush=True)
            continue
        for row in json.loads((out / f"v{k}.json").read_text()):
            table.append((variant or "(none)", row))
    print(
        "\nvariant | N | ok | gw CPU% | busiest loop% | holes/call-min | hole ms/call-min | "
        "sends late/skipped | slot o/u | loop probes >5/>10 ms | auto cushions (mean ms) | "
        "caller sends >5 ms late"
    )
    for variant, r in table:
        print(
            f"{variant} | {r['n']} | {r['ok']} | {r['gw_cpu_pct']:.0f} | {r['loop_cpu_pct']:.0f} | "
            f"{r['holes_per_call_min']:.2f} | {r['hole_ms_per_call_min']:.1f} | "
            f"{r['sends_late']:.0f}/{r['sends_skipped']:.0f} | "
            f"{r['slot_overruns']:.0f}/{r['slot_underruns']:.0f} | "
            f"{r['loop_lag_over_5ms']:.0f}/{r['loop_lag_over_10ms']:.0f} | "
            f"{r.get('cushions', 0):.0f} ({r.get('cushion_mean_ms', 0):.1f}) | "
            f"{r['caller_sends_late']}"
        )


if __name__ == "__main__":
    main()
