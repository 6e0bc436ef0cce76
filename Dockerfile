# GPU image: NGC PyTorch (CUDA torch, Transformer-Engine, NCCL) + optmodel.
#   docker build -t optmodel .
#   docker run --gpus all -v /ckpt:/ckpt optmodel model=qwen3_8b model.checkpoint=/ckpt/Qwen3-8B
# tests/test_dockerfile.py builds the wheel from exactly the files copied below, so every
# package dir pyproject.toml lists must be copied here.
FROM nvcr.io/nvidia/pytorch:25.04-py3

WORKDIR /opt/optmodel
COPY pyproject.toml README.md ./
COPY conf ./conf
COPY optmodel ./optmodel
COPY hydra_plugins ./hydra_plugins
COPY launchers ./launchers
# Keep the image's CUDA torch and Transformer-Engine: constraints.txt pins the CPU test set,
# so it is not used here, and the build reuses the image's setuptools (no isolated env that
# could pull another torch).
RUN pip install --no-cache-dir --no-build-isolation . \
    && python -c "import optmodel.cli"

ENV HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 CUDA_DEVICE_MAX_CONNECTIONS=1
ENTRYPOINT ["optmodel"]
