# One image for the API, the worker and the simulator; compose picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    TIKTOKEN_CACHE_DIR=/opt/tiktoken \
    DATA_DIR=/data \
    HOST=0.0.0.0 \
    PORT=8000

RUN pip install --no-cache-dir uv

WORKDIR /app
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-default-groups --no-install-project

COPY service ./service
COPY worker ./worker
COPY simulator ./simulator

# Token counting must work offline at run time: fetch both encodings now.
RUN python -c "import tiktoken; tiktoken.get_encoding('o200k_base'); tiktoken.get_encoding('cl100k_base')"

RUN useradd --system --uid 10001 app && mkdir -p /data /state && chown app /data /state
USER app

EXPOSE 8000
CMD ["python", "-m", "service"]
