#!/usr/bin/env bash
# The CUDA checks in one run, for a machine with a GPU: nccl under torchrun
# (python -m torch.distributed.run), SimCLR with fp16 + GradScaler and with bf16, channels_last,
# the views on the device, the loop's overhead and the throughput at 512 px, a Faster R-CNN
# fine-tuning from the SSL backbone with fp16, both again in channels_last, the loader workers a
# GPU needs, and the multi-process path (global BatchNorm,
# gathered negatives): two NCCL ranks when there are two GPUs; on one GPU two NCCL ranks cannot
# share the device, so the two-process run uses gloo on the CPU instead and says so.
#
# On a machine without package downloads, put the wheels it lacks (e.g. pycocotools) in .whl/:
# they are installed from there.
# Logs and summary.txt go to $OUT, else ./gpu_check_out. Each step is limited to $STEP_LIMIT s
# (120), the most important first.
# The sizes are environment variables, so the wiring can be smoke-tested on a CPU:
#   ARCH=resnet18 SIZE=64 IMAGES=40 SSL_BATCH=8 DET_BATCH=2 AMPS=bf16 DET_AMP=bf16 bash bench/gpu_check.sh

set -u -o pipefail
out=${OUT:-gpu_check_out}
py=${PYTHON:-python3}
arch=${ARCH:-resnet50} size=${SIZE:-512} images=${IMAGES:-512}
ssl_batch=${SSL_BATCH:-64} det_batch=${DET_BATCH:-8} amps=${AMPS:-fp16 bf16} det_amp=${DET_AMP:-fp16}
work=$(mktemp -d)
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
    $py -m pip install -q --no-index --no-deps --no-compile --target "$work/site" .whl/*.whl || exit 1
    export PYTHONPATH="$work/site"
fi

step() {   # step NAME COMMAND...: run it with a time limit, log to $out/NAME.log, print its status and last lines
    local name=$1 start=$SECONDS status
    shift
    echo "== $name: $*" | tee -a "$out/summary.txt"
    timeout "${STEP_LIMIT:-120}" "$@" > "$out/$name.log" 2>&1
    status=$?
    echo "   exit $status after $((SECONDS - start)) s" | tee -a "$out/summary.txt"
    grep -E "^\||img/s|done: mean|AP@|mAP|Error|error" "$out/$name.log" | tail -n 8 | sed 's/^/   /' \
        | tee -a "$out/summary.txt"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  $py -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__,
'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
  git rev-parse --short HEAD 2>/dev/null; } | tee "$out/summary.txt"

step synthetic $py -m cxr.synthetic --out "$work/vin" --images "$images" --size "$size" --seed 0 --test-images 0
step prepare $py -m cxr.prepare --csv "$work/vin/train.csv" --images "$work/vin/train" --out "$work/data" \
    --keep-normal
for amp in $amps; do
    step "ssl_$amp" $py -m torch.distributed.run --standalone --nproc_per_node=1 train_ssl.py \
        --data-dir "$work/data" --output-dir "$work/out" --experiment-name "ssl_$amp" --arch "$arch" --image-size "$size" \
        --batch-size "$ssl_batch" --epochs 2 --warmup-epochs 1 --lr 0.3 --ssl-fraction 0.5 --include-normal \
        --amp "$amp" --workers 8 --print-freq 5 --precise-bn-images 256
done
gpus=$(nvidia-smi -L 2>/dev/null | grep -c GPU)
if [ "$gpus" -ge 2 ]; then
    two=(--amp bf16 --device cuda)
else
    echo "== $gpus GPU: the two-process run uses gloo on the CPU (two NCCL ranks cannot share one GPU)" \
        | tee -a "$out/summary.txt"
    two=(--device cpu)
fi
step ssl_two_processes $py -m torch.distributed.run --standalone --nproc_per_node=2 train_ssl.py \
    --data-dir "$work/data" --output-dir "$work/out" --experiment-name two --arch "$arch" --image-size 128 \
    --batch-size 8 --epochs 1 --warmup-epochs 0 --ssl-fraction 0.5 --include-normal --workers 2 --print-freq 5 \
    --precise-bn-images 64 "${two[@]}"
step bench_ssl $py bench/bench_ssl.py --size "$size" --arch "$arch" --step-size "$size" \
    --step-batch "$((ssl_batch / 2))" --steps 10 --rounds 3
last=$(echo "$amps" | awk '{print $NF}')
step "det_$det_amp" $py -m torch.distributed.run --standalone --nproc_per_node=1 train_det.py \
    --data-dir "$work/data" --output-dir "$work/out" --experiment-name "ssl_$last" --arch "$arch" --image-size "$size" \
    --batch-size "$det_batch" --epochs 2 --warmup-iters 2 --amp "$det_amp" --workers 8 --print-freq 5
step bench_det $py bench/bench_det.py --arch "$arch" --size "$size" --batch "$det_batch" --steps 10
# channels_last is an option until a GPU measures it: the same runs in that layout
first=$(echo "$amps" | awk '{print $1}')
step "ssl_${first}_channels_last" $py -m torch.distributed.run --standalone --nproc_per_node=1 train_ssl.py \
    --data-dir "$work/data" --output-dir "$work/out" --experiment-name "ssl_cl" --arch "$arch" --image-size "$size" \
    --batch-size "$ssl_batch" --epochs 2 --warmup-epochs 1 --lr 0.3 --ssl-fraction 0.5 --include-normal \
    --amp "$first" --workers 8 --print-freq 5 --precise-bn-images 0 --channels-last
step "det_${det_amp}_channels_last" $py -m torch.distributed.run --standalone --nproc_per_node=1 train_det.py \
    --data-dir "$work/data" --output-dir "$work/out" --experiment-name "ssl_$last" --arch "$arch" \
    --image-size "$size" --batch-size "$det_batch" --epochs 2 --warmup-iters 2 --amp "$det_amp" --workers 8 \
    --print-freq 5 --channels-last --replace
step bench_loaders $py bench/bench_loaders.py
rm -rf "$work"
