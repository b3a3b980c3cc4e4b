# The bot process: chat adapters and the database, without the GPU stack.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY pipeline ./pipeline
COPY storage ./storage
RUN pip install ".[telegram,discord]"
RUN useradd --create-home --uid 1000 facechain && mkdir -p /data && chown facechain /data
USER facechain
ENV FACECHAIN_DATA_DIR=/data
CMD ["facechain-bot", "bot"]
