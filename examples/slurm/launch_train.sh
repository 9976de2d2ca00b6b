#!/usr/bin/env bash
# Shared launcher of the stage sbatch scripts: srun + torchrun (c10d rendezvous) running
# `megatron-agentic train` with a recipe, inside a pyxis container when CONTAINER_IMAGE is set.
#
#   RECIPE=qwen3-30b-a3b-stage1 sbatch --nodes 32 examples/slurm/launch_train.sh      (normally via stageN.sbatch)
#   bash examples/slurm/stage1_32k.sbatch --dry-run                                   (CPU, no Slurm needed)
#
# Everything is env-overridable:
#   RECIPE          recipe name or YAML path (megatron_agentic/recipes/)      [required]
#   NODES           node count (default: SLURM_JOB_NUM_NODES, else the recipe's plan.nodes)
#   GPUS_PER_NODE   GPUs per node (default 8)
#   RUN_ROOT        where runs live (default: $PWD/runs); RUN_NAME (default: the recipe name)
#   CKPT_DIR        checkpoint directory (default: the recipe's checkpoint.dir); resumed automatically
#   PRETRAINED      checkpoint to initialise from when CKPT_DIR is empty (default: the recipe's)
#   BLEND_FILE      `data mix` output for this stage (default: the recipe's data.blend_file)
#   EXTRA_SETS      more "--set SECTION.FIELD=VALUE" arguments, space separated
#   CONTAINER_IMAGE pyxis image (e.g. /shared/images/megatron-agentic.sqsh); empty: run on the host
#   CONTAINER_MOUNTS pyxis mounts (default: $PWD:$PWD)
#   MAX_RESTARTS    relaunches of the whole job step after a failure (node loss, NCCL timeout; default 3);
#                   each relaunch resumes from the latest complete checkpoint. A configuration error (exit 2)
#                   is reported once and never retried.
#   REQUEUE         1 (default inside Slurm): when training stops for a signal / the walltime (exit 3, after a
#                   checkpoint), `scontrol requeue` this job so it resumes; 0: exit 3 instead
#   MASTER_PORT     rendezvous port (default 29500)
#   PYTHON          python used for the CPU-side steps (default: python3)
# Flags: --dry-run  validate recipe + layout on CPU, print the commands, and train the tiny stand-in
#                   (tiny-moe-stageN, 2 CPU ranks, DRY_RUN_ITERS=3 iterations; DRY_RUN_TRAIN=0 skips it;
#                   DRY_RUN_RECIPE picks another stand-in; DRY_RUN_PRETRAINED initialises it from a checkpoint,
#                   e.g. the stage-1 dry run's, to rehearse the stage-1 -> stage-2 hand-over).
set -euo pipefail

DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "launch_train.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

: "${RECIPE:?set RECIPE to a recipe name, e.g. qwen3-30b-a3b-stage1}"
PYTHON=${PYTHON:-python3}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
RUN_ROOT=${RUN_ROOT:-$PWD/runs}
RUN_NAME=${RUN_NAME:-$(basename "${RECIPE%.yaml}")}
MAX_RESTARTS=${MAX_RESTARTS:-3}
MASTER_PORT=${MASTER_PORT:-29500}
JOB_ID=${SLURM_JOB_ID:-local-$(date +%Y%m%d-%H%M%S)}

recipe_value() {  # recipe_value SECTION.FIELD -> the resolved recipe's value (empty for null)
  "$PYTHON" - "$RECIPE" "$1" <<'EOF'
import sys
from megatron_agentic.recipes import load_recipe
section, field = sys.argv[2].split(".")
value = (load_recipe(sys.argv[1]).get(section) or {}).get(field)
print("" if value is None else value)
EOF
}

RUN_DIR="$RUN_ROOT/$RUN_NAME"
JOB_DIR="$RUN_DIR/jobs/$JOB_ID"          # per-job logs; metrics.jsonl/tensorboard stay in $RUN_DIR
mkdir -p "$JOB_DIR"

# Stop requests, installed before anything else runs (a USR1 during the pre-flight must not kill this shell):
# `#SBATCH --signal=B:USR1@600` (or `scancel --signal=USR1 --batch`) signals this shell; it creates the stop file,
# which every rank sees through the shared file system: they finish the step, save, and exit 3. A request that
# comes before training starts requeues the job without starting it. torchrun itself ignores USR1 (it would die of
# it: rc 138, a restart used up instead of a requeue); the ranks handle it.
export MEGATRON_AGENTIC_STOP_FILE="$JOB_DIR/stop_request"
rm -f "$MEGATRON_AGENTIC_STOP_FILE"
trap 'echo "[launch] stop requested (signal): asking the ranks to save and exit"; touch "$MEGATRON_AGENTIC_STOP_FILE"' USR1 TERM

NODES=${NODES:-${SLURM_JOB_NUM_NODES:-$(recipe_value plan.nodes)}}

SETS=(--set "log.dir=$RUN_DIR")
[[ -n "${CKPT_DIR:-}" ]] && SETS+=(--set "checkpoint.dir=$CKPT_DIR")
[[ -n "${PRETRAINED:-}" ]] && SETS+=(--set "checkpoint.pretrained=$PRETRAINED")
[[ -n "${BLEND_FILE:-}" ]] && SETS+=(--set "data.blend_file=$BLEND_FILE")
# shellcheck disable=SC2206
[[ -n "${EXTRA_SETS:-}" ]] && SETS+=(${EXTRA_SETS})

# A (re)started run is not finished until this job says so: a stale marker from an earlier run must not let a
# dependent stage 2 start after this one failed (even in its pre-flight).
if [[ $DRY_RUN == 0 ]]; then rm -f "$RUN_DIR/COMPLETED"; fi

CONFIG="$JOB_DIR/config.yaml"
"$PYTHON" -m megatron_agentic.recipes export "$RECIPE" "${SETS[@]}" --output "$CONFIG" >/dev/null
echo "[launch] recipe $RECIPE -> $CONFIG (nodes=$NODES x $GPUS_PER_NODE GPUs, job $JOB_ID)"

# Exit codes of `megatron-agentic train` (torchrun reports 1 for any failed rank, so rank 0 also writes
# $RUN_DIR/exit_status.json and this job's copy, $JOB_DIR/exit_status.json, the one read here): 0 done, 2
# configuration or input error, 3 saved and stopped for a signal / the walltime, 5 checkpoint.dir locked by another
# live run (a run that loses the lock writes only this job's copy, never into the other run's directories).
export MEGATRON_AGENTIC_EXIT_STATUS="$JOB_DIR/exit_status.json"
EXIT_STATUS="$MEGATRON_AGENTIC_EXIT_STATUS"
status_code() { "$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["code"])' "$EXIT_STATUS" 2>/dev/null || echo ""; }

# Validate the layout and memory before any GPU is touched (non-zero exit when it cannot run).
"$PYTHON" -m megatron_agentic.planner --recipe "$RECIPE" --nodes "$NODES" --gpus-per-node "$GPUS_PER_NODE" \
  "${SETS[@]}" --json-output "$JOB_DIR/plan.json" | tee "$JOB_DIR/plan.txt"
# Pre-flight: the layout for the full world size, the blend prefixes and the pretrained checkpoint, checked with
# the software that will train (inside the container image when there is one) before every node starts.
PREFLIGHT=(env WORLD_SIZE=$((NODES * GPUS_PER_NODE)) MEGATRON_AGENTIC_FORCE_CPU=1
  python -m megatron_agentic train --config "$CONFIG" --validate-only)
set +e
if [[ -n "${CONTAINER_IMAGE:-}" && $DRY_RUN == 0 ]]; then
  srun --nodes 1 --ntasks 1 --container-image "$CONTAINER_IMAGE" --container-mounts "${CONTAINER_MOUNTS:-$PWD:$PWD}" \
    --container-workdir "$PWD" "${PREFLIGHT[@]}"
else
  PREFLIGHT[3]=$PYTHON
  [[ $DRY_RUN == 1 ]] && PREFLIGHT+=(--no-file-checks)  # the dry run trains a tiny stand-in on mock data
  "${PREFLIGHT[@]}"
fi
rc=$?
set -e
if (( rc != 0 )); then
  echo "[launch] pre-flight failed (rc=$rc): fix the configuration; not starting the job" | tee -a "$JOB_DIR/restarts.log"
  exit 2
fi

HEAD_NODE=${HEAD_NODE:-$(scontrol show hostnames "${SLURM_JOB_NODELIST:-localhost}" 2>/dev/null | head -n1 || echo localhost)}
# `trap "" USR1; exec`: torchrun starts with USR1 ignored (inherited by the ranks until they install their handler).
TORCHRUN=(bash -c 'trap "" USR1; exec "$@"' torchrun torchrun --nnodes "$NODES" --nproc-per-node "$GPUS_PER_NODE"
  --rdzv-backend c10d --rdzv-endpoint "$HEAD_NODE:$MASTER_PORT" --rdzv-id "$JOB_ID"
  -m megatron_agentic train --config "$CONFIG")
SRUN=(srun --nodes "$NODES" --ntasks-per-node 1 --kill-on-bad-exit=1 --output "$JOB_DIR/%N.log" --open-mode=append)
if [[ -n "${CONTAINER_IMAGE:-}" ]]; then
  SRUN+=(--container-image "$CONTAINER_IMAGE" --container-mounts "${CONTAINER_MOUNTS:-$PWD:$PWD}"
    --container-workdir "$PWD")
fi
export TORCH_NCCL_ASYNC_ERROR_HANDLING=1 CUDA_DEVICE_MAX_CONNECTIONS=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}

if [[ $DRY_RUN == 1 ]]; then
  echo "[launch] dry run: would run up to $((MAX_RESTARTS + 1)) times:"
  echo "  ${SRUN[*]} ${TORCHRUN[*]}"
  if [[ ${DRY_RUN_TRAIN:-1} == 0 ]]; then echo "[launch] dry run: layout validated (DRY_RUN_TRAIN=0: no tiny run)"; exit 0; fi
  TINY=${DRY_RUN_RECIPE:-$(basename "${RECIPE%.yaml}" | sed -E 's/^qwen3-30b-a3b-/tiny-moe-/')}
  if [[ ! -f "$("$PYTHON" -c 'import megatron_agentic.recipes as r; print(r.RECIPE_DIR)')/$TINY.yaml" ]]; then
    echo "[launch] dry run: no tiny stand-in recipe $TINY; layout validated, stopping"; exit 0
  fi
  TINY_DIR="$JOB_DIR/dry-run"
  TINY_SETS=(--set "log.dir=$TINY_DIR" --set "checkpoint.dir=$TINY_DIR/checkpoints" --set "train.train_tokens=null"
    --set "train.iters=${DRY_RUN_ITERS:-3}" --set "checkpoint.interval=${DRY_RUN_ITERS:-3}")
  if [[ -n "${DRY_RUN_PRETRAINED:-}" ]]; then
    TINY_SETS+=(--set "checkpoint.pretrained=$DRY_RUN_PRETRAINED")
  else
    TINY_SETS+=(--set "checkpoint.pretrained=null")
  fi
  "$PYTHON" -m megatron_agentic.recipes export "$TINY" "${TINY_SETS[@]}" --output "$TINY_DIR/config.yaml" >/dev/null
  echo "[launch] dry run: training $TINY on 2 CPU ranks -> $TINY_DIR"
  DRY_PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  MEGATRON_AGENTIC_FORCE_CPU=1 OMP_NUM_THREADS=1 bash -c 'trap "" USR1; exec "$@"' torchrun \
    "$PYTHON" -m torch.distributed.run --nnodes 1 --nproc-per-node 2 \
    --rdzv-backend c10d --rdzv-endpoint "127.0.0.1:$DRY_PORT" --rdzv-id "dry-$JOB_ID" \
    -m megatron_agentic train --config "$TINY_DIR/config.yaml" 2>&1 | tee "$TINY_DIR.log"
  exit "${PIPESTATUS[0]}"
fi

# The job's end time is passed on (the trainer saves checkpoint.save_before_walltime_s before it; a margin longer than
# the time left is reduced by the trainer with a warning).
if [[ -n "${SLURM_JOB_ID:-}" ]]; then
  end=$(squeue -h -j "$SLURM_JOB_ID" -o %e 2>/dev/null | head -n1 || true)
  if [[ -n "$end" && "$end" != "N/A" && "$end" != "Unknown" ]]; then
    MEGATRON_AGENTIC_JOB_END_TIME=$(date -d "$end" +%s 2>/dev/null || echo "")
    export MEGATRON_AGENTIC_JOB_END_TIME
  fi
fi

# Relaunch loop: a failed step (node loss, NCCL timeout, killed rank) starts again on the allocation and
# `megatron-agentic train` resumes from checkpoint.dir's latest complete checkpoint. Exit 2 (configuration) is not
# retried; exit 3 (saved for a signal / the walltime) requeues the job, which resumes when it starts again.
REQUEUE=${REQUEUE:-$([[ -n "${SLURM_JOB_ID:-}" ]] && echo 1 || echo 0)}
attempt=0
requeue_or_exit() {  # after a stop request: requeue the job (or exit 3), logging what was saved
  if [[ $REQUEUE == 1 ]]; then
    echo "[launch] $1: requeueing job $SLURM_JOB_ID" | tee -a "$JOB_DIR/restarts.log"
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
  fi
  echo "[launch] $1; rerun to continue" | tee -a "$JOB_DIR/restarts.log"
  exit 3
}
while true; do
  if [[ -e "$MEGATRON_AGENTIC_STOP_FILE" ]]; then
    requeue_or_exit "stop requested before training started (nothing new to save)"
  fi
  rm -f "$EXIT_STATUS"
  set +e
  "${SRUN[@]}" "${TORCHRUN[@]}" &
  step=$!
  wait "$step"; rc=$?
  while kill -0 "$step" 2>/dev/null; do wait "$step"; rc=$?; done  # `wait` returns early when a trap fires
  set -e
  code=$(status_code)
  if [[ $rc == 0 && ${code:-0} == 0 ]]; then break; fi
  if [[ $code == 2 ]]; then
    echo "[launch] configuration error (exit 2): not retrying; see $JOB_DIR" | tee -a "$JOB_DIR/restarts.log"
    exit 2
  fi
  if [[ $code == 5 ]]; then
    echo "[launch] checkpoint directory locked by another live run (exit 5): not retrying; see $JOB_DIR" \
      | tee -a "$JOB_DIR/restarts.log"
    exit 5
  fi
  if [[ $code == 3 ]]; then  # exit_status.json says the checkpoint for the stop request is the latest one
    requeue_or_exit "checkpoint saved for a stop request (exit 3)"
  fi
  if [[ -e "$MEGATRON_AGENTIC_STOP_FILE" ]]; then
    requeue_or_exit "stop requested but the ranks did not confirm a checkpoint (rc=$rc, exit status '${code}'): resuming from the latest complete one"
  fi
  attempt=$((attempt + 1))
  echo "[launch] step failed (rc=$rc), attempt $attempt of $MAX_RESTARTS" | tee -a "$JOB_DIR/restarts.log"
  if (( attempt > MAX_RESTARTS )); then exit "$rc"; fi
  sleep "${RESTART_DELAY:-30}"
done
touch "$RUN_DIR/COMPLETED"
echo "[launch] done; logs in $JOB_DIR, metrics in $RUN_DIR/metrics.jsonl (marker $RUN_DIR/COMPLETED)"
