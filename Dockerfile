# syntax=docker/dockerfile:1
# Two images from one file:
#   docker build --target operator -t trainpipe-operator .   (control plane, no torch)
#   docker build --target trainer  -t trainpipe-trainer .    (torch, torchvision, Ray)
# Both run as a non-root user. The install steps are the ones `make venv` runs.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --gid 10001 trainpipe && useradd --uid 10001 --gid 10001 --create-home trainpipe
WORKDIR /app
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY trainer/ trainer/

FROM base AS operator
RUN pip install .
USER 10001:10001
ENTRYPOINT ["trainpipe"]
CMD ["operator"]

FROM base AS trainer
RUN pip install '.[trainer]'
USER 10001:10001
ENV TRAINPIPE_CACHE=/tmp/trainpipe-cache
ENTRYPOINT ["python", "-m", "trainpipe_trainer.run"]
