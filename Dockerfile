# tgi-collector: a gRPC service that scrapes Hugging Face TGI /metrics.
# Build: podman build -t tgi-collector .   (or docker build)
# Run:   podman run -p 50051:50051 tgi-collector

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY tgi_collector ./tgi_collector
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin collector
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
EXPOSE 50051
# Asks the standard gRPC health service; exit 0 only when SERVING.
HEALTHCHECK --interval=15s --timeout=5s --start-period=5s --retries=3 \
    CMD ["tgi-collector", "--log-level", "ERROR", "health", "--server", "127.0.0.1:50051"]
# SIGTERM (podman/docker stop) drains in-flight calls for --grace seconds, then exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["tgi-collector"]
CMD ["serve", "--listen", "0.0.0.0:50051", "--grace", "5"]
