# tgi-collector: a gRPC service that scrapes Hugging Face TGI /metrics.
#
# Build from the public base (a registry is needed; --format docker keeps the HEALTHCHECK,
# which the OCI image format has no field for):
#   podman build --format docker -t tgi-collector .        (or: docker build -t tgi-collector .)
# Build without any registry, from a local Debian base (scripts/build_base_image.sh makes it):
#   podman build --isolation chroot --format docker \
#     --build-arg BASE_IMAGE=localhost/tgi-collector-base:bookworm -t tgi-collector .
# Behind a TLS-intercepting proxy, hand pip the CA bundle as a build secret (not kept in
# any layer): --secret id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt
# Run:
#   podman run -d -p 50051:50051 tgi-collector
#
# Any base with python3 >= 3.11, python3 -m venv and useradd works; both stages must use the same
# base, because the venv built in the first is copied whole into the second.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# A venv: Debian's own python3 is "externally managed" (PEP 668) and refuses pip outside one.
RUN python3 -m venv /opt/tgi-collector
WORKDIR /src
COPY pyproject.toml README.md ./
COPY tgi_collector ./tgi_collector
# Install the project and its dependencies (binary wheels: no compiler in either stage), then
# drop pip and setuptools, which the service never uses, and smoke-test the entry point.
RUN --mount=type=secret,id=ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
 && /opt/tgi-collector/bin/pip install --no-cache-dir --only-binary=:all: . \
 && /opt/tgi-collector/bin/pip uninstall --yes pip setuptools \
 && /opt/tgi-collector/bin/tgi-collector --version

FROM ${BASE_IMAGE}
# A fixed numeric UID/GID, so USER and volume ownership do not depend on name lookup.
RUN useradd --user-group --uid 10001 --no-log-init \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin collector
COPY --from=build /opt/tgi-collector /opt/tgi-collector
ENV PATH=/opt/tgi-collector/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The container's defaults as settings, not CMD flags, so that `-e TGI_COLLECTOR_...` overrides
# them (flags would win over every variable). An empty TGI_COLLECTOR_METRICS_LISTEN turns the
# metrics port off.
ENV TGI_COLLECTOR_LISTEN=0.0.0.0:50051 \
    TGI_COLLECTOR_METRICS_LISTEN=0.0.0.0:9464 \
    TGI_COLLECTOR_GRACE_SECONDS=5
USER 10001:10001
# 50051: gRPC (Collect, Watch, health, reflection). 9464: the collector's own Prometheus
# metrics (plain HTTP, no token: publish it only where Prometheus runs).
EXPOSE 50051 9464
# Asks the standard gRPC health service; exit 0 only when it answers SERVING (NOT_SERVING
# from the moment SIGTERM arrives). Follows the CMD's port: change both together.
HEALTHCHECK --interval=15s --timeout=5s --start-period=5s --retries=3 \
    CMD ["tgi-collector", "--log-level", "ERROR", "health", "--server", "127.0.0.1:50051", "--timeout", "3"]
# tgi-collector is PID 1 (exec form, no shell) and handles SIGTERM itself: health goes
# NOT_SERVING, Watch streams end with OK, in-flight calls get --grace seconds, exit 0.
# Keep --grace below the stop timeout (podman/docker stop: 10 s by default).
STOPSIGNAL SIGTERM
ENTRYPOINT ["tgi-collector"]
CMD ["serve"]
