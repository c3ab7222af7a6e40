# effbert's GPU image: a CUDA PyTorch base, the package installed as the README installs it, the workflow,
# and an entrypoint that runs Snakemake targets in the mounted workspace.
#   docker build -t effbert .
#   docker run --gpus all -v "$PWD:/workspace" effbert all      (targets: README "Docker"; -n first for the plan)
# Offline (air-gapped) build: wheels in docker/wheels/ are installed without the index (docker/wheels/README.md).
# CI builds this file on a Debian base up to the `smoke` stage (docker/build-test.sh): `effbert --help` and the
# demo DAG to result tables, run inside the image while it builds.

# CUDA 12.8, cuDNN 9 and PyTorch 2.9.0 with conda Python; the package needs torch>=2.3 and Python>=3.11
ARG BASE_IMAGE=pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime

FROM ${BASE_IMAGE} AS image
# torch as the README installs it, e.g. "torch==2.13.0"; empty keeps the base image's CUDA build
ARG TORCH_SPEC=""
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV VENV=/opt/effbert/venv \
    PYTHONUNBUFFERED=1 \
    HOME=/home/effbert \
    XDG_CACHE_HOME=/tmp/cache \
    MPLCONFIGDIR=/tmp/matplotlib
# the venv sees the base image's packages (its CUDA torch); everything else installs into the venv, with the
# versions pyproject.toml allows (DL3013 off: pyproject.toml and TORCH_SPEC pin, not this file)
ENV PATH=$VENV/bin:$PATH

WORKDIR /opt/effbert/src
# the dependencies first, in a layer that outlives changes to the code, then the package itself; wheels in
# docker/wheels/ (mounted, never copied into the image) replace the index when there are any
COPY pyproject.toml ./
# hadolint ignore=DL3013
RUN --mount=type=bind,source=docker/wheels,target=/tmp/wheels \
    python3 -m venv --system-site-packages "$VENV" \
    && if [ -n "$(find /tmp/wheels -name '*.whl' -print -quit)" ]; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/tmp/wheels; fi \
    && if [ -n "$TORCH_SPEC" ]; then pip install --no-cache-dir $TORCH_SPEC; fi \
    && python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir --requirement /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY README.md ./
COPY code/ code/
# hadolint ignore=DL3013
RUN --mount=type=bind,source=docker/wheels,target=/tmp/wheels \
    if [ -n "$(find /tmp/wheels -name '*.whl' -print -quit)" ]; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/tmp/wheels; fi \
    && pip install --no-cache-dir --no-deps . \
    && effbert --help > /dev/null

# the workflow, configs, model folders and the demo's inputs: copied into an empty workspace on first use
COPY Snakefile /opt/effbert/project/
COPY workflow/ /opt/effbert/project/workflow/
COPY config/ /opt/effbert/project/config/
COPY profiles/ /opt/effbert/project/profiles/
COPY models/ /opt/effbert/project/models/
COPY demo/ /opt/effbert/project/demo/
COPY docker/entrypoint.sh /usr/local/bin/effbert-entrypoint

# a non-root user; `docker run --user "$(id -u):$(id -g)"` also works (HOME and caches are writable by anyone)
RUN useradd --create-home --home-dir /home/effbert --shell /bin/bash --uid 1000 effbert \
    && chmod 1777 /home/effbert \
    && mkdir -p /workspace \
    && chown effbert:effbert /workspace
USER 1000
WORKDIR /workspace
# the data live in the workspace: raw dumps, shards, model folders, GLUE/LRA data and results
VOLUME ["/workspace"]
ENTRYPOINT ["effbert-entrypoint"]
CMD ["all"]


# The smoke test, as a build stage (CI cannot start containers): the CLI, then the demo DAG through the
# entrypoint to its result tables.
FROM image AS smoke
# a new value reruns the smoke test even when every layer above is cached (docker/build-test.sh passes one)
ARG SMOKE_RUN=""
USER 0
RUN mkdir /tmp/smoke && chown 1000:1000 /tmp/smoke
USER 1000
WORKDIR /tmp/smoke
RUN echo "smoke test ${SMOKE_RUN}" \
    && effbert --help \
    && EFFBERT_CORES=2 effbert-entrypoint all --configfile config/demo.yaml \
    && for table in pretrain glue lra; do test -s "demo/out/results/$table.csv"; cat "demo/out/results/$table.md"; done


# The default target: the image itself (the smoke stage is built only when asked for with --target smoke).
FROM image
