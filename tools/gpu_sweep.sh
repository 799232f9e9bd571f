#!/usr/bin/env bash
# The model benchmark's sweep on a machine with one NVIDIA GPU (no internet needed).
#
#   OUT=/path/to/results tools/gpu_sweep.sh [/path/to/MotionRGBD]
#
# Ours (scripts/benchmark.py model: the training step and evaluation forward train.py runs) for
# I3DWTrans and FusionNet at 224x224, T=64, float32 and bfloat16, per-device batches 1,2,4,8,16
# (a dtype stops at its first out-of-memory), each worker process alone on the machine; with a
# checkout of the original as $1, its PyTorch network runs beside ours in alternating processes.
# Writes into $OUT: <network>.json (every figure), <network>.md (the table), <network>.log,
# sweep.md (both tables and the setup), sweep.log. Ends within SWEEP_BUDGET seconds (default
# 450: under 8 minutes); what did not fit is reported as skipped (time budget). Cells run
# batch-major (every dtype's B=1 before any B=2), so a cut drops the largest batches. The weights
# are random values of the model's shapes (--init random: no initialisation program to compile;
# the timed steps are the same).
#
# Packages: where an import the benchmark needs is missing, `pip install -r requirements.txt -e .`;
# where JAX has no GPU backend, `pip install jax[cuda12]==<the pinned version>`. Both need the
# network (or PIP_FIND_LINKS/PIP_NO_INDEX pointing at wheels); a failure is said in sweep.log.
#
# Environment:
#   OUT              results folder (default ./sweep_out)
#   SWEEP_BUDGET     seconds for the whole script (default 450)
#   SWEEP_ROUNDS     processes per side, alternating (default 3; rounds past the budget are dropped)
#   SWEEP_BATCHES    default 1,2,4,8,16        SWEEP_DTYPES   default float32,bfloat16
#   SWEEP_NETWORKS   default "I3DWTrans FusionNet"
#   SWEEP_PIP_INSTALL=1   run the pip install even when the imports work
#   SWEEP_WHEELS     a folder of wheels to install first (--no-index --no-deps, into a temporary folder) where an
#                    import is missing: e.g. ml-collections on an image that has JAX but not it
#   SWEEP_CPU_SMOKE=1     tiny shapes on the CPU, no GPU needed: checks this script end to end
#   PYTHON           the interpreter (default python3)
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ORIGINAL=${1:-}
if [[ -n "$ORIGINAL" ]]; then
  ORIGINAL=$(cd "$ORIGINAL" 2>/dev/null && pwd) || { echo "gpu_sweep: $1 is not a folder" >&2; exit 2; }
fi
OUT=${OUT:-$REPO/sweep_out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 2
cd "$REPO" || exit 2
PY=${PYTHON:-python3}
BUDGET=${SWEEP_BUDGET:-450}
ROUNDS=${SWEEP_ROUNDS:-3}
BATCHES=${SWEEP_BATCHES:-1,2,4,8,16}
DTYPES=${SWEEP_DTYPES:-float32,bfloat16}
NETWORKS=${SWEEP_NETWORKS:-I3DWTrans FusionNet}
SMOKE=${SWEEP_CPU_SMOKE:-0}
SIZE=224
FRAMES=64
GRACE=20
EXTRA=()
START=$(date +%s)
LOG=$OUT/sweep.log
: >"$LOG"

log() { echo "[gpu_sweep $(date +%H:%M:%S) +$(($(date +%s) - START))s] $*" | tee -a "$LOG" >&2; }
left() { echo $((START + BUDGET - $(date +%s))); }

if [[ "$SMOKE" == 1 ]]; then
  # the small widths of tests/conftest.py at T=64 (the original's RCM is built for 64 frames) and
  # N=3 Transformer layers (the original reads the third layer's attention), 32x32
  export JAX_PLATFORMS=cpu
  SIZE=32
  BATCHES=${SWEEP_BATCHES:-2}
  ROUNDS=${SWEEP_ROUNDS:-2}
  EXTRA=(--config.model.width=0.125 --config.model.dim=32 --config.model.heads=2 --config.model.dim_head=16
         --config.model.mlp_dim=48 --config.model.N=3 --config.model.rcm_hidden=24
         --config.common.xla_opt_level=0 --repeats 1 --warmup 1)
  log "SWEEP_CPU_SMOKE=1: tiny network, ${SIZE}x${SIZE}, T=$FRAMES, on the CPU; the figures only show that the script runs"
fi
[[ -z "$ORIGINAL" || -d "$ORIGINAL/lib/model" ]] || { log "error: $ORIGINAL/lib/model not found (expected the MotionRGBD repository)"; exit 2; }

# ------------------------------------------------------------------ packages
imports_ok() {
  "$PY" - <<'EOF' >>"$LOG" 2>&1
import importlib, sys
missing = []
for name in ('jax', 'flax', 'optax', 'ml_collections', 'yaml', 'numpy', 'cv2', 'PIL', 'absl'):
  try:
    importlib.import_module(name)
  except Exception as e:  # noqa: BLE001
    missing.append(f'{name} ({type(e).__name__}: {e})')
print('missing: ' + ', '.join(missing) if missing else 'imports: ok')
sys.exit(1 if missing else 0)
EOF
}
SITE=${TMPDIR:-/tmp}/gpu_sweep_site
if [[ -n "${SWEEP_WHEELS:-}" ]] && ! imports_ok; then
  # wheels carried to a machine without internet (e.g. ml-collections, pure Python), beside what it has
  log "pip install --no-index --no-deps $SWEEP_WHEELS/*.whl into $SITE (log: $OUT/pip_wheels.log)"
  timeout 120 "$PY" -m pip install -q --no-index --no-deps --target "$SITE" "$SWEEP_WHEELS"/*.whl \
      >"$OUT/pip_wheels.log" 2>&1 || log "pip install of $SWEEP_WHEELS FAILED (see $OUT/pip_wheels.log)"
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! imports_ok || [[ "${SWEEP_PIP_INSTALL:-0}" == 1 ]]; then
  log "pip install -r requirements.txt -e . (log: $OUT/pip.log)"
  if timeout 180 "$PY" -m pip install -q -r requirements.txt -e . >"$OUT/pip.log" 2>&1; then
    log "pip install: done"
  else
    log "pip install FAILED (no internet? see $OUT/pip.log: $(tail -n 1 "$OUT/pip.log"))"
  fi
  imports_ok || { log "error: packages the benchmark needs are missing (see $LOG)"; exit 2; }
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
PINNED=$(sed -n 's/^jax==\([^ ]*\).*/\1/p' requirements.txt)

backend() { timeout 180 "$PY" -c 'import jax; d = jax.devices()[0]; print(jax.default_backend(), "|", d.device_kind, "|", jax.__version__)' 2>>"$LOG" | tail -n 1; }
if [[ "$SMOKE" != 1 ]]; then
  BACKEND=$(backend)
  if [[ "$BACKEND" != gpu* ]]; then
    log "JAX has no GPU backend ($BACKEND); pip install jax[cuda12]==$PINNED (log: $OUT/pip_cuda.log)"
    if timeout 240 "$PY" -m pip install -q "jax[cuda12]==$PINNED" >"$OUT/pip_cuda.log" 2>&1; then
      log "pip install jax[cuda12]: done"
    else
      log "pip install jax[cuda12] FAILED (no internet? see $OUT/pip_cuda.log: $(tail -n 1 "$OUT/pip_cuda.log"))"
    fi
    BACKEND=$(backend)
    [[ "$BACKEND" == gpu* ]] || { log "error: JAX still has no GPU backend ($BACKEND)"; exit 3; }
  fi
  log "JAX: $BACKEND (requirements.txt pins jax $PINNED)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$LOG" 2>&1
fi
if [[ -n "$ORIGINAL" ]]; then
  TORCH=$(timeout 120 "$PY" -c 'import torch; print(torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")' 2>>"$LOG" | tail -n 1)
  log "the original: $ORIGINAL with torch $TORCH"
fi

# ------------------------------------------------------------------ the sweep
read -r -a NETS <<<"$NETWORKS"
STATUS=0
n=${#NETS[@]}
for net in "${NETS[@]}"; do
  share=$(( ($(left) - 10) / n ))
  n=$((n - 1))
  if (( share < 60 )); then
    log "$net: skipped, ${share}s left for it"
    STATUS=1
    continue
  fi
  budget=$((share - GRACE - 15))
  log "$net: ${BATCHES} x ${DTYPES} at ${SIZE}x${SIZE}, T=$FRAMES; ${budget}s budget${ORIGINAL:+, the original beside ours, $ROUNDS rounds}"
  timeout -k 5 $((share + 5)) "$PY" scripts/benchmark.py model --config configs/ntu.py --config.model.Network="$net" \
      --size "$SIZE" --frames "$FRAMES" --batches "$BATCHES" --dtypes "$DTYPES" --rounds "$ROUNDS" --isolate \
      --time-budget "$budget" --grace "$GRACE" --init random ${ORIGINAL:+--original "$ORIGINAL"} "${EXTRA[@]}" \
      --json "$OUT/$net.json" --markdown "$OUT/$net.md" >"$OUT/$net.log" 2>&1
  rc=$?
  case $rc in
    0) log "$net: done" ;;
    1) log "$net: finished with status 1 (the original failed, or ours; see $OUT/$net.log)"; STATUS=1 ;;
    124|137) log "$net: stopped by the script's timeout (see $OUT/$net.log)"; STATUS=1 ;;
    *) log "$net: failed with status $rc (see $OUT/$net.log)"; STATUS=1 ;;
  esac
  grep -E '^(ours|round|the original|largest|MFU|CPU|error)' "$OUT/$net.log" | tail -n 40 >>"$LOG"
done

# ------------------------------------------------------------------ the report
{
  echo "## Model benchmark sweep ($(date -u +%Y-%m-%d), $(hostname))"
  echo
  echo "\`tools/gpu_sweep.sh${ORIGINAL:+ $ORIGINAL}\`: ${SIZE}x${SIZE}, T=$FRAMES, batches $BATCHES per device, $DTYPES${ORIGINAL:+, $ROUNDS alternating rounds beside the original}${BACKEND:+; JAX $BACKEND}${TORCH:+; torch $TORCH}."
  echo "Weights: random values of the model's shapes (--init random). Original: n/a at B=1 (its forward squeezes the batch axis away)."
  [[ "$SMOKE" == 1 ]] && echo "SWEEP_CPU_SMOKE=1: the tiny network on the CPU; these figures only show that the script runs."
  for net in "${NETS[@]}"; do
    echo
    if [[ -s "$OUT/$net.md" ]]; then
      cat "$OUT/$net.md"
    else
      echo "$net: no table (see $net.log)"
    fi
    grep -E '^(largest batch|MFU against|no MFU)' "$OUT/$net.log" 2>/dev/null | sed 's/^/    /'
  done
  echo
  echo "Seconds per step: median (min-max) of the rounds' medians (one round: of the repeats); ratio = original / ours."
} >"$OUT/sweep.md"
cat "$OUT/sweep.md"
log "done in $(($(date +%s) - START))s; results in $OUT"
exit $STATUS
