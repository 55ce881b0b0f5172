# One image for web, worker, beat and migrate; the command picks the role (see docker-compose.yml).
FROM python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
WORKDIR /app
# libturbojpeg: large JPEGs' crops and thumbnails from one entropy decode (shared/jpeg_regions.py)
RUN apt-get update && apt-get install -y --no-install-recommends libturbojpeg0 && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir --index-url ${TORCH_INDEX} torch==2.14.1 torchvision==0.29.1
COPY pyproject.toml README.md ./
COPY shared shared
COPY web web
COPY worker worker
COPY training training
COPY pixelproof pixelproof
COPY migrations migrations
COPY alembic.ini ./
COPY models models
RUN pip install --no-cache-dir .
# The services run as an unprivileged user that owns only the data volume.
RUN useradd --system --uid 10001 --home-dir /data pixelproof && mkdir -p /data && chown pixelproof /data
USER pixelproof
ENV PIXELPROOF_DATA_DIR=/data PIXELPROOF_MODEL_PATH=/app/models/default.safetensors
EXPOSE 8000
CMD ["pixelproof", "web"]
