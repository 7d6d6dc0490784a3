# relkd on CPUs: the `relkd` command with the PostgreSQL driver, for `relkd study worker`
# on a cluster (examples/slurm/, examples/kubernetes/, docs/scale-out.md).
#   docker build -t relkd .
#   docker run --rm relkd study worker --help
#   docker run --rm -v relkd-cache:/cache -v relkd-runs:/work/runs relkd study run studies/fmnist_quick.yaml
# The GPU image is Dockerfile.cuda. Data, the teacher cache and the runs live in volumes:
# /cache (XDG_CACHE_HOME: Fashion-MNIST's download and relkd's teacher, tuning and
# teacher-output caches) and /work/runs (relkd's default run folders, the working directory's runs/).
FROM python:3.11-slim

# CPU-only torch (no CUDA libraries: about 1 GB smaller); another index or version with
#   --build-arg TORCH_INDEX_URL=... --build-arg TORCH_SPEC="torch==X torchvision==Y"
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_SPEC="torch torchvision"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, in its own layer: it changes far less often than relkd
RUN pip install --index-url "$TORCH_INDEX_URL" $TORCH_SPEC

# relkd itself with the PostgreSQL driver (psycopg 3); the rest of its requirements from PyPI
WORKDIR /opt/relkd/src
COPY pyproject.toml setup.cfg README.md ./
COPY relkd ./relkd
RUN pip install ".[postgres]" \
    && python -c "import relkd, psycopg, torch; print('relkd', relkd.__version__, 'torch', torch.__version__)" \
    && rm -rf /opt/relkd/src/build /opt/relkd/src/*.egg-info

# A non-root user (numeric below, so that Kubernetes' runAsNonRoot can check it); group 0
# may write too, for platforms that run images under an arbitrary uid in group 0.
RUN useradd --uid 10001 --gid 0 --create-home --shell /usr/sbin/nologin relkd \
    && mkdir -p /work/runs /cache \
    && chown -R 10001:0 /work /cache \
    && chmod -R g=u /work /cache

# The shipped study files, so `relkd study worker studies/fmnist_quick.yaml` works as it is
COPY --chown=10001:0 studies /work/studies

# Give each worker its share of the cores: -e OMP_NUM_THREADS=<cores / workers on the machine>
# (torch otherwise counts the host's cores, not the container's limit).
ENV XDG_CACHE_HOME=/cache \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /work
USER 10001:0

# relkd is the container's main process, so the SIGTERM of `docker stop`, a SLURM job's
# end or a Kubernetes pod's deletion reaches it (relkd study stops cleanly on it).
ENTRYPOINT ["relkd"]
CMD ["--help"]
