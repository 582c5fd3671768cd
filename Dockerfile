# The learnstream image used by docker-compose.yml (producer, workers, reader).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream ./stream
COPY producers ./producers
COPY consumers ./consumers
RUN pip install --no-cache-dir .
ENTRYPOINT ["learnstream"]
