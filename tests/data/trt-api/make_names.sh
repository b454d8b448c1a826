#!/usr/bin/env bash
# Recreate the TensorRT Python API name lists in this folder (needs network access to PyPI).
# Every identifier-like string in the compiled bindings of a public TensorRT release.
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
make_list() {  # make_list DIST VERSION
    pip download --no-deps --only-binary=:all: "$1==$2" -d "$work/$1" >/dev/null
    unzip -p "$work/$1"/*.whl tensorrt_bindings/tensorrt.so > "$work/trt.so"
    strings "$work/trt.so" | grep -E '^[A-Za-z_][A-Za-z0-9_]{1,80}$' | sort -u > "tensorrt-$2.names"
}
make_list tensorrt_cu13_bindings 11.4.0.106
make_list tensorrt_cu12_bindings 10.16.1.11
