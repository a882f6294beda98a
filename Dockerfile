# syntax=docker/dockerfile:1
# Two images from one file:
#   docker build --target operator -t trainpipe-operator .   (control plane, no torch)
#   docker build --target trainer  -t trainpipe-trainer .    (torch, torchvision, Ray)
# Both run as a non-root user. The install steps are the ones `make venv` runs.
# Lint: `hadolint --failure-threshold warning Dockerfile` (tests/unit/test_dockerfile.py).
# No HEALTHCHECK: Kubernetes ignores it; the chart probes the operator's liveness port.
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
# The chart runs this image with readOnlyRootFilesystem and /tmp as an emptyDir:
# no bytecode is written (PYTHONDONTWRITEBYTECODE, above), and anything that
# reaches for $HOME or a cache directory lands in /tmp.
ENV HOME=/tmp XDG_CACHE_HOME=/tmp/.cache
ENTRYPOINT ["trainpipe"]
CMD ["operator"]

FROM base AS trainer
# DL3013 (pin versions in pip) cannot apply here: this installs the local
# project itself, whose dependencies are declared in pyproject.toml. hadolint
# exempts a bare `pip install .`, not `.[extra]`; the ignore covers this line only.
# hadolint ignore=DL3013
RUN pip install '.[trainer,tracking]'
USER 10001:10001
ENV TRAINPIPE_CACHE=/tmp/trainpipe-cache
ENTRYPOINT ["python", "-m", "trainpipe_trainer.run"]
