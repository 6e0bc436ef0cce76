# GPU image: NGC PyTorch (CUDA torch, Transformer-Engine, NCCL) + optmodel.
# docker build -t optmodel . && docker run --gpus all -v /ckpt:/ckpt optmodel model=qwen3_8b model.checkpoint=/ckpt/Qwen3-8B
FROM nvcr.io/nvidia/pytorch:25.04-py3

WORKDIR /opt/optmodel
COPY pyproject.toml README.md ./
COPY conf ./conf
COPY optmodel ./optmodel
COPY launchers ./launchers
# Keep the image's CUDA torch: constraints.txt pins the CPU test set, so it is not used here.
RUN pip install --no-cache-dir . && python -c "import optmodel.cli"

ENV HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 CUDA_DEVICE_MAX_CONNECTIONS=1
ENTRYPOINT ["optmodel"]
