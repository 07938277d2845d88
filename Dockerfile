# The kafka_saga platform image: `python -m kafka_saga ...` (see compose.yaml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what `pip install .` needs: the metadata (pyproject.toml names README.md) and the package.
COPY pyproject.toml README.md ./
COPY kafka_saga ./kafka_saga
RUN pip install . && rm -rf build *.egg-info

RUN useradd --create-home --uid 10001 app
USER app

# In a container the servers must listen on every interface; point the platform at real
# Kafka with KAFKA_BOOTSTRAP_SERVERS (without it, `run` starts the embedded broker).
ENV QUERY_API_HOST=0.0.0.0 \
    LOG_FORMAT=json

# query API, then the aggregator, tracker and dlq metrics servers (when their ports are set)
EXPOSE 8080 9101 9102 9103

CMD ["python", "-m", "kafka_saga", "run", "--roles", "all", "--host", "0.0.0.0"]
