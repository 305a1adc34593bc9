#!/usr/bin/env bash
# GPU smoke test of the trainer at scale, as one command from the repository root:
#
#   scripts/gpu-smoke.sh
#
# On a machine with an NVIDIA GPU (and PyPI within reach) it installs vLLM into its own
# venv, builds the tiny base model, serves it with vLLM (--enable-lora, runtime LoRA
# updating on), starts the trainer with VLLM_BASE_URL pointing at it, trains an adapter
# on the GPU, deploys it through the trainer's load_lora_adapter (the call the service
# makes), and chats with it through the trainer (plain and streamed) and straight to
# vLLM. One line per step; the first failure stops it with a non-zero exit and the
# reason, plus the tail of the log that explains it.
#
# It has not been run yet: the machines this repository is built on have no GPU.
#
# Settings (environment):
#   GPU_SMOKE_DIR     work folder (models, data, venv, logs)   default .var/gpu-smoke
#   VLLM_PORT         vLLM's port on 127.0.0.1                 default 8300
#   TRAINER_PORT      the trainer's port on 127.0.0.1          default 8301
#   VLLM_BIN          an existing `vllm` executable to use instead of installing one
#   GPU_SMOKE_EPOCHS  epochs of the smoke job                   default 40
set -euo pipefail
cd "$(dirname "$0")/.."

VLLM_VERSION=0.33.0  # the same release as the vllm/vllm-openai image in docker-compose.yml
WORK="${GPU_SMOKE_DIR:-.var/gpu-smoke}"
VLLM_PORT="${VLLM_PORT:-8300}"
TRAINER_PORT="${TRAINER_PORT:-8301}"
BASE_MODEL=tiny-chat
TRAINER_PY=.venv-trainer/bin/python
PIDS=()

step() { printf '[gpu-smoke] %s\n' "$*"; }
fail() {
    printf '[gpu-smoke] FAILED: %s\n' "$1" >&2
    if [ "${2:-}" != "" ] && [ -f "$2" ]; then
        printf '[gpu-smoke] last lines of %s:\n' "$2" >&2
        tail -n 40 "$2" >&2
    fi
    exit 1
}
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'fail "interrupted"' INT TERM

wait_for() {  # URL, seconds, what, log, pid
    local deadline=$((SECONDS + $2))
    until curl -sf -o /dev/null "$1"; do
        kill -0 "$5" 2>/dev/null || fail "$3 exited before it answered" "$4"
        [ "$SECONDS" -lt "$deadline" ] || fail "$3 did not answer $1 within $2 s" "$4"
        sleep 2
    done
}

step "1/9 checking the machine"
command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: this needs an NVIDIA GPU and its driver"
GPU="$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -n 1)" \
    || fail "nvidia-smi lists no GPU"
[ -n "$GPU" ] || fail "nvidia-smi lists no GPU"
step "    GPU: $GPU"
command -v curl >/dev/null || fail "curl is needed"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || fail "Python 3.11 or newer is needed"
for port in "$VLLM_PORT" "$TRAINER_PORT"; do
    if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
        fail "port $port is already in use (set VLLM_PORT / TRAINER_PORT)"
    fi
done
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
rm -rf "$WORK/models" "$WORK/data"
mkdir -p "$WORK/models" "$WORK/data"

step "2/9 installing the trainer's venv (make install-trainer: torch with CUDA from PyPI)"
make install-trainer >"$WORK/install-trainer.log" 2>&1 || fail "make install-trainer failed" "$WORK/install-trainer.log"
"$TRAINER_PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
    || fail "the trainer's torch does not see the GPU (a CPU-only torch wheel?)"

step "3/9 installing vLLM $VLLM_VERSION into its own venv"
if [ -n "${VLLM_BIN:-}" ]; then
    [ -x "$VLLM_BIN" ] || fail "VLLM_BIN=$VLLM_BIN is not executable"
else
    if [ ! -x "$WORK/vllm-venv/bin/vllm" ] \
        || ! "$WORK/vllm-venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('vllm') != '$VLLM_VERSION')" 2>/dev/null; then
        python3 -m venv "$WORK/vllm-venv"
        "$WORK/vllm-venv/bin/python" -m pip install --quiet --upgrade pip >"$WORK/install-vllm.log" 2>&1 \
            || fail "could not upgrade pip in the vLLM venv" "$WORK/install-vllm.log"
        "$WORK/vllm-venv/bin/python" -m pip install --quiet "vllm==$VLLM_VERSION" >>"$WORK/install-vllm.log" 2>&1 \
            || fail "pip could not install vllm==$VLLM_VERSION" "$WORK/install-vllm.log"
    fi
    VLLM_BIN="$WORK/vllm-venv/bin/vllm"
fi

step "4/9 building the tiny base model from the smoke data"
TRAIN_FILE="$WORK/train.jsonl"
"$TRAINER_PY" scripts/gpu_smoke.py write-data "$TRAIN_FILE" || fail "could not write the smoke data"
"$TRAINER_PY" -m trainer.tiny "$WORK/models/$BASE_MODEL" --train-file "$TRAIN_FILE" \
    >"$WORK/tiny.log" 2>&1 || fail "python -m trainer.tiny failed" "$WORK/tiny.log"

step "5/9 starting vLLM on 127.0.0.1:$VLLM_PORT (--enable-lora, runtime LoRA loading)"
# The tiny model trains LoRA r=32: --max-lora-rank must be at least that. It is stored in
# float32; bf16 is what vLLM's GPU kernels want. --enforce-eager skips CUDA graph capture
# (a tiny model gains nothing from it, and start-up is quicker).
VLLM_ALLOW_RUNTIME_LORA_UPDATING=True HF_HUB_OFFLINE=1 "$VLLM_BIN" serve "$WORK/models/$BASE_MODEL" \
    --served-model-name "$BASE_MODEL" \
    --enable-lora --max-lora-rank 32 --max-loras 2 \
    --dtype bfloat16 --max-model-len 1024 --gpu-memory-utilization 0.25 --enforce-eager \
    --host 127.0.0.1 --port "$VLLM_PORT" >"$WORK/vllm.log" 2>&1 &
PIDS+=("$!")
VLLM_PID=$!
wait_for "http://127.0.0.1:$VLLM_PORT/health" 900 "vLLM" "$WORK/vllm.log" "$VLLM_PID"
curl -sf "http://127.0.0.1:$VLLM_PORT/v1/models" | grep -q "\"$BASE_MODEL\"" \
    || fail "vLLM does not list $BASE_MODEL" "$WORK/vllm.log"

step "6/9 starting the trainer on 127.0.0.1:$TRAINER_PORT with VLLM_BASE_URL"
VLLM_BASE_URL="http://127.0.0.1:$VLLM_PORT" "$TRAINER_PY" -m trainer --port "$TRAINER_PORT" \
    --models-dir "$WORK/models" --data-dir "$WORK/data" >"$WORK/trainer.log" 2>&1 &
PIDS+=("$!")
TRAINER_PID=$!
wait_for "http://127.0.0.1:$TRAINER_PORT/health" 120 "the trainer" "$WORK/trainer.log" "$TRAINER_PID"

step "7/9 training, deploying and chatting (scripts/gpu_smoke.py)"
SMOKE_TRAINER_URL="http://127.0.0.1:$TRAINER_PORT/v1" \
SMOKE_VLLM_URL="http://127.0.0.1:$VLLM_PORT/v1" \
SMOKE_BASE_MODEL="$BASE_MODEL" \
SMOKE_EPOCHS="${GPU_SMOKE_EPOCHS:-40}" \
    "$TRAINER_PY" scripts/gpu_smoke.py run "$TRAIN_FILE" \
    || fail "the smoke run failed (trainer log: $WORK/trainer.log, vLLM log: $WORK/vllm.log)" "$WORK/trainer.log"

step "8/9 vLLM's log has no errors"
if grep -E "^(ERROR|CRITICAL)|Traceback" "$WORK/vllm.log" >/dev/null; then
    fail "vLLM logged an error" "$WORK/vllm.log"
fi

step "9/9 passed: trained on the GPU, deployed into vLLM by the trainer, answered through both"
