# syntax=docker/dockerfile:1
# smsgw: multi-stage build, runs as a non-root user, health via grpc.health.v1.
#   docker build -t smsgw .
#   docker run -p 50051:50051 -p 8080:8080 -e DATABASE_URL=postgresql://... \
#     -e SMSGW_SECRET_KEY=... smsgw
# With DATABASE_URL, SMSGW_SECRET_KEY is required (serve refuses to start without it).
# Without DATABASE_URL the container starts its embedded PostgreSQL in /var/lib/smsgw
# (mount a volume there to keep data).

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/smsgw
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server ./server
COPY generated ./generated
RUN /opt/smsgw/bin/pip install .

FROM python:3.11-slim
RUN groupadd --system --gid 10001 smsgw && useradd --system --uid 10001 --gid smsgw \
      --home-dir /var/lib/smsgw --create-home smsgw
COPY --from=build /opt/smsgw /opt/smsgw
ENV PATH=/opt/smsgw/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SMSGW_GRPC_ADDR=0.0.0.0:50051 \
    SMSGW_HTTP_ADDR=0.0.0.0:8080 \
    SMSGW_DATA_DIR=/var/lib/smsgw \
    XDG_RUNTIME_DIR=/tmp
USER 10001:10001
WORKDIR /var/lib/smsgw
EXPOSE 50051 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["smsgw", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["smsgw"]
CMD ["serve"]
