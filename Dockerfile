# trackwatch image: collector and workers (`trackwatch collector ...`, `trackwatch worker ...`).
# Two stages: dependencies are built with a compiler, the runtime image carries only the venv.
FROM python:3.11-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/trackwatch
WORKDIR /src
# The build context is filtered by .dockerignore (no tests, venvs, deploy files).
COPY . .
RUN /opt/trackwatch/bin/pip install .

FROM python:3.11-slim
ENV PATH=/opt/trackwatch/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
COPY --from=build /opt/trackwatch /opt/trackwatch
COPY examples /opt/trackwatch-examples
RUN useradd --create-home --uid 10001 trackwatch
USER trackwatch
# Faust keeps local table state under the working directory; Kafka changelogs rebuild it.
WORKDIR /home/trackwatch
# 8080 collector HTTP API and /metrics; 6066 Faust web (/api/anomalies); 9108 worker /metrics.
EXPOSE 8080 6066 9108
CMD ["trackwatch", "--help"]
