#!/usr/bin/env bash
# What only a GPU shows (issue 9), as one prepared run on a lent GPU: trm and the official code on the same GPU.
#
#   bash benchmarks/gpu_check.sh prepare   # here, once: wheels -> .whl/, official code -> official/, data -> data/gpu/
#   bash benchmarks/gpu_check.sh speed     # on the GPU (~5 min):
#       1. `trm bench --reference`: sudoku-mlp at the paper's batch 768, float32 and bfloat16, training step,
#          fixed and adaptive inference; step time, puzzles/s, % of the measured matmul ceiling and MFU (data sheet)
#       2. the ARC preset's training step (arc1, bfloat16) at 192 rows: the official recipe's rows per GPU (768 on 4)
#       3. benchmarks/precision_check.py: 100 steps of sudoku-mlp on real puzzles, bfloat16 eager and compiled
#          losses against float32 eager, every step, within the tolerances stated there
#       4. the sudoku-mlp training step compiled (compile=true: trm's one graph, the official torch.compile)
#       5. benchmarks/sync_check.py: host syncs per training step of sudoku-mlp, by the line that made them
#   bash benchmarks/gpu_check.sh learn     # on the GPU (~6 min): learning per GPU-minute, sudoku-mlp on the 9x9
#       30-given puzzles of the CPU comparison (BENCHMARKS.md section 9), LEARN_MINUTES (default 2) per side, the
#       same short-run recipe on both sides; the official cosine is fitted to the budget from its step time
#       (OFFICIAL_STEP_S, else read from a speed run's bench_sudoku_mlp.json in $OUT, else 0.1 s)
#   bash benchmarks/gpu_check.sh all       # speed, then learn (~11 min: more than one device call may run)
#
# The device tool's call: carry [".whl", "official", "data/gpu"], command "bash benchmarks/gpu_check.sh speed",
# timeout_s 420. Results land in $OUT (JSON, Markdown, the log). There is no NCCL check: NCCL needs two GPUs
# (two ranks cannot share one), and the lease has one; the 2-process and 2-node tests cover the gloo path.
set -euo pipefail
cd "$(dirname "$0")/.."
stage="${1:?usage: gpu_check.sh prepare|speed|learn|all}"
OUT="${OUT:-/tmp/gpu_check}"
DEVICE="${DEVICE:-cuda}"
PY="${PYTHON:-python3}"
DATA="${GPU_DATA:-data/gpu/s9}"  # another data set only for a dry run on the CPU

prepare() {
  # pydantic is not in the GPU image; the rest of trm's needs are. Wheels for its Python 3.12 (the image's).
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
  rm -rf .whl && mkdir -p .whl
  for spec in pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
    typing-extensions==4.16.0; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform any -d .whl "$spec"
  done
  # The official code (the model, losses, sparse embedding, pretrain.py and its data loader), not its assets and
  # ARC data (the carried tree has a 64 MiB limit).
  : "${TRM_OFFICIAL_DIR:?set TRM_OFFICIAL_DIR to a checkout of SamsungSAILMontreal/TinyRecursiveModels}"
  rm -rf official && mkdir official
  (cd "$TRM_OFFICIAL_DIR" && tar c --exclude=assets --exclude=kaggle --exclude=.git .) | tar x -C official
  # The 9x9 puzzles with 30 givens of the CPU comparison (BENCHMARKS.md section 9), same seed.
  if [ ! -f data/gpu/s9/train/dataset.json ]; then
    .venv/bin/trm data sudoku --out data/gpu/s9 --generate 3500 --size 9 --givens 30 --test-fraction 0.142857 \
      --aug 100 --seed 1
  fi
  du -sh .whl official data/gpu
}

setup_device() {
  if [ -d .whl ] && ! "$PY" -c "import pydantic" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
  mkdir -p "$OUT"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >"$OUT/gpu.txt" 2>&1 || true
  "$PY" -c "import torch, trm; print('torch', torch.__version__, '| trm', trm.__file__, '|', \
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')" | tee -a "$OUT/gpu.txt"
}

speed() {
  # Cheapest first: each step writes its results to $OUT as it ends, so a run cut at its limit still returns them.
  local bench=("$PY" -m trm.cli bench --reference official --device "$DEVICE")
  "${bench[@]}" --preset sudoku-mlp --batch "${SUDOKU_BATCH:-768}" --dtype float32 bfloat16 --repeats 5 \
    --infer-steps 4 --json "$OUT/bench_sudoku_mlp.json" --md "$OUT/bench_sudoku_mlp.md"
  "${bench[@]}" --preset arc1 --batch "${ARC_BATCH:-192}" --dtype bfloat16 --repeats 3 --modes train \
    --json "$OUT/bench_arc1.json" --md "$OUT/bench_arc1.md"
  "$PY" benchmarks/precision_check.py --preset sudoku-mlp --data "$DATA" --steps "${PRECISION_STEPS:-100}" \
    --device "$DEVICE" --variants float32:eager bfloat16:eager bfloat16:compile --work /tmp/precision_runs \
    --out "$OUT/precision.json" -- lr=1e-3 lr_warmup_steps=20 ${PRECISION_EXTRA:-} \
    || echo "precision_check: a variant is outside its tolerance (see above)"
  "${bench[@]}" sudoku-mlp compile=true --batch "${SUDOKU_BATCH:-768}" --dtype bfloat16 --repeats 5 --modes train \
    --json "$OUT/bench_compiled.json" --md "$OUT/bench_compiled.md"
  "$PY" benchmarks/sync_check.py --preset sudoku-mlp --data "$DATA" --steps 5 --device "$DEVICE" \
    --out "$OUT/syncs.json" -- global_batch_size="${SUDOKU_BATCH:-768}"
}

learn() {
  local minutes="${LEARN_MINUTES:-2}" step_s="${OFFICIAL_STEP_S:-}" batch="${LEARN_BATCH:-768}"
  if [ -z "$step_s" ] && [ -f "$OUT/bench_sudoku_mlp.json" ]; then
    step_s=$("$PY" -c "import json; print(next(r['step_s'] for r in json.load(open('$OUT/bench_sudoku_mlp.json'))
      if r['impl'] == 'official' and r['dtype'] == 'bfloat16' and r['mode'] == 'train'))")
  fi
  # Epochs whose steps the official code runs in the budget: its cosine then ends where the budget does.
  local examples epochs
  examples=$("$PY" -c "import json; m = json.load(open('$DATA/train/dataset.json')); print(m['total_groups'] \
* m['mean_puzzle_examples'])")
  epochs=$("$PY" -c "print(max(1, round($minutes * 60 / ${step_s:-0.1} * $batch / $examples)))")
  echo "learn: $minutes min per side; official step ${step_s:-0.1 (a guess)} s -> epochs=$epochs"
  local recipe=(global_batch_size="$batch" lr=1e-3 lr_warmup_steps=100 weight_decay=0.1 puzzle_emb_weight_decay=0.1)
  "$PY" benchmarks/learn_per_minute.py --official official --minutes "$minutes" --device "$DEVICE" \
    --official-dtype bfloat16 --case 9x9-30 "$DATA" sudoku-mlp --runs trm official --samples 16 \
    --trm-extra "${recipe[@]}" --official-overrides "${recipe[@]}" "epochs=$epochs" \
    --work /tmp/learn_runs --out "$OUT/learn_gpu.json"
}

case "$stage" in
  prepare) prepare ;;
  speed) setup_device; speed 2>&1 | tee "$OUT/speed.log" ;;
  learn) setup_device; learn 2>&1 | tee "$OUT/learn.log" ;;
  all) setup_device; { speed; learn; } 2>&1 | tee "$OUT/all.log" ;;
  *) echo "gpu_check.sh: unknown stage $stage (prepare, speed, learn, all)" >&2; exit 2 ;;
esac
