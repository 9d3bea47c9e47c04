#!/usr/bin/env bash
# Unpack what bench/device/pack.sh carried, on the GPU machine, at the start of each command.
#
# Source it or run it; the bench's command line is the usual way:
#   . bench/device/setup.sh && python3 bench/gateway_bench.py --engine personaplex ...
# (sourced, its exports stay; run with bash, it only checks, so source it.)
#
#   .device_carry/runtime.tar.xz -> $SITE (/tmp/site): the Python packages the image lacks
#   .device_carry/debs/*.deb     -> $REDIS_ROOT (/tmp/redis) with `dpkg -x` (never into /), and
#                                   $REDIS_ROOT/bin/redis-server: a wrapper that runs the
#                                   extracted binary with only the libraries the host lacks
# Exports PYTHONPATH=$SITE:<repo root> and PATH=$REDIS_ROOT/bin:$PATH (voicegate.demo.LocalRedis
# finds redis-server on PATH), then checks the imports and `redis-server --version`.
# Idempotent: a second run in the same machine skips what is already unpacked.

_vg_setup() {
    local repo carry site redis_root
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    carry="${CARRY_DIR:-$repo/.device_carry}"
    site="${SITE:-/tmp/site}"
    redis_root="${REDIS_ROOT:-/tmp/redis}"
    if [ ! -f "$carry/runtime.tar.xz" ]; then
        echo "setup.sh: $carry/runtime.tar.xz is missing: run bench/device/pack.sh here and" \
            "carry .device_carry" >&2
        return 1
    fi
    if [ ! -f "$site/.unpacked" ]; then
        mkdir -p "$site"
        tar -C "$site" -xJf "$carry/runtime.tar.xz" || return 1
        touch "$site/.unpacked"
    fi
    if [ ! -f "$redis_root/.unpacked" ]; then
        mkdir -p "$redis_root/bin" "$redis_root/lib-missing"
        local deb
        for deb in "$carry"/debs/*.deb; do
            dpkg -x "$deb" "$redis_root" || return 1
        done
        # link only the libraries the host cannot resolve itself (a bundled libc-level library
        # would shadow the host's own); twice, for what the first ones need in turn
        local pass lib found
        for pass in 1 2; do
            while read -r lib; do
                found="$(find "$redis_root/usr/lib" "$redis_root/lib" -name "$lib" 2>/dev/null | head -1)"
                if [ -n "$found" ]; then
                    ln -sf "$found" "$redis_root/lib-missing/$lib"
                else
                    echo "setup.sh: redis-server needs $lib, which neither the host nor the" \
                        "carried debs have" >&2
                fi
            done < <(LD_LIBRARY_PATH="$redis_root/lib-missing" ldd "$redis_root/usr/bin/redis-server" \
                | awk '/not found/ {print $1}')
        done
        cat >"$redis_root/bin/redis-server" <<WRAP
#!/bin/sh
LD_LIBRARY_PATH="$redis_root/lib-missing\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$redis_root/usr/bin/redis-server" "\$@"
WRAP
        chmod +x "$redis_root/bin/redis-server"
        touch "$redis_root/.unpacked"
    fi
    export PYTHONPATH="$site:$repo${PYTHONPATH:+:$PYTHONPATH}"
    export PATH="$redis_root/bin:$PATH"
    export PYTHONUNBUFFERED=1
    redis-server --version || return 1
    "${PYTHON:-python3}" -c 'import fastapi, redis, twilio, sipmessage, uvicorn, voicegate.app; print("setup.sh: imports ok:", voicegate.app.__file__)'
}

_vg_setup
_vg_rc=$?
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    echo "setup.sh: run, not sourced: its exports are gone; use '. bench/device/setup.sh'" >&2
    exit $_vg_rc
fi
return $_vg_rc
