#!/usr/bin/env bash
# Run a whole LR sweep of one setup: pre-train -> fine-tune (all FLRs) and SWA -> feature
# evaluation -> report. Finished runs are skipped and interrupted ones resume, so rerunning the
# same command after a crash or a kill continues where it stopped.
#
#   bash run_all.sh                                   # synthetic setup, quick preset (minutes on a laptop CPU)
#   bash run_all.sh --setup synthetic --preset paper  # the full protocol: 23 PLRs x 50 seeds, 11 FLRs
#   bash run_all.sh --preset smoke --out /tmp/runs    # seconds; what the tests run
#   bash run_all.sh --threads 1                       # torch CPU threads (1 is best on a busy machine)
#
# Everything goes to ROOT/SETUP/ (ROOT = --out, default runs): pretrain/, finetune/, swa/,
# summary.json, figures/.
set -euo pipefail
cd "$(dirname "$0")"

die() { echo "error: $*" >&2; exit 2; }
usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }

SETUP=synthetic PRESET=quick ROOT=runs PY=${PYTHON:-python} THREADS=0
while [ $# -gt 0 ]; do
  case "$1" in
    --setup) [ $# -ge 2 ] || die "--setup needs a value"; SETUP=$2; shift 2 ;;
    --preset) [ $# -ge 2 ] || die "--preset needs a value"; PRESET=$2; shift 2 ;;
    --out) [ $# -ge 2 ] || die "--out needs a value"; ROOT=$2; shift 2 ;;
    --threads) [[ $# -ge 2 && $2 =~ ^[0-9]+$ ]] || die "--threads needs a non-negative integer"; THREADS=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see bash run_all.sh --help)" ;;
  esac
done

# ---------------------------------------------------------------- setups and their grids
SETUPS="synthetic"
case "$SETUP" in
  synthetic)
    # PROTOCOL.md section 7: logspace(-4.5,-2.25,10)[:-1] + logspace(-2.25,-1.25,9)[:-1] + logspace(-1.25,0,6)
    PLRS="3.16e-5 5.62e-5 1.00e-4 1.78e-4 3.16e-4 5.62e-4 1.00e-3 1.78e-3 3.16e-3 5.62e-3 7.50e-3
          1.00e-2 1.33e-2 1.78e-2 2.37e-2 3.16e-2 4.22e-2 5.62e-2 0.1 0.178 0.316 0.562 1.0"
    FLRS="3.16e-5 5.62e-5 1.00e-4 1.78e-4 3.16e-4 5.62e-4 1.00e-3 1.78e-3 3.16e-3 5.62e-3 7.50e-3"
    case "$PRESET" in
      paper) SEEDS="0 1 2 3 4"; DATA_SEEDS="0 1 2 3 4 5 6 7 8 9"; PT_ITERS=40000; FT_ITERS=20000; EXTRA="" ;;
      quick) SEEDS="0 1"; DATA_SEEDS="0 1"; PT_ITERS=40000; FT_ITERS=20000; EXTRA=""
             FLRS="3.16e-5 3.16e-4 1.78e-3 7.50e-3" ;;
      smoke) PLRS="1e-3 1e-2 0.3"; FLRS="1e-4 3e-3"; SEEDS="0"; DATA_SEEDS="0"; PT_ITERS=""; FT_ITERS=""
             EXTRA="--smoke" ;;
      *) die "unknown preset '$PRESET' for setup $SETUP; known: smoke quick paper" ;;
    esac ;;
  *) die "unknown setup '$SETUP'; known: $SETUPS" ;;
esac

DIR="$ROOT/$SETUP"
mkdir -p "$DIR" 2>/dev/null && [ -w "$DIR" ] || die "cannot write to $DIR; choose another --out"
# One sweep per directory: a quick and a paper sweep must not mix in one summary.
if [ -f "$DIR/sweep.txt" ]; then
  [ "$(cat "$DIR/sweep.txt")" = "$SETUP $PRESET" ] || \
    die "$DIR holds a '$(cat "$DIR/sweep.txt")' sweep, not '$SETUP $PRESET'; choose another --out"
else
  echo "$SETUP $PRESET" > "$DIR/sweep.txt"
fi

step() { echo; echo "== $*"; "$@" --threads "$THREADS"; }
start=$(date +%s)
iters() { [ -n "$1" ] && echo "--iters $1" || true; }
# shellcheck disable=SC2086  # grids and flags are word lists on purpose
{
  step $PY train.py --dataset tick --model mlp_si --lr $PLRS --seed $SEEDS --data_seed $DATA_SEEDS \
    $(iters "$PT_ITERS") $EXTRA --out "$DIR/pretrain/all"
  step $PY finetune.py --from "$DIR/pretrain/all" --lr $FLRS $(iters "$FT_ITERS") $EXTRA --out "$DIR/finetune/all"
  step $PY swa.py --from "$DIR/pretrain/all" --n_models 5 $EXTRA --out "$DIR/swa/all"
  for stage in pretrain finetune swa; do
    step $PY eval_fourier.py --run "$DIR/$stage/all"
  done
  echo; echo "== $PY report.py --root $DIR"; $PY report.py --root "$DIR"
}
echo
echo "sweep $SETUP/$PRESET finished in $(( $(date +%s) - start )) s"
echo "summary: $DIR/summary.json"
echo "figures: $DIR/figures/"
