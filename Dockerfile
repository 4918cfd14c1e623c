# The eventsvm image every service container of docker-compose.yml runs.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libvirt-dev pkg-config gcc \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY eventsvm eventsvm
COPY consumers consumers
COPY schemas eventsvm/schemas
RUN pip install --no-cache-dir .
ENTRYPOINT []
