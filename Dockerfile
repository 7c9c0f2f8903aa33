# The rrm image: control plane (`rrm server`) and agent (`rrm agent`) in one, entry point `rrm`.
#   docker build -t rrm:0.1.0 .
# Used by deploy/control-plane, deploy/agent and deploy/charts/rrm-agent. Not built on the project's own
# machines (no container runtime there); CI does not build it either.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . && rm -rf /src

RUN useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent rrm
USER 10001:10001
WORKDIR /
ENTRYPOINT ["rrm"]
