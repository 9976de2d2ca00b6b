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
#                   each relaunch resumes from the latest complete checkpoint
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

NODES=${NODES:-${SLURM_JOB_NUM_NODES:-$(recipe_value plan.nodes)}}
RUN_DIR="$RUN_ROOT/$RUN_NAME"
JOB_DIR="$RUN_DIR/jobs/$JOB_ID"          # per-job logs; metrics.jsonl/tensorboard stay in $RUN_DIR
mkdir -p "$JOB_DIR"

SETS=(--set "log.dir=$RUN_DIR")
[[ -n "${CKPT_DIR:-}" ]] && SETS+=(--set "checkpoint.dir=$CKPT_DIR")
[[ -n "${PRETRAINED:-}" ]] && SETS+=(--set "checkpoint.pretrained=$PRETRAINED")
[[ -n "${BLEND_FILE:-}" ]] && SETS+=(--set "data.blend_file=$BLEND_FILE")
# shellcheck disable=SC2206
[[ -n "${EXTRA_SETS:-}" ]] && SETS+=(${EXTRA_SETS})

CONFIG="$JOB_DIR/config.yaml"
"$PYTHON" -m megatron_agentic.recipes export "$RECIPE" "${SETS[@]}" --output "$CONFIG" >/dev/null
echo "[launch] recipe $RECIPE -> $CONFIG (nodes=$NODES x $GPUS_PER_NODE GPUs, job $JOB_ID)"

# Validate the layout and memory before any GPU is touched (non-zero exit when it cannot run).
"$PYTHON" -m megatron_agentic.planner --recipe "$RECIPE" --nodes "$NODES" --gpus-per-node "$GPUS_PER_NODE" \
  "${SETS[@]}" | tee "$JOB_DIR/plan.txt"
"$PYTHON" -m megatron_agentic.planner --recipe "$RECIPE" --nodes "$NODES" --gpus-per-node "$GPUS_PER_NODE" \
  "${SETS[@]}" --json > "$JOB_DIR/plan.json"
WORLD_SIZE=$((NODES * GPUS_PER_NODE)) MEGATRON_AGENTIC_FORCE_CPU=1 \
  "$PYTHON" -m megatron_agentic train --config "$CONFIG" --validate-only

HEAD_NODE=${HEAD_NODE:-$(scontrol show hostnames "${SLURM_JOB_NODELIST:-localhost}" 2>/dev/null | head -n1 || echo localhost)}
TORCHRUN=(torchrun --nnodes "$NODES" --nproc-per-node "$GPUS_PER_NODE"
  --rdzv-backend c10d --rdzv-endpoint "$HEAD_NODE:$MASTER_PORT" --rdzv-id "$JOB_ID"
  -m megatron_agentic train --config "$CONFIG")
SRUN=(srun --nodes "$NODES" --ntasks-per-node 1 --kill-on-bad-exit=1 --output "$JOB_DIR/%N.log")
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
  MEGATRON_AGENTIC_FORCE_CPU=1 OMP_NUM_THREADS=1 "$PYTHON" -m torch.distributed.run --nnodes 1 --nproc-per-node 2 \
    --rdzv-backend c10d --rdzv-endpoint "127.0.0.1:$DRY_PORT" --rdzv-id "dry-$JOB_ID" \
    -m megatron_agentic train --config "$TINY_DIR/config.yaml" 2>&1 | tee "$TINY_DIR.log"
  exit "${PIPESTATUS[0]}"
fi

# Relaunch loop: a failed step (node loss, NCCL timeout, killed rank) starts again on the allocation and
# `megatron-agentic train` resumes from checkpoint.dir's latest complete checkpoint. With `#SBATCH --requeue`
# Slurm also requeues the whole job after a node failure; it resumes the same way.
attempt=0
until "${SRUN[@]}" "${TORCHRUN[@]}"; do
  rc=$?
  attempt=$((attempt + 1))
  echo "[launch] step failed (rc=$rc), attempt $attempt of $MAX_RESTARTS" | tee -a "$JOB_DIR/restarts.log"
  if (( attempt > MAX_RESTARTS )); then exit "$rc"; fi
  sleep "${RESTART_DELAY:-30}"
done
echo "[launch] done; logs in $JOB_DIR, metrics in $RUN_DIR/metrics.jsonl"
