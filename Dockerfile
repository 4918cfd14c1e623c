# The eventsvm image every service container of docker-compose.yml runs.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libvirt-dev pkg-config gcc libjemalloc2 \
    && rm -rf /var/lib/apt/lists/* \
    && jemalloc="$(find /usr/lib -name libjemalloc.so.2 | head -n 1)" && test -n "$jemalloc" \
    && ln -s "$jemalloc" /usr/local/lib/libjemalloc.so.2
WORKDIR /app
COPY pyproject.toml README.md ./
COPY eventsvm eventsvm
COPY consumers consumers
COPY schemas eventsvm/schemas
RUN pip install --no-cache-dir .
# Every process allocates through jemalloc: with glibc's malloc a long-running API's resident
# memory creeps with the servers it has seen, held free in a fragmented heap (docs/decisions.md,
# "The API's last creep").
ENV LD_PRELOAD=/usr/local/lib/libjemalloc.so.2
ENTRYPOINT []
