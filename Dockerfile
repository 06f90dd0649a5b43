# The optinter image: the Prefect "server of deployments" (`optinter serve`), the Dask scheduler
# and workers (they import `preprocess`), and the MLflow tracking server (mlflow + psycopg2).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=true \
    MLFLOW_DISABLE_TELEMETRY=true \
    PREFECT_LOGGING_EXTRA_LOGGERS=optinter,preprocess,flows \
    PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW=ignore

WORKDIR /app

# CPU torch first (the default index would pull a multi-GB CUDA build); build with
# --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 for GPUs.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
RUN pip install --index-url ${TORCH_INDEX} "torch==${TORCH_VERSION}"

COPY pyproject.toml README.md ./
COPY preprocess ./preprocess
COPY optinter ./optinter
COPY flows ./flows
RUN pip install . psycopg2-binary

# Stage outputs, MLflow artifacts and the Prefect client's home live on the shared volume.
VOLUME ["/shared"]
CMD ["optinter", "serve"]
