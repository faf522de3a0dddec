#!/usr/bin/env bash
# Every GPU check of rlzoo in one command, for a lent GPU machine (the device tool) or your own:
#   the gpu-marked tests (bf16 path, fp16 over two stages, sampling log-probs, GRPO vs PPO memory),
#   the memory benchmark's table, a two-stage run (SFT then GRPO) with its step times, and the same
#   two stages, shorter, sharded with FSDP2 (parallel=fsdp, NCCL) against the plain run, and rlzoo
#   beside TRL (GRPO on SmolLM2-135M in bf16: step time, phases, generated tokens/s, CUDA peak).
# It prints the figures; docs/distributed.md records them with the card's name.
#
# On a machine where rlzoo is installed (bash scripts/setup.sh) it uses .venv. On the device
# machine (Python with torch, transformers and accelerate, no network) it installs rlzoo and the
# wheels carried in .whl/ (bash scripts/gpu_wheels.sh fetches them) into /tmp/site first.
set -uo pipefail
cd "$(dirname "$0")/.."
export TQDM_DISABLE=1 PYTHONUNBUFFERED=1
if [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
else
  PY=python3
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  $PY -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site . || exit 1
  # the installed rlzoo (with rlzoo.algorithms), not the source folder, even in subprocesses
  export PYTHONPATH=/tmp/site PYTHONSAFEPATH=1
fi
$PY - <<'PY'
import torch, transformers, accelerate
print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  transformers {transformers.__version__}  accelerate {accelerate.__version__}")
PY
status=0
echo "== gpu tests"
$PY -m pytest -q -m gpu -s -p no:cacheprovider tests/test_gpu.py || status=1
echo "== memory: one GRPO step vs one PPO step (27.5M-parameter model, 16 sequences x 32 tokens)"
$PY benchmarks/memory.py --device cuda || status=1
echo "== two stages on the GPU: SFT 200 steps, GRPO 15 steps (quickstart settings)"
out=$(mktemp -d)
$PY -m rlzoo train configs/quickstart.yaml sft.steps=200 grpo.steps=15 mixed_precision=bf16 output_dir="$out" \
    logging.progress=false || status=1
$PY - "$out" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(f"{sys.argv[1]}/metrics.jsonl")]
for stage in ("sft", "grpo"):
    t = [r["time/step"] for r in rows if r.get("stage") == stage and "time/step" in r]
    print(f"{stage}: {len(t)} steps, median step {statistics.median(t):.3f} s")
for s in json.load(open(f"{sys.argv[1]}/summary.json"))["stages"]:
    print(s["name"], "wall", s["wall_seconds"], "s, peak", s["peak_memory_mb"], "MB, accuracy", round(100 * s["eval"]["accuracy"], 1))
PY
echo "== FSDP2 on the GPU: SFT 20 steps, GRPO 3 steps, parallel=fsdp (torchrun, NCCL) vs the plain run, bf16"
short="configs/quickstart.yaml sft.steps=20 grpo.steps=3 mixed_precision=bf16 logging.progress=false eval.samples=0"
plain=$(mktemp -d); sharded=$(mktemp -d)
$PY -m rlzoo train $short output_dir="$plain" || status=1
$PY -m torch.distributed.run --standalone --nproc_per_node "$(nvidia-smi -L | wc -l)" -m rlzoo train $short parallel=fsdp \
    output_dir="$sharded" || status=1
$PY - "$plain" "$sharded" <<'PY'
import json, sys
from safetensors.torch import load_file
for stage in ("sft", "grpo"):
    a, b = (load_file(f"{d}/{stage}/final/model.safetensors") for d in sys.argv[1:3])
    print(stage, "max weight difference fsdp vs plain:", max(float((a[k].float() - b[k].float()).abs().max()) for k in a))
for d in sys.argv[1:3]:
    print([(s["name"], s["wall_seconds"], s["peak_memory_mb"]) for s in json.load(open(f"{d}/summary.json"))["stages"]])
PY
echo "== rlzoo beside TRL on the GPU: SmolLM2-135M, bf16, GRPO 8 x 8 x 32 tokens (benchmarks/vs_trl.py)"
$PY benchmarks/vs_trl.py --sizes model --model smollm2 --algos grpo --device cuda --bf16 --rounds 1 --steps 5 \
    --warmup 2 --max-busy 1 --out /tmp/vs_trl_gpu || status=1
exit $status
