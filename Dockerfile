# The streambatch image of the demo stack (docker-compose.yml): the CLI, the
# three flows, the router and workers of the order workflow, and the report. Only the base image comes from Docker Hub;
# everything else comes from PyPI, at the versions pinned in pyproject.toml.

# Build stage: the project's own wheel (setuptools is fetched from PyPI).
FROM python:3.11.16-slim-trixie AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# All of the context (.dockerignore leaves out tests, data, caches): the packages
# pyproject.toml lists, whichever they are, end up in the wheel.
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels .

# Runtime stage: a plain (non-editable) install of that wheel and its pinned
# dependencies, run as an unprivileged user.
FROM python:3.11.16-slim-trixie
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=1 \
    STREAMBATCH_DATA_DIR=/data
# /data belongs to the user before a volume is mounted there, so a fresh named
# volume starts out writable by it.
RUN groupadd --system --gid 10001 streambatch \
    && useradd --system --uid 10001 --gid streambatch --home-dir /app \
        --shell /usr/sbin/nologin streambatch \
    && mkdir -p /app /data \
    && chown streambatch:streambatch /app /data
COPY --from=build /wheels/ /tmp/wheels/
# The postgres extra: the stack keeps the handlers' store in PostgreSQL.
RUN pip install "$(ls /tmp/wheels/*.whl)[postgres]" && rm -rf /tmp/wheels
COPY docker/produce-loop.sh /usr/local/bin/streambatch-produce-loop
COPY docker/report-loop.sh /usr/local/bin/streambatch-report-loop
RUN chmod 0755 /usr/local/bin/streambatch-produce-loop /usr/local/bin/streambatch-report-loop
# The handlers' configuration (`streambatch route` and `worker` read config/*.toml
# from the working directory); mount your own over /app/config to change it.
COPY config/handlers.toml config/rules.toml /app/config/
WORKDIR /app
USER streambatch
# STREAMBATCH_METRICS_PORT in docker-compose.yml.
EXPOSE 9100
CMD ["streambatch", "--help"]
