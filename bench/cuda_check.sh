#!/usr/bin/env bash
# The CUDA checks and timings, in one go on a GPU machine (about 7 minutes on one H100):
#
#   bash bench/cuda_check.sh [DATA_DIR] [LOG]
#   ACC_SWITCHES="--bf16 on" bash bench/cuda_check.sh DATA_DIR   # step 4 also with these switches
#
# DATA_DIR holds FashionMNIST/raw/ (torchvision's layout; default: datasets); LOG (default
# runs/cuda_check.log) gets everything printed. Steps, timings first and alone on the GPU:
#   1. the machine: GPU, torch, CUDA, cuDNN;
#   2. bench/images.py: ours (train.py's defaults: CUDA graphs, channels_last, bf16 for the practical
#      ResNet-18 only) against the conventional DataLoader loop and its kernels alone for the three
#      models; then ours with --compile, and with bf16 for all three, against the conventional loop;
#   3. whole SI ResNet-18 (width 32) epochs (390 batches of 128) of our loop: train.py's defaults,
#      with --compile, in the default memory format, and eager;
#   4. side by side (accuracy only, so the GPU may be shared): train.py on real Fashion-MNIST
#      (60,000 / 10,000 images), and the image tests with CUDA as every script's default device
#      (pytest -n 8 where pytest-xdist is installed).
# Each step has its own time limit, so a slow one costs that step alone.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DATA=${1:-datasets}
LOG=${2:-runs/cuda_check.log}
ACC_SWITCHES=${ACC_SWITCHES:-}
TMP=$(mktemp -d)
mkdir -p "$(dirname "$LOG")"
export PYTHONUNBUFFERED=1
exec > >(tee "$LOG") 2>&1
step() { echo; echo "=== $* ($(date +%T))"; }

step "1. machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
$PY -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'cuDNN',
torch.backends.cudnn.version(), torch.cuda.get_device_name(), torch.cuda.get_device_properties(0).multi_processor_count, 'SMs')"

for switches in "" "--compile" "--bf16 on"; do
    step "2. bench/images.py ${switches:-(train.py's defaults)}"
    timeout 150 $PY bench/images.py --device cuda $switches ${switches:+--loops ours conventional}
done

step "3a. ViT-Small, whole epochs of our loop (Adam, RandAugment; CUDA graph from the first full batch)"
timeout 120 $PY bench/images.py --device cuda --models vit_small --loops ours --steps 390 --rounds 2 --warmup 10 | tail -2

for switches in "" "--compile" "--channels_last off" "--cuda_graph off"; do
    step "3. SI ResNet-18 width 32, whole epochs of our loop: ${switches:-train.py's defaults}"
    timeout 60 $PY bench/images.py --device cuda --models resnet18_si --loops ours --steps 390 --rounds 3 \
        --warmup 20 $switches | tail -2
done

step "4. Fashion-MNIST accuracy, and the image tests on CUDA"
(
    acc() {  # NAME EPOCHS MODEL WIDTH LR SEEDS... -- SWITCHES...
        local name=$1 epochs=$2 model=$3 width=$4 lr=$5; shift 5
        local seeds=() sw=()
        while [ $# -gt 0 ] && [ "$1" != "--" ]; do seeds+=("$1"); shift; done
        [ $# -gt 0 ] && shift
        sw=("$@")
        timeout 150 $PY train.py --dataset fashion_mnist --data_dir "$DATA" --model "$model" ${width:+--width "$width"} \
            --lr "$lr" --seed "${seeds[@]}" --epochs "$epochs" --device cuda "${sw[@]}" \
            --out "$TMP/$name" > "$TMP/$name.log" 2>&1 || { echo "$name failed:"; tail -5 "$TMP/$name.log"; }
        $PY - "$TMP/$name" "$name ${sw[*]:-defaults}" <<'EOF'
import json, sys
try:
    r = json.load(open(sys.argv[1] + "/results.json"))
except OSError:
    sys.exit(f"{sys.argv[2]}: no results (see its log)")
accs = " ".join(f"{m['test_acc']:.2%}" for m in r["members"])
print(f"{sys.argv[2]:44s} test acc {accs} | {r['images_per_second']:,.0f} images/s ({r['epoch']} epochs)")
EOF
    }
    for sw in "" ${ACC_SWITCHES:+"$ACC_SWITCHES"}; do
        acc "convnet_si_w32${sw:+_switched}" 10 convnet_si 32 5e-3 0 1 -- $sw
        acc "resnet18_si_w32${sw:+_switched}" 5 resnet18_si 32 5e-3 0 -- $sw
        acc "resnet18_w64${sw:+_switched}" 5 resnet18 64 0.05 0 1 2 -- $sw
    done
    acc "resnet18_w64_float32" 5 resnet18 64 0.05 0 1 2 -- --bf16 off
    acc "vit_small_float32" 5 vit_small "" 1e-3 0 1 -- --bf16 off     # appendix F's recipe: Adam, RandAugment
    acc "vit_small_bf16" 5 vit_small "" 1e-3 0 1 -- --bf16 on
) &
acc_pid=$!
xdist=$($PY -c "import xdist" 2>/dev/null && echo "-n 8")
timeout 240 $PY -m pytest -q $xdist -p no:cacheprovider tests/test_image_models.py tests/test_image_pipeline.py tests/test_custom_model.py \
    tests/test_fourier.py tests/test_geometry.py 2>&1 | tail -40
wait $acc_pid
rm -rf "$TMP"
step "done"
