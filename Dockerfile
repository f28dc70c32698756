# dstore: one image for every role — `dstore nameserver`, `dstore storage`, `dstore client`,
# the one-shot commands (put, get, del, dump, nodes) and `dstore bench`. The first argument
# picks the role:
#
#   docker build -t dstore .
#   docker run --rm dstore --help
#   docker run -d -e DSTORE_CLUSTER_TOKEN=… -p 7000:7000 dstore nameserver --advertise HOST:7000
#
# Stage 1 compiles the TypeScript with the dev dependencies; stage 2 holds only the
# production dependencies and the compiled code, and runs as the unprivileged `node` user.
# Servers in the container listen on 0.0.0.0 (DSTORE_LISTEN), so they refuse to start
# without DSTORE_CLUSTER_TOKEN; their data goes to /data (DSTORE_DATA_DIR), a volume.

FROM node:20-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npx tsc -p tsconfig.json

FROM node:20-slim AS run
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /src/dist/src ./dist/src
# The dashboard's page (issue 15), served by the nameserver's HTTP port.
COPY web ./web
# `dstore` on the PATH; /data owned by the user the servers run as (a named volume mounted
# there starts with this ownership).
RUN chmod 0755 dist/src/cli/main.js \
 && ln -s /app/dist/src/cli/main.js /usr/local/bin/dstore \
 && mkdir -p /data \
 && chown node:node /data
ENV DSTORE_LISTEN=0.0.0.0 \
    DSTORE_DATA_DIR=/data
USER node
VOLUME ["/data"]
# nameserver RPC, storage servers (DESIGN §14); the nameserver's HTTP port (dashboard, /metrics)
EXPOSE 7000 7101 7102 7103 7080
# Issue 15: /health on the role's HTTP port when one is set (DSTORE_HTTP_PORT for the
# nameserver, DSTORE_STORAGE_HTTP_PORT for a storage server or node); a container without one
# (the client) has nothing to probe. The image has no curl: node's fetch. The compose files
# set their own checks.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "const p = process.env.DSTORE_HTTP_PORT || process.env.DSTORE_STORAGE_HTTP_PORT; if (!p || p === 'off') process.exit(0); fetch('http://127.0.0.1:' + p + '/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["dstore"]
CMD ["--help"]
