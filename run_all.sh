#!/usr/bin/env bash
# Run a whole LR sweep of one setup: pre-train -> fine-tune (all FLRs) and SWA -> feature / band
# evaluation and geometry -> report. Finished runs are skipped and interrupted ones resume, so
# rerunning the same command after a crash, a kill or a preemption continues where it stopped.
#
#   bash run_all.sh                                   # synthetic setup, quick preset (minutes on a laptop CPU)
#   bash run_all.sh --setup synthetic --preset paper  # the full protocol: 23 PLRs x 50 seeds, 11 FLRs
#   bash run_all.sh --preset smoke --out /tmp/runs    # seconds; what the tests run
#   bash run_all.sh --setup convnet_si_fmnist         # real Fashion-MNIST (apt-get install dataset-fashion-mnist)
#   bash run_all.sh --setup resnet18_si_cifar10 --preset paper --data_dir ~/datasets --slurm \
#       --sbatch "--partition=gpu --gres=gpu:1 --time=12:00:00 --account=me"
#   bash run_all.sh --setup convnet_si_cifar10 --dry_run   # print the commands, run nothing
#   bash run_all.sh --setup convnet_si_fmnist --preset scan   # cheap: short pre-training only -> 1|2, a PLR
#   bash run_all.sh --setup mine --model my_net.py:Net --dataset my_data.npz --plrs "1e-3 1e-2 0.1" \
#       --flrs "1e-4 1e-3" --epochs 5 --ft_epochs 3 --seeds "0 1"   # your own model and data
#
# Setups: synthetic, convnet_si_cifar10, convnet_si_cifar100, resnet18_si_cifar10,
# resnet18_si_cifar100, resnet18_cifar10, resnet18_cifar100, convnet_si_fmnist, or any NAME with
# --model and --dataset; presets smoke, quick, paper (grids in PROTOCOL.md sections 4, 6, 7; see the
# README for what each preset runs) and scan: the paper preset's PLR grid and pre-training, but one
# seed and a fifth of the steps, no fine-tuning -> report.py's 1|2 boundary and the smallest
# regime-2 PLR. --model, --model_args, --dataset, --plrs, --flrs, --seeds, --epochs, --ft_epochs
# override a setup's values (with scan, --epochs is the full pre-training the scan is a fifth of);
# --stages "pretrain finetune swa evaluate" runs only some stages (then the report). Each stage is a
# list of independent runs (data drawn per seed: one population per group of data seeds; otherwise
# one run per PLR and seed).
# Locally they run --jobs at a time (default: one per CPU core, 1 torch thread each); with --slurm
# each stage is one array job (one index = one run) that starts after the previous stage
# succeeded (afterok), and the job ids are printed. Everything goes to ROOT/SETUP/ (ROOT = --out,
# default runs): pretrain/, finetune/, swa/, geometry/, summary.json, report.md, figures/ (a scan:
# ROOT/SETUP/scan/).
set -euo pipefail

die() { echo "error: $*" >&2; exit 2; }
usage() { sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; }

SETUP=synthetic PRESET=quick ROOT=runs PY=${PYTHON:-python} THREADS="" JOBS="" DATA_DIR="" SLURM=0 DRY=0
SBATCH="" SHARPNESS="" STAGES="pretrain finetune swa evaluate" O_MODEL="" O_MODEL_ARGS="" O_DATASET="" O_PLRS="" O_FLRS="" O_SEEDS="" O_EPOCHS="" O_FT_EPOCHS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --setup) [ $# -ge 2 ] || die "--setup needs a value"; SETUP=$2; shift 2 ;;
    --preset) [ $# -ge 2 ] || die "--preset needs a value"; PRESET=$2; shift 2 ;;
    --out) [ $# -ge 2 ] || die "--out needs a value"; ROOT=$2; shift 2 ;;
    --data_dir) [ $# -ge 2 ] || die "--data_dir needs a value"; DATA_DIR=$2; shift 2 ;;
    --threads) [[ $# -ge 2 && $2 =~ ^[0-9]+$ ]] || die "--threads needs a non-negative integer"; THREADS=$2; shift 2 ;;
    --jobs) [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || die "--jobs needs a positive integer"; JOBS=$2; shift 2 ;;
    --slurm) SLURM=1; shift ;;
    --sbatch) [ $# -ge 2 ] || die "--sbatch needs a value (options for sbatch, quoted)"; SBATCH=$2; shift 2 ;;
    --sharpness) SHARPNESS="--sharpness"; shift ;;
    --dry_run) DRY=1; shift ;;
    --stages) [[ $# -ge 2 && $2 =~ ^(pretrain|finetune|swa|evaluate)(\ +(pretrain|finetune|swa|evaluate))*$ ]] || \
                die "--stages needs some of: pretrain finetune swa evaluate (quoted list)"; STAGES=$2; shift 2 ;;
    --model) [ $# -ge 2 ] || die "--model needs a value"; O_MODEL=$2; shift 2 ;;
    --model_args) [ $# -ge 2 ] || die "--model_args needs a value (KEY=VALUE ..., quoted)"; O_MODEL_ARGS=$2; shift 2 ;;
    --dataset) [ $# -ge 2 ] || die "--dataset needs a value"; O_DATASET=$2; shift 2 ;;
    --plrs) [ $# -ge 2 ] || die "--plrs needs a value (quoted list)"; O_PLRS=$2; shift 2 ;;
    --flrs) [ $# -ge 2 ] || die "--flrs needs a value (quoted list)"; O_FLRS=$2; shift 2 ;;
    --seeds) [[ $# -ge 2 && $2 =~ ^[0-9\ ]*[0-9][0-9\ ]*$ ]] || die "--seeds needs non-negative integers (quoted list)"; O_SEEDS=$2; shift 2 ;;
    --epochs) [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || die "--epochs needs a positive integer"; O_EPOCHS=$2; shift 2 ;;
    --ft_epochs) [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || die "--ft_epochs needs a positive integer"; O_FT_EPOCHS=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see bash run_all.sh --help)" ;;
  esac
done
[ "$SLURM" = 1 ] || [ -z "$SBATCH" ] || die "--sbatch needs --slurm"
[[ "$SETUP" =~ ^[A-Za-z0-9_.-]+$ ]] || die "--setup '$SETUP': use letters, digits, '.', '_' and '-' only"
HERE=$(cd "$(dirname "$0")" && pwd)
case "$ROOT" in /*) ;; *) ROOT="$PWD/$ROOT" ;; esac
case "$DATA_DIR" in ""|/*) ;; *) DATA_DIR="$PWD/$DATA_DIR" ;; esac
# a researcher's model file or .npz, relative to where run_all.sh was started
case "$O_MODEL" in /*|"") ;; *.py:*) O_MODEL="$PWD/$O_MODEL" ;; esac
case "$O_DATASET" in /*|"") ;; *.npz) O_DATASET="$PWD/$O_DATASET" ;; esac
cd "$HERE"

# ---------------------------------------------------------------- setups: model, dataset, grids, presets
# PAPER: the authors' regime boundaries 1|2 2A|2B 2|3 (PROTOCOL.md section 4), drawn next to the detected
# ones. DATA_SEEDS: data drawn per seed (the synthetic example); its sweeps train one population per part.
SETUPS="synthetic convnet_si_cifar10 convnet_si_cifar100 resnet18_si_cifar10 resnet18_si_cifar100 resnet18_cifar10 resnet18_cifar100 convnet_si_fmnist vit_cifar10 vit_fmnist"
SI_PLRS="1e-5 2e-5 5e-5 1e-4 2e-4 5e-4 1e-3 2e-3 5e-3 1e-2 2e-2 5e-2 0.1 0.2 0.5 1"
EXTRA="" SEEDS="0" IMG="" FT="" GEO="" DATA_SEEDS="" PAPER="" WIDTH="" DATASET="" MODEL="" CUSTOM=0 MODEL_ARGS=""
SWA="--n_models 5" FOURIER=""  # SWA: continue 4 epochs and average 5; FOURIER: eval_fourier.py's extra flags
VIT_SWA="--n_models 5 --stride 2"  # appendix F: the run's own epochs E-8, E-6, ..., E (train.py --save_epochs)
PT_LEN=200  # the paper preset's pre-training: epochs (images), iterations (synthetic); scan: a fifth of it
SCAN_FRACTION=5  # scan: 1 / SCAN_FRACTION of PT_LEN (bench/scan_budget.py measures the choice)
case "$SETUP" in
  synthetic) DATASET=tick MODEL=mlp_si PAPER="7.5e-3 1.78e-2 5.6e-2"
    # PROTOCOL.md section 7: logspace(-4.5,-2.25,10)[:-1] + logspace(-2.25,-1.25,9)[:-1] + logspace(-1.25,0,6)
    PLRS="3.16e-5 5.62e-5 1.00e-4 1.78e-4 3.16e-4 5.62e-4 1.00e-3 1.78e-3 3.16e-3 5.62e-3 7.50e-3
          1.00e-2 1.33e-2 1.78e-2 2.37e-2 3.16e-2 4.22e-2 5.62e-2 0.1 0.178 0.316 0.562 1.0"
    FLRS="3.16e-5 5.62e-5 1.00e-4 1.78e-4 3.16e-4 5.62e-4 1.00e-3 1.78e-3 3.16e-3 5.62e-3 7.50e-3"
    case "$PRESET" in
      paper) SEEDS="0 1 2 3 4"; DATA_SEEDS="0 1 2 3 4 5 6 7 8 9" ;;
      quick) SEEDS="0 1"; DATA_SEEDS="0 1"; FLRS="3.16e-5 3.16e-4 1.78e-3 7.50e-3" ;;
      smoke) PLRS="1e-3 1e-2 0.3"; FLRS="1e-4 3e-3"; DATA_SEEDS="0 1"; EXTRA="--smoke" ;;
      scan) SEEDS=0 DATA_SEEDS=0 PT_LEN=40000 EXTRA="--iters $((40000 / SCAN_FRACTION))" ;;
    esac ;;
  convnet_si_cifar10) DATASET=cifar10 MODEL=convnet_si WIDTH=32 PLRS=$SI_PLRS FLRS="1e-5 5e-4" PAPER="5e-4 2e-3 2e-2" ;;
  convnet_si_cifar100) DATASET=cifar100 MODEL=convnet_si WIDTH=128 PLRS=$SI_PLRS FLRS="1e-5 2e-4" PAPER="2e-4 2e-3 0.1" ;;
  resnet18_si_cifar10) DATASET=cifar10 MODEL=resnet18_si WIDTH=32 PAPER="3e-4 1.4e-3 2e-2"
    PLRS="1e-6 2e-6 5e-6 1e-5 1.4e-5 2e-5 3e-5 5e-5 7e-5 1e-4 1.4e-4 2e-4 3e-4 5e-4 7e-4 1e-3 1.4e-3 2e-3 3e-3
          5e-3 7e-3 1e-2 1.4e-2 2e-2 3e-2 5e-2 7e-2 0.1 0.2 0.5 1 2"
    FLRS="1e-5 3e-5 5e-5 7e-5 1e-4 1.4e-4 2e-4 2.5e-4 3e-4" ;;
  resnet18_si_cifar100) DATASET=cifar100 MODEL=resnet18_si WIDTH=32 PLRS=$SI_PLRS FLRS="2e-5 1e-4" PAPER="1e-4 2e-3 0.1" ;;
  resnet18_cifar10|resnet18_cifar100) DATASET=${SETUP#resnet18_} MODEL=resnet18 WIDTH=64 PAPER="2e-3 0.1 none"
    PLRS="1e-4 2e-4 5e-4 1e-3 2e-3 5e-3 1e-2 2e-2 5e-2 0.1 0.2 0.5 1" FLRS="1e-4 2e-3" ;;
  convnet_si_fmnist) DATASET=fashion_mnist MODEL=convnet_si WIDTH=32 PLRS=$SI_PLRS FLRS="1e-5 5e-4"
    [ "$PRESET" != quick ] || {  # 2000 images, 30 epochs: long enough for the loss of small PLRs to head to zero
      PLRS="5e-4 2e-3 5e-3 1e-2 2e-2 5e-2 0.2"; FLRS="1e-4 1e-3"; WIDTH=8
      IMG="--epochs 30 --train_size 2000 --test_size 2000"; FT="--epochs 10"; GEO="--points 11"; } ;;
  vit_cifar10) DATASET=cifar10 MODEL=vit_small PAPER="1e-4 1e-3 none" SWA=$VIT_SWA FOURIER="--band_splits 4,6,8,10"
    # appendix F: 500 + 500 epochs of Adam (the model record's recipe: batch 512, weight decay 1e-4, RandAugment)
    PLRS="1e-5 2e-5 5e-5 1e-4 2e-4 5e-4 1e-3 2e-3 5e-3 1e-2" FLRS="1e-5 2e-5 5e-5 1e-4"
    IMG="--epochs 500 --save_epochs 492 494 496 498" FT="--epochs 500" PT_LEN=500
    [ "$PRESET" != quick ] || {  # every other PLR, a tenth of the epochs on 10000 images
      PLRS="1e-5 5e-5 2e-4 1e-3 5e-3"; IMG="--epochs 50 --train_size 10000 --save_epochs 42 44 46 48"
      FT="--epochs 50"; } ;;
  vit_fmnist) DATASET=fashion_mnist MODEL=vit_small SWA=$VIT_SWA FOURIER="--band_splits 4,6,8,10"
    PLRS="1e-5 2e-5 5e-5 1e-4 2e-4 5e-4 1e-3 2e-3 5e-3 1e-2" FLRS="1e-5 1e-4"
    IMG="--epochs 100 --save_epochs 92 94 96 98" FT="--epochs 100" PT_LEN=100
    [ "$PRESET" != quick ] || {  # a small ViT on a Fashion-MNIST subset: under 30 minutes on 2 CPU cores
      # (ViT-Small's recipe, but dim 64, depth 2, patches of 8 and batch 128, on 4000 + 2000 images)
      PLRS="1e-4 3e-4 1e-3 3e-3 1e-2 3e-2"; FLRS="1e-5 1e-4"; GEO="--points 5"
      MODEL_ARGS="dim=64 depth=2 heads=2 dim_head=32 mlp_dim=128 patch_size=8"
      IMG="--epochs 30 --batch_size 128 --train_size 4000 --test_size 2000 --save_epochs 22 24 26 28"
      FT="--epochs 10"; } ;;
  *) [ -n "$O_MODEL" ] && [ -n "$O_DATASET" ] || \
       die "unknown setup '$SETUP'; known: $SETUPS, or any name with --model and --dataset (your own)"
     CUSTOM=1 PLRS="1e-4 1e-3 1e-2 0.1 1" FLRS="1e-4 1e-3" ;;
esac
case "$PRESET" in smoke|quick|paper|scan) ;; *) die "unknown preset '$PRESET' for setup $SETUP; known: smoke quick paper scan" ;; esac
if [ -z "$DATA_SEEDS" ]; then  # one run per PLR and seed: the image setups' presets
  case "$PRESET" in
    paper) SEEDS="0 1 2" ;;  # 200 + 200 epochs: the scripts' defaults
    quick) if [ -z "$IMG" ] && [ "$CUSTOM" = 0 ]; then
             PLRS=$(echo $PLRS | tr ' ' '\n' | awk 'NR % 2 == 1' | tr '\n' ' ')
             IMG="--epochs 30 --train_size 10000"; FT="--epochs 30"
           fi ;;
    smoke) PLRS="1e-3 0.3"; FLRS="1e-4 1e-3"; EXTRA="--smoke" IMG="" FT="" GEO="" MODEL_ARGS=""
           case "$SWA" in *--stride*) SWA="--n_models 2 --stride 1" IMG="--save_epochs 1" ;; esac ;;
    scan) SEEDS=${SEEDS%% *} PT_LEN=${O_EPOCHS:-$PT_LEN} O_EPOCHS=""
          IMG="--epochs $(( (PT_LEN + SCAN_FRACTION - 1) / SCAN_FRACTION ))" ;;
  esac
fi
[ "$PRESET" != scan ] || STAGES=pretrain
# overrides (and a custom setup's values)
[ -z "$O_MODEL" ] || { MODEL=$O_MODEL; WIDTH="" MODEL_ARGS=""; }
[ -z "$O_MODEL_ARGS" ] || MODEL_ARGS=$O_MODEL_ARGS
[ -z "$O_DATASET" ] || DATASET=$O_DATASET
[ -z "$O_PLRS" ] || PLRS=$O_PLRS
[ -z "$O_FLRS" ] || FLRS=$O_FLRS
[ -z "$O_SEEDS" ] || SEEDS=$O_SEEDS
[ -z "$O_EPOCHS" ] || IMG="$IMG --epochs $O_EPOCHS"
[ -z "$O_FT_EPOCHS" ] || FT="$FT --epochs $O_FT_EPOCHS"
FLRS=$(echo $FLRS) PLRS=$(echo $PLRS)
LOW=${FLRS%% *} HIGH=${FLRS##* }
q() { printf '%q' "$1"; }  # quote a word for a command line
MARGS=""
[ -z "$WIDTH" ] || MARGS="--width $WIDTH"
if [ -n "$MODEL_ARGS" ]; then
  MARGS="$MARGS --model_args"; for a in $MODEL_ARGS; do MARGS="$MARGS $(q "$a")"; done
fi
DATA_FLAGS="--dataset $(q "$DATASET") --model $(q "$MODEL") $MARGS"
REPORT_FLAGS=""; [ -z "$PAPER" ] || REPORT_FLAGS="--paper_boundaries $PAPER"

DIR="$ROOT/$SETUP"
[ "$PRESET" != scan ] || DIR="$ROOT/$SETUP/scan"  # next to the sweep it stands in for, not mixed into it
if [ "$DRY" = 0 ]; then
  mkdir -p "$DIR/logs" 2>/dev/null && [ -w "$DIR" ] || die "cannot write to $DIR; choose another --out"
fi
if [ "$SLURM" = 1 ] && [ "$DRY" = 0 ]; then
  command -v sbatch >/dev/null || die "--slurm: sbatch not found; is this a Slurm login node?"
fi

# ---------------------------------------------------------------- runs of each stage
# Data drawn per seed (synthetic): the population split by data seed into JOBS parts (d0-4, d5-9,
# ...) trained side by side; a member's result does not depend on its part (DESIGN.md).
# Otherwise: one run per PLR x seed.
if [ -z "$JOBS" ]; then
  if [ "$SLURM" = 1 ]; then JOBS=1; else JOBS=$(nproc 2>/dev/null || echo 1); fi
fi
[ -n "$THREADS" ] || { [ "$JOBS" -gt 1 ] && THREADS=1 || THREADS=0; }
RUNS=() RUN_ARGS=()
if [ -n "$DATA_SEEDS" ]; then
  read -r -a DS <<< "$(echo $DATA_SEEDS)"
  PARTS=$JOBS; [ "$SLURM" = 0 ] || PARTS=${#DS[@]}  # on a cluster: one data seed per array task
  [ "$PARTS" -le "${#DS[@]}" ] || PARTS=${#DS[@]}
  for ((j = 0; j < PARTS; j++)); do
    lo=$(( j * ${#DS[@]} / PARTS )) hi=$(( (j + 1) * ${#DS[@]} / PARTS - 1 ))
    name="d${DS[$lo]}"; [ "$hi" -gt "$lo" ] && name="$name-${DS[$hi]}"
    RUNS+=("$name") RUN_ARGS+=("--lr $(echo $PLRS) --seed $SEEDS --data_seed ${DS[*]:$lo:$((hi - lo + 1))}")
  done
else
  for s in $SEEDS; do
    for p in $PLRS; do RUNS+=("plr${p}_s$s") RUN_ARGS+=("--lr $p --seed $s"); done
  done
fi

# One sweep per directory: a quick and a paper sweep must not mix in one summary, and a rerun must
# split the runs as the first one did (other parts would train the same members twice).
SWEEP="$SETUP $PRESET runs ${RUNS[*]}"
if [ "$DRY" = 0 ]; then
  if [ -f "$DIR/sweep.txt" ]; then
    [ "$(cat "$DIR/sweep.txt")" = "$SWEEP" ] || \
      die "$DIR holds another sweep ($(cut -c1-60 "$DIR/sweep.txt")...); use the same --preset and --jobs, or another --out"
  else
    echo "$SWEEP" > "$DIR/sweep.txt"
  fi
fi

T="--threads $THREADS"
DD=""; [ -z "$DATA_DIR" ] || DD="--data_dir $(q "$DATA_DIR")"
# stage_commands STAGE: one line per run, "NAME<TAB>COMMAND"
stage_commands() {
  local i n r
  for i in "${!RUNS[@]}"; do
    n=${RUNS[$i]} r=$(q "$DIR")
    case "$1" in
      pretrain) echo -e "$n\t$PY train.py $DATA_FLAGS ${RUN_ARGS[$i]} $IMG $EXTRA $DD $T --out $r/pretrain/$n" ;;
      finetune) echo -e "$n\t$PY finetune.py --from $r/pretrain/$n --lr $FLRS $FT $EXTRA $SHARPNESS $DD $T --out $r/finetune/$n" ;;
      swa) echo -e "$n\t$PY swa.py --from $r/pretrain/$n $SWA $EXTRA $DD $T --out $r/swa/$n" ;;
      evaluate) local geo="--finetune $r/finetune/$n --swa $r/swa/$n --low $LOW --high $HIGH $EXTRA $GEO $DD"
                local ev="$FOURIER $DD $T"
                echo -e "$n\t$PY eval_fourier.py --run $r/pretrain/$n $ev && $PY eval_fourier.py --run $r/finetune/$n $ev && $PY eval_fourier.py --run $r/swa/$n $ev && $PY eval_geometry.py $geo $T --out $r/geometry/$n" ;;
    esac
  done
}

# run_local FILE: the commands of FILE, JOBS at a time; with several at once each output line is
# prefixed with [NAME]. Returns non-zero (after the others finished) if any failed; the failing
# run has printed its own error line.
run_local() {
  local name cmd rc=0 running=0
  while IFS=$'\t' read -r name cmd; do
    if [ "$JOBS" -eq 1 ]; then bash -c "$cmd" || return $?; continue; fi
    if [ "$running" -ge "$JOBS" ]; then wait -n || rc=$?; running=$((running - 1)); fi
    ( set -o pipefail; bash -c "$cmd" | sed -u "s/^/[$name] /" ) &
    running=$((running + 1))
  done < "$1"
  while [ "$running" -gt 0 ]; do wait -n || rc=$?; running=$((running - 1)); done
  return $rc
}

start=$(date +%s)
if [ "$DRY" = 1 ]; then
  for stage in $STAGES; do echo "# $stage"; stage_commands "$stage" | cut -f2-; done
  echo "# report"; echo "$PY report.py --root $(q "$DIR") $REPORT_FLAGS"
  exit 0
fi
if [ "$SLURM" = 1 ]; then
  dep=""
  for stage in $STAGES; do
    stage_commands "$stage" > "$DIR/logs/$stage.tsv"
    n=$(wc -l < "$DIR/logs/$stage.tsv")
    # shellcheck disable=SC2086  # SBATCH is a word list on purpose
    id=$(sbatch --parsable --job-name="lrl-$SETUP-$stage" --array=0-$((n - 1)) $dep $SBATCH \
           --output="$DIR/logs/$stage-%A_%a.out" slurm/sweep.sbatch "$DIR/logs/$stage.tsv") || die "sbatch failed for $stage"
    id=${id%%;*}
    echo "$stage: job $id ($n array tasks)"
    dep="--dependency=afterok:$id"
  done
  echo -e "report\t$PY report.py --root $(q "$DIR") $REPORT_FLAGS" > "$DIR/logs/report.tsv"
  # shellcheck disable=SC2086
  id=$(sbatch --parsable --job-name="lrl-$SETUP-report" --array=0-0 $dep $SBATCH \
         --output="$DIR/logs/report-%A_%a.out" slurm/sweep.sbatch "$DIR/logs/report.tsv") || die "sbatch failed for report"
  echo "report: job ${id%%;*}"
  echo "when it is done: $DIR/summary.json, $DIR/report.md, $DIR/figures/"
  exit 0
fi
for stage in $STAGES; do
  stage_commands "$stage" > "$DIR/logs/$stage.tsv"
  echo; echo "== $stage: $(wc -l < "$DIR/logs/$stage.tsv") run(s), $JOBS at a time, $THREADS thread(s) each"
  run_local "$DIR/logs/$stage.tsv"
done
echo; echo "== $PY report.py --root $DIR $REPORT_FLAGS"; $PY report.py --root "$DIR" $REPORT_FLAGS
echo
echo "sweep $SETUP/$PRESET finished in $(( $(date +%s) - start )) s"
echo "summary: $DIR/summary.json"
echo "report:  $DIR/report.md"
echo "figures: $DIR/figures/"
