#!/usr/bin/env bash
# The device check on one GPU (H100/H200), at most 8 minutes: the parity tests at the highest precision, W1, then
# bert-base and bert-large in bf16 beside transformers on the same GPU, with MFU. Everything lands in
# OUT_DIR/device_check.json (benchmarks/device_check.py says what each part runs).
#
#   bash benchmarks/device_check.sh [OUT_DIR]     (from the repository root)
#
# It runs from the source tree (PYTHONPATH=src) on whatever Python holds JAX with CUDA, PyTorch with CUDA and
# transformers: `pip install -e ".[cuda,test]"` plus a CUDA build of torch, or a machine's own image. The data come
# from $SHARED (default ../shared/data): wikitext-2/ and bert-base-uncased/. For a machine that gets only the
# repository, copy them into the ignored folder .device-data/ and set SHARED=.device-data:
#   mkdir -p .device-data && cp -r ../shared/data/wikitext-2 ../shared/data/bert-base-uncased .device-data/
set -u
OUT=${1:-device-check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.csv" 2>&1 || true
exec timeout 480 "${PYTHON:-python3}" benchmarks/device_check.py --out "$OUT" --shared "${SHARED:-../shared/data}"
