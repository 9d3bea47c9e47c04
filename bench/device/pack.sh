#!/usr/bin/env bash
# Pack what the GPU machine lacks to run `voicegate serve` and bench/gateway_bench.py there.
#
# Run here (network), from anywhere:  bash bench/device/pack.sh
# Writes, in the repo root (ignored by git):
#   .device_carry/runtime.tar.xz   every runtime wheel of voicegate the GPU image lacks, unpacked
#                                  into one folder and packed as one xz (much smaller than the
#                                  .whl files: wheels are zip-compressed one file at a time)
#   .device_carry/debs/*.deb       redis-server and the libraries it may miss there (Debian 12)
# bench/device/setup.sh unpacks both on the GPU machine. Versions are the ones installed in
# /work/main/.venv (VENV=... to use another). The image already has numpy, anyio, httpx, uvloop,
# prometheus-client, pyyaml, onnxruntime, safetensors, sentencepiece, torch, triton and the
# rest of its list (.library/device/KINDS.md); aiortc, av and their needs are left out: the
# bench runs with the WebRTC leg off (VOICEGATE_WEBRTC_ENABLED=false).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="${VENV:-/work/main/.venv}"
OUT="$REPO/.device_carry"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# the runtime closure of voicegate (+ uvicorn[standard]'s httptools and websockets) minus the
# image's packages and minus the WebRTC stack; typer/click/typing-extensions/annotated-doc are in
# the image too but small and version-sensitive (pydantic needs typing-extensions>=4.16), so they
# travel
PACKAGES=(
    fastapi starlette pydantic pydantic-core pydantic-settings typing-inspection
    typing-extensions annotated-types annotated-doc python-dotenv opentelemetry-api
    uvicorn httptools websockets redis twilio pyjwt aiohttp-retry sipmessage typer click
    pyloudnorm threadpoolctl
)
NO_DEPS_ONLY=(silero-vad)  # only its data/silero_vad.onnx is used

version_of() {  # the installed version of a distribution in $VENV
    "$VENV/bin/python" -c 'import sys; from importlib.metadata import version; print(version(sys.argv[1]))' "$1"
}

PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
mkdir -p "$WORK/wheels" "$WORK/site"
for name in "${PACKAGES[@]}" "${NO_DEPS_ONLY[@]}"; do
    spec="$name==$(version_of "$name")"
    echo "download $spec"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${PLATFORMS[@]}" -d "$WORK/wheels" "$spec"
done

for whl in "$WORK"/wheels/*.whl; do
    python3 -m zipfile -e "$whl" "$WORK/site"
done
# silero-vad: keep the one model file voicegate loads (the package's other models and its
# torch code are 10 MiB nobody here imports)
find "$WORK/site/silero_vad/data" -type f ! -name silero_vad.onnx ! -name __init__.py -delete
find "$WORK/site" -name __pycache__ -type d -prune -exec rm -rf {} +

rm -rf "$OUT"
mkdir -p "$OUT/debs"
tar -C "$WORK/site" -cf - . | xz -9 -T1 >"$OUT/runtime.tar.xz"

# redis-server 7 from Debian 12 and what it links that a CUDA image may not have
# (apt-cache depends redis-server redis-tools; ldd /usr/bin/redis-server)
(cd "$OUT/debs" && apt-get download -q redis-server redis-tools liblzf1 libjemalloc2 libatomic1 \
    libsystemd0 >/dev/null)

echo
ls -la "$OUT" "$OUT/debs"
du -sh "$OUT"
echo "wheels: $(ls "$WORK/wheels" | wc -l) ($(du -sh "$WORK/wheels" | cut -f1) as .whl)"
