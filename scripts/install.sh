#!/usr/bin/env bash
# Install VoiceGate and everything it needs on a Debian/Ubuntu machine (run as root or with sudo).
#   bash scripts/install.sh          # the gateway, the demo's Redis, the test peers
# Creates .venv/ in the checkout; activate it with `. .venv/bin/activate`.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
# redis-server: events (and the demo); sip-tester + baresip: SIP peers, kamailio: the SBC example
# in front of the SIP leg (tests run their own; the package's service would take port 5060, so it is
# stopped and disabled below); chromium: WebRTC tests; iproute2: `ip netns` for the fleet test;
# ffmpeg libs come with aiortc's av wheel.
$SUDO apt-get install -y --no-install-recommends \
    redis-server sip-tester baresip kamailio chromium chromium-driver espeak-ng sox ca-certificates \
    iproute2
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now kamailio 2>/dev/null || true; fi
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first, pinned: 2.13.0 is the CPU build on this disk; a bare `torch` would fetch a CUDA build.
python -m pip install torch==2.13.0
python -m pip install -e '.[test]'
# The parity oracle (tests only). Its own pins (torch<2.10) would break the runtime: --no-deps.
python -m pip install --no-deps moshi==0.2.13
echo "installed: . .venv/bin/activate && voicegate demo"
