# The bot process: chat adapters and the database, without the GPU stack.
# Versions: constraints.txt, the tested set (scripts/constraints).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY bot ./bot
COPY pipeline ./pipeline
COPY storage ./storage
RUN pip install -c constraints.txt ".[telegram,discord]"
RUN useradd --create-home --uid 1000 facechain && mkdir -p /data /styles && chown facechain /data /styles
USER facechain
ENV FACECHAIN_DATA_DIR=/data FACECHAIN_STYLES_DIR=/styles
CMD ["facechain-bot", "bot"]
