# megatron-agentic for H100 nodes, on NVIDIA's NGC PyTorch image (CUDA, NCCL, cuDNN, torch, Apex, DALI, Triton).
#
#   docker build -t megatron-agentic:0.1.0 .
#   docker run --gpus all --rm -it --ipc=host --ulimit memlock=-1 --ulimit stack=67108864 \
#       -v $PWD/data:/workspace/data -v $PWD/checkpoints:/workspace/checkpoints megatron-agentic:0.1.0 \
#       megatron-agentic doctor
#   # Slurm + pyxis: enroot import dockerd://megatron-agentic:0.1.0 && \
#   #   CONTAINER_IMAGE=$PWD/megatron-agentic+0.1.0.sqsh sbatch examples/slurm/stage1_32k.sbatch
#
# Versions (tests/ops/test_container.py checks this file against them; no image is built in CI: the CI machine has
# no GPU and no registry access):
# - Python packages: requirements/pins.txt (the same pins setup.py installs), exact versions.
# - Transformer Engine: requirements/gpu.txt, inside the range megatron-core 0.16.1 is tested with
#   (`transformer-engine[core_cu13,pytorch]>=2.9.0a0,<2.12.0`, its own package metadata, extra "dev"). The base
#   image's own TE is replaced by that pin, so the result does not depend on which TE an NGC release ships.
# - torch, numpy, Apex, DALI, Triton, NCCL: the base image's, kept as they are.
# - NGC images carry /etc/pip/constraint.txt (since 25.03) pinning every preinstalled package; pip applies it to
#   every install (PIP_CONSTRAINT). Lines for the packages pinned here are removed from it explicitly, so pip
#   installs our pins instead of failing with a resolution conflict; all other base pins (torch, numpy, ...) stay.
ARG BASE_IMAGE=nvcr.io/nvidia/pytorch:25.11-py3
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TOKENIZERS_PARALLELISM=false \
    CUDA_DEVICE_MAX_CONNECTIONS=1 \
    TORCH_NCCL_ASYNC_ERROR_HANDLING=1

WORKDIR /opt/megatron-agentic

# Dependencies first (cached layer).
COPY requirements ./requirements
RUN set -eux; \
    constraint=/etc/pip/constraint.txt; \
    if [ -f "$constraint" ]; then \
        cp "$constraint" "$constraint.ngc"; \
        for name in $(sed -e 's/#.*//' -e 's/\[.*//' -e 's/[=<>!~].*//' requirements/pins.txt requirements/gpu.txt \
                      | tr '[:upper:]_' '[:lower:]-' | sort -u); do \
            sed -i -E "/^${name}([=<>!~ ]|$)/Id; /^$(echo "$name" | tr '-' '_')([=<>!~ ]|$)/Id" "$constraint"; \
        done; \
    fi; \
    pip uninstall -y transformer-engine transformer-engine-cu12 transformer-engine-torch || true; \
    pip install --no-build-isolation -r requirements/gpu.txt; \
    pip install -r requirements/pins.txt

COPY setup.py pyproject.toml README.md ./
COPY megatron_agentic ./megatron_agentic
COPY kernels ./kernels
COPY data_tools ./data_tools
COPY examples ./examples
COPY benchmarks ./benchmarks
RUN pip install --no-deps -e . \
    && python -c "import megatron_agentic, megatron.core, transformer_engine; print('megatron-core', megatron.core.__version__)"

# Run as an unprivileged user (uid 1000 by default; match your cluster's with --build-arg USER_UID=...).
ARG USER_UID=1000
RUN useradd --create-home --non-unique --uid "${USER_UID}" --shell /bin/bash agentic \
    && mkdir -p /workspace && chown agentic /workspace
USER agentic
WORKDIR /workspace
# On a GPU node this reports the GPUs, NCCL, TE/Apex/DALI/Triton and the code paths training will use.
CMD ["megatron-agentic", "doctor"]
