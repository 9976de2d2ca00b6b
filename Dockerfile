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
# - Transformer Engine: the base image's own, kept when it is inside the range megatron-core 0.16.1 declares
#   (`transformer-engine[core_cu13,pytorch]>=2.9.0a0,<2.12.0`, its package metadata, extra "dev");
#   requirements/check_te.py fails the build with one line when it is not. Replacing it would force a source build
#   of transformer_engine_torch against NGC's pre-release torch (long, fragile). requirements/gpu.txt (TE 2.10.0)
#   is for `pip install -e ".[gpu]"` outside the image.
# - torch, numpy, Apex, DALI, Triton, NCCL: the base image's, kept as they are.
# - NGC images carry /etc/pip/constraint.txt (since 25.03) pinning every preinstalled package; pip applies it to
#   every install (PIP_CONSTRAINT). Lines for the packages pinned in requirements/pins.txt are removed from it, then
#   `pip install --dry-run` checks that the pins resolve against everything else it pins (torch, numpy, TE, ...)
#   before anything is installed; a conflict fails the build with one line.
# - Base image nvcr.io/nvidia/pytorch:25.11-py3: megatron-core 0.16.1's own dev image (its docker/.ngc_version.dev);
#   NeMo 25.11 (built on it) lists Transformer Engine 2.9 and CUDA 13.0; NGC PyTorch images of this generation run
#   Python 3.12 (25.12 release notes: /usr/local/lib/python3.12/dist-packages). The build prints the versions it
#   finds (check_te.py, and `megatron-agentic doctor` at run time): those, not this comment, are authoritative.
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
        for name in $(sed -e 's/#.*//' -e 's/\[.*//' -e 's/[=<>!~].*//' requirements/pins.txt \
                      | tr '[:upper:]_' '[:lower:]-' | sort -u); do \
            sed -i -E "/^${name}([=<>!~ ]|$)/Id; /^$(echo "$name" | tr '-' '_')([=<>!~ ]|$)/Id" "$constraint"; \
        done; \
    fi; \
    pip install --dry-run --quiet -r requirements/pins.txt \
        || { echo "error: requirements/pins.txt does not resolve against the image's pins ($constraint); see above" >&2; exit 1; }; \
    pip install -r requirements/pins.txt; \
    python requirements/check_te.py

COPY setup.py pyproject.toml README.md ./
COPY megatron_agentic ./megatron_agentic
COPY kernels ./kernels
COPY data_tools ./data_tools
COPY examples ./examples
COPY benchmarks ./benchmarks
RUN pip install --no-deps -e . \
    && python -c "import megatron_agentic.kernels.flash_attention, megatron.core, transformer_engine; print('megatron-core', megatron.core.__version__)"

# Run as an unprivileged user (uid 1000 by default; match your cluster's with --build-arg USER_UID=...).
ARG USER_UID=1000
RUN useradd --create-home --non-unique --uid "${USER_UID}" --shell /bin/bash agentic \
    && mkdir -p /workspace && chown agentic /workspace
USER agentic
WORKDIR /workspace
# On a GPU node this reports the GPUs, NCCL, TE/Apex/DALI/Triton and the code paths training will use.
CMD ["megatron-agentic", "doctor"]
