# cardflow's image: `docker build -t cardflow .`; the entrypoint is the `cardflow` command.
# Stage 1 builds every wheel (cardflow's and its pinned dependencies'); stage 2 installs them into
# a slim Python with no compilers, runs as a non-root user, and has tini as PID 1 so SIGTERM
# reaches the worker (it commits its offsets on the way out).
FROM python:3.11.7-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential=12.9 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cardflow ./cardflow
COPY agents ./agents
COPY topologies ./topologies
COPY connectors ./connectors
COPY schemas ./schemas
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11.7-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini=0.19.0-1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 cardflow \
 && useradd --uid 10001 --gid cardflow --home-dir /var/lib/cardflow --create-home --shell /usr/sbin/nologin cardflow
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels cardflow \
 && rm -rf /wheels
ENV CARDFLOW_DATA_DIR=/var/lib/cardflow \
    CARDFLOW_CACHE_DIR=/tmp/cardflow-cache \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /var/lib/cardflow
EXPOSE 6066 8080
ENTRYPOINT ["/usr/bin/tini", "--", "cardflow"]
CMD ["--help"]
