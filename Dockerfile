# The learnstream image used by docker-compose.yml (producer, workers, reader).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream ./stream
RUN pip install --no-cache-dir .
# Compile the numba kernels into the image's cache: workers start without compiling.
ENV NUMBA_CACHE_DIR=/app/.numba-cache
RUN python -c "from stream.model import kernel; from stream.events import batch; kernel.warm_up(); batch.warm_up()"
ENTRYPOINT ["learnstream"]
