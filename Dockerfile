# syntax=docker/dockerfile:1
# One image for every process of stripe-lifecycle: `lifecycle api` (the default command),
# `lifecycle worker` and `lifecycle migrate`; docker-compose.yml picks the command per service.
# Python 3.11: the version the project is developed and type-checked against (pyproject.toml).
FROM python:3.11-slim-trixie

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 lifecycle \
    && useradd --system --uid 10001 --gid lifecycle --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin lifecycle

# Only what the build needs: the metadata, the readme it names, and the package source
# (the Alembic migrations ship inside the package).
WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . \
    && rm -rf /build

# ./data is the settings' default data directory (and SQLite location when no
# LIFECYCLE_DATABASE_URL is given); it is the only place the app may write.
WORKDIR /app
RUN mkdir data && chown lifecycle:lifecycle data

USER lifecycle:lifecycle
EXPOSE 8000
CMD ["lifecycle", "api"]
