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
#   bash run_all.sh --setup synthetic --preset scan --seeds 3   # the adaptive scan: an answer for ~2 runs
#   bash run_all.sh --setup mine --model my_net.py:Net --model_args width=16 --dataset my_data.npz \
#       --plrs "1e-3 1e-2 0.1" --flrs "1e-4 1e-3" --epochs 5 --ft_epochs 3 --seeds "0 1" --optimizer adamw
#
# Setups (setups.ini: grids, lengths, seeds, the paper's boundaries): SETUPS_LIST, or any NAME
# with --model and --dataset (your own). Presets: quick (default), paper, smoke, scan (the adaptive
# scan, scan.py, on the paper preset's PLR grid and lengths and one seed: short runs at every PLR,
# continued only where the regime is undecided, until the 1|2 boundary is bracketed or --budget R runs
# of pre-training + fine-tuning (default 2) are spent -> the smallest regime-2 PLR; off the sphere,
# successive halving on validation accuracy; ROOT/SETUP/scan_sS/ for seed S).
# Overrides of the setup's values: --model, --model_args KEY=VALUE ..., --dataset, --plrs, --flrs,
# --seeds (quoted lists; a scan's seed S is also its data seed where data are drawn per seed),
# --epochs, --ft_epochs (a scan's full lengths), --train_size, --test_size (images: the first N of
# each split). The recipe, for every stage (default: the model record's): --optimizer sgd|adam|adamw,
# --momentum M, --weight_decay W, --augment none|crop_flip|randaugment, --sphere on|off, --schedule
# constant|cosine, --batch_size B.
# --stages "pretrain finetune swa evaluate" runs only some stages (then the report); your own setups
# run "pretrain finetune swa" (what the recommendation needs) unless --measure adds evaluate (the
# feature or band accuracies and the geometry). --sharpness logs the sharpness while fine-tuning.
# Each stage is a list of independent runs (data drawn per seed: one population per group of data
# seeds; otherwise one run per PLR and seed). Locally they run --jobs at a time (default: one per
# CPU core, 1 torch thread each); with --slurm each stage is one array job (one index = one run)
# that starts after the previous stage succeeded (afterok), and the job ids are printed. Everything
# goes to ROOT/SETUP/ (ROOT = --out, default runs): pretrain/, finetune/, swa/, geometry/,
# summary.json, report.md, figures/.
set -euo pipefail

die() { echo "error: $*" >&2; exit 2; }
PY=${PYTHON:-python}
HERE=$(cd "$(dirname "$0")" && pwd)
usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' | sed "s/SETUPS_LIST/$(cd "$HERE" && $PY -m core.setups --names | sed 's/ /, /g')/"
}
NUMBER='^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$'
positive() { [[ $1 =~ $NUMBER ]] && awk -v v="$1" 'BEGIN { exit !(v + 0 > 0) }'; }
check_list() {  # check_list FLAG "VALUES": every value a positive finite number
  local v; [ -n "$(echo $2)" ] || die "$1 needs at least one value"
  for v in $2; do positive "$v" || die "$1 '$v': learning rates must be finite numbers > 0"; done
}

SETUP=synthetic PRESET=quick ROOT=runs THREADS="" JOBS="" DATA_DIR="" SLURM=0 DRY=0 MEASURE=0 SBATCH="" SHARPNESS=""
O_STAGES="" O_MODEL="" O_MODEL_ARGS="" O_DATASET="" O_PLRS="" O_FLRS="" O_SEEDS="" O_EPOCHS="" O_FT_EPOCHS="" BUDGET=2
RECIPE=() BATCH=() SIZES=""
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
    --measure) MEASURE=1; shift ;;
    --dry_run) DRY=1; shift ;;
    --stages) [[ $# -ge 2 && $2 =~ ^(pretrain|finetune|swa|evaluate)(\ +(pretrain|finetune|swa|evaluate))*$ ]] || \
                die "--stages needs some of: pretrain finetune swa evaluate (quoted list)"; O_STAGES=$2; shift 2 ;;
    --model) [ $# -ge 2 ] || die "--model needs a value"; O_MODEL=$2; shift 2 ;;
    --model_args) shift; O_MODEL_ARGS=""  # KEY=VALUE words up to the next flag, as train.py takes them
                  while [ $# -gt 0 ] && [[ $1 != --* ]]; do O_MODEL_ARGS="$O_MODEL_ARGS $1"; shift; done
                  [ -n "$O_MODEL_ARGS" ] || die "--model_args needs KEY=VALUE arguments" ;;
    --dataset) [ $# -ge 2 ] || die "--dataset needs a value"; O_DATASET=$2; shift 2 ;;
    --plrs) [ $# -ge 2 ] || die "--plrs needs a value (quoted list)"; check_list --plrs "$2"; O_PLRS=$2; shift 2 ;;
    --flrs) [ $# -ge 2 ] || die "--flrs needs a value (quoted list)"; check_list --flrs "$2"; O_FLRS=$2; shift 2 ;;
    --seeds) [[ $# -ge 2 && $2 =~ ^[0-9\ ]*[0-9][0-9\ ]*$ ]] || die "--seeds needs non-negative integers (quoted list)"; O_SEEDS=$2; shift 2 ;;
    --epochs) [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || die "--epochs needs a positive integer"; O_EPOCHS=$2; shift 2 ;;
    --ft_epochs) [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || die "--ft_epochs needs a positive integer"; O_FT_EPOCHS=$2; shift 2 ;;
    --budget) [ $# -ge 2 ] && positive "$2" || die "--budget needs a positive number of runs"; BUDGET=$2; shift 2 ;;
    --train_size|--test_size) [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || die "$1 needs a positive integer"
                              SIZES="$SIZES $1 $2"; shift 2 ;;
    --optimizer) [[ $# -ge 2 && $2 =~ ^(sgd|adam|adamw)$ ]] || die "--optimizer needs sgd, adam or adamw"
                 RECIPE+=(--optimizer "$2"); shift 2 ;;
    --momentum) [[ $# -ge 2 && $2 =~ $NUMBER ]] && awk -v v="$2" 'BEGIN { exit !(v < 1) }' || \
                  die "--momentum needs a number in [0, 1)"; RECIPE+=(--momentum "$2"); shift 2 ;;
    --weight_decay) [[ $# -ge 2 && $2 =~ $NUMBER ]] || die "--weight_decay needs a finite number >= 0"
                    RECIPE+=(--weight_decay "$2"); shift 2 ;;
    --augment) [[ $# -ge 2 && $2 =~ ^(none|crop_flip|randaugment)$ ]] || die "--augment needs none, crop_flip or randaugment"
               RECIPE+=(--augment "$2"); shift 2 ;;
    --sphere) [[ $# -ge 2 && $2 =~ ^(on|off)$ ]] || die "--sphere needs on or off"; RECIPE+=(--sphere "$2"); shift 2 ;;
    --schedule) [[ $# -ge 2 && $2 =~ ^(constant|cosine)$ ]] || die "--schedule needs constant or cosine"
                RECIPE+=(--schedule "$2"); shift 2 ;;
    --batch_size) [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || die "--batch_size needs a positive integer"
                  BATCH=(--batch_size "$2"); shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see bash run_all.sh --help)" ;;
  esac
done
[ "$SLURM" = 1 ] || [ -z "$SBATCH" ] || die "--sbatch needs --slurm"
[[ "$SETUP" =~ ^[A-Za-z0-9_.-]+$ ]] || die "--setup '$SETUP': use letters, digits, '.', '_' and '-' only"
case "$ROOT" in /*) ;; *) ROOT="$PWD/$ROOT" ;; esac
case "$DATA_DIR" in ""|/*) ;; *) DATA_DIR="$PWD/$DATA_DIR" ;; esac
# a researcher's model file or .npz, relative to where run_all.sh was started
case "$O_MODEL" in /*|"") ;; *.py:*) O_MODEL="$PWD/$O_MODEL" ;; esac
case "$O_DATASET" in /*|"") ;; *.npz) O_DATASET="$PWD/$O_DATASET" ;; esac
cd "$HERE"

# ---------------------------------------------------------------- the setup (setups.ini) and the overrides
KIND=""
if ! $PY -m core.setups --names | tr ' ' '\n' | grep -qx "$SETUP"; then
  [ -n "$O_MODEL" ] && [ -n "$O_DATASET" ] || \
    die "unknown setup '$SETUP'; known: $($PY -m core.setups --names), or any name with --model and --dataset (your own)"
  KIND=custom
fi
FIELDS=$($PY -m core.setups "$SETUP" "$PRESET" $KIND) || exit 2
eval "$FIELDS"
[ -z "$O_MODEL" ] || MODEL=$O_MODEL
[ -z "$O_MODEL_ARGS" ] || MODEL_ARGS=$O_MODEL_ARGS
[ -z "$O_DATASET" ] || DATASET=$O_DATASET
[ -z "$O_PLRS" ] || PLRS=$O_PLRS
[ -z "$O_FLRS" ] || FLRS=$O_FLRS
if [ -n "$O_SEEDS" ]; then
  SEEDS=$O_SEEDS
  if [ "$PRESET" = scan ]; then SEEDS=${O_SEEDS%% *}; [ -z "$DATA_SEEDS" ] || DATA_SEEDS=$SEEDS; fi
fi
if [ "$PRESET" = scan ]; then  # the scan's full lengths
  PRETRAIN_LENGTH=${O_EPOCHS:-$PRETRAIN_LENGTH} FINETUNE_LENGTH=${O_FT_EPOCHS:-$FINETUNE_LENGTH}
else
  [ -z "$O_EPOCHS" ] || PRETRAIN="$PRETRAIN --epochs $O_EPOCHS"
  [ -z "$O_FT_EPOCHS" ] || FINETUNE="$FINETUNE --epochs $O_FT_EPOCHS"
fi
PRETRAIN="$PRETRAIN$SIZES"
[ "$MEASURE" = 0 ] || [ "$PRESET" = scan ] || STAGES="pretrain finetune swa evaluate"
[ -z "$O_STAGES" ] || [ "$PRESET" = scan ] || STAGES=$O_STAGES
PLRS=$(echo $PLRS) FLRS=$(echo $FLRS) MODEL_ARGS=$(echo $MODEL_ARGS)
LOW=${FLRS%% *} HIGH=${FLRS##* }
q() { printf '%q' "$1"; }  # quote a word for a command line
EXTRA=""; [ "$SMOKE" = 0 ] || EXTRA="--smoke"
MARGS=""
if [ -n "$MODEL_ARGS" ]; then
  MARGS="--model_args"; for a in $MODEL_ARGS; do MARGS="$MARGS $(q "$a")"; done
fi
REC=""; for a in "${RECIPE[@]+"${RECIPE[@]}"}"; do REC="$REC $(q "$a")"; done
DATA_FLAGS="--dataset $(q "$DATASET") --model $(q "$MODEL") $MARGS"
REPORT_FLAGS=""; [ -z "$PAPER_BOUNDARIES" ] || REPORT_FLAGS="--paper_boundaries $PAPER_BOUNDARIES"

DIR="$ROOT/$SETUP"
[ "$PRESET" != scan ] || DIR="$ROOT/$SETUP/scan_s$SEEDS"  # one per seed, next to the sweep it stands in for

# ---------------------------------------------------------------- runs of each stage
# Data drawn per seed (synthetic): the population split by data seed into JOBS parts (d0-4, d5-9,
# ...) trained side by side; a member's result does not depend on its part.
# Otherwise: one run per PLR x seed.
if [ -z "$JOBS" ]; then  # the machine's cores (nproc would obey OMP_NUM_THREADS)
  if [ "$SLURM" = 1 ]; then JOBS=1; else JOBS=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1); fi
fi
[ -n "$THREADS" ] || { [ "$JOBS" -gt 1 ] && [ "$PRESET" != scan ] && THREADS=1 || THREADS=0; }  # a scan: one process
RUNS=() RUN_ARGS=()
if [ "$PRESET" = scan ]; then
  RUNS=(scan) RUN_ARGS=("--seed $SEEDS$([ -z "$DATA_SEEDS" ] || echo " --data_seed $DATA_SEEDS")")
elif [ -n "$DATA_SEEDS" ]; then
  read -r -a DS <<< "$(echo $DATA_SEEDS)"
  PARTS=$JOBS; [ "$SLURM" = 0 ] || PARTS=${#DS[@]}  # on a cluster: one data seed per array task
  [ "$PARTS" -le "${#DS[@]}" ] || PARTS=${#DS[@]}
  for ((j = 0; j < PARTS; j++)); do
    lo=$(( j * ${#DS[@]} / PARTS )) hi=$(( (j + 1) * ${#DS[@]} / PARTS - 1 ))
    name="d${DS[$lo]}"; [ "$hi" -gt "$lo" ] && name="$name-${DS[$hi]}"
    RUNS+=("$name") RUN_ARGS+=("--lr $PLRS --seed $SEEDS --data_seed ${DS[*]:$lo:$((hi - lo + 1))}")
  done
else
  for s in $SEEDS; do
    for p in $PLRS; do RUNS+=("plr${p}_s$s") RUN_ARGS+=("--lr $p --seed $s"); done
  done
fi

T="--threads $THREADS"
DD=""; [ -z "$DATA_DIR" ] || DD="--data_dir $(q "$DATA_DIR")"
# stage_commands STAGE: one line per run, "NAME<TAB>COMMAND"
stage_commands() {
  local i n r
  for i in "${!RUNS[@]}"; do
    n=${RUNS[$i]} r=$(q "$DIR")
    case "$1" in
      pretrain) echo -e "$n\t$PY train.py $DATA_FLAGS ${RUN_ARGS[$i]} $PRETRAIN $EXTRA$REC ${BATCH[*]+"${BATCH[*]}"} $DD $T --out $r/pretrain/$n" ;;
      scan) echo -e "$n\t$PY scan.py --plrs $PLRS --full $PRETRAIN_LENGTH --finetune $FINETUNE_LENGTH --budget $BUDGET --out $r -- $DATA_FLAGS ${RUN_ARGS[$i]} $PRETRAIN $EXTRA$REC ${BATCH[*]+"${BATCH[*]}"} $DD $T" ;;
      finetune) echo -e "$n\t$PY finetune.py --from $r/pretrain/$n --lr $FLRS $FINETUNE $EXTRA $SHARPNESS$REC $DD $T --out $r/finetune/$n" ;;
      swa) echo -e "$n\t$PY swa.py --from $r/pretrain/$n $SWA $EXTRA$REC $DD $T --out $r/swa/$n" ;;
      evaluate) local geo="--finetune $r/finetune/$n --swa $r/swa/$n --low $LOW --high $HIGH $EXTRA $GEOMETRY $DD"
                local ev="$EVALUATE $DD $T"
                echo -e "$n\t$PY eval_fourier.py --run $r/pretrain/$n $ev && $PY eval_fourier.py --run $r/finetune/$n $ev && $PY eval_fourier.py --run $r/swa/$n $ev && $PY eval_geometry.py $geo $T --out $r/geometry/$n" ;;
    esac
  done
}

if [ "$DRY" = 0 ]; then
  [ "$SLURM" = 0 ] || command -v sbatch >/dev/null || die "--slurm: sbatch not found; is this a Slurm login node?"
  # every flag of the sweep checked once (the model, the recipe, every PLR) before anything is written
  if [[ " $STAGES " == *" pretrain "* || " $STAGES " == *" scan "* ]]; then
    first=$(stage_commands pretrain | sed -n 1p | cut -f2-)
    bash -c "${first% --out *} --lr $PLRS --check_only --out $(q "$DIR/pretrain")" >/dev/null || exit 2
  fi
  mkdir -p "$DIR/logs" 2>/dev/null && [ -w "$DIR" ] || die "cannot write to $DIR; choose another --out"
fi

# One sweep per directory: a quick and a paper sweep must not mix in one summary, and a rerun must
# split the runs as the first one did (other parts would train the same members twice).
SWEEP=$(printf '%s\n' "setup=$SETUP" "preset=$PRESET" "model=$MODEL" "model_args=$MODEL_ARGS" "dataset=$DATASET" \
  "plrs=$PLRS" "flrs=$FLRS" "seeds=$(echo $SEEDS)" "data_seeds=$(echo $DATA_SEEDS)" "pretrain=$(echo $PRETRAIN)" \
  "finetune=$(echo $FINETUNE)" "recipe=$(echo $REC ${BATCH[@]+"${BATCH[@]}"})" "runs=${RUNS[*]}")
# (a scan's --budget is not part of it: a larger one continues the scan's runs, as its report advises)
if [ "$DRY" = 0 ]; then
  if [ -f "$DIR/sweep.txt" ]; then
    if [ "$(cat "$DIR/sweep.txt")" != "$SWEEP" ]; then
      if [ "$(head -c 6 "$DIR/sweep.txt")" = "setup=" ]; then
        DIFF=$( (diff <(cat "$DIR/sweep.txt") <(echo "$SWEEP") || true) | awk '
          /^< / { k = substr($2, 1, index($2, "=") - 1); there[k] = substr($0, index($0, "=") + 1) }
          /^> / { k = substr($2, 1, index($2, "=") - 1); here[k] = substr($0, index($0, "=") + 1); keys[k] }
          END { for (k in keys) if (k != "runs") { out = out sprintf("--%s \"%s\" there, \"%s\" here; ", k, there[k], here[k]) }
                if (out == "" && ("runs" in keys)) out = sprintf("its runs are %s there, %s here (--jobs splits the " \
                  "synthetic population into parts: use the --jobs of the first run); ", there["runs"], here["runs"])
                printf "%s", out }' || true)
      else
        DIFF="a sweep of an earlier version ($(head -c 60 "$DIR/sweep.txt")); "
      fi
      die "$DIR holds another sweep: ${DIFF}rerun with the same flags, or choose another --out"
    fi
  else
    echo "$SWEEP" > "$DIR/sweep.txt"
  fi
fi

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
EACH="$THREADS torch thread(s) each"; [ "$THREADS" != 0 ] || EACH="torch's default threads each"
for stage in $STAGES; do
  stage_commands "$stage" > "$DIR/logs/$stage.tsv"
  echo; echo "== $stage: $(wc -l < "$DIR/logs/$stage.tsv") run(s), $JOBS at a time, $EACH"
  run_local "$DIR/logs/$stage.tsv"
done
echo; echo "== $PY report.py --root $DIR $REPORT_FLAGS"; $PY report.py --root "$DIR" $REPORT_FLAGS
echo
echo "sweep $SETUP/$PRESET finished in $(( $(date +%s) - start )) s"
echo "summary: $DIR/summary.json"
echo "report:  $DIR/report.md"
echo "figures: $DIR/figures/"
