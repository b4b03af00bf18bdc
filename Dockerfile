# QuickDash: one image for the node (bin/quickdash.ts) and the gRPC adapters (bin/adapter.ts).
# TypeScript runs through tsx (no build step), so dev dependencies stay in the image.
FROM node:20-bookworm-slim

WORKDIR /app

# Dependencies first: a source edit reuses this layer. NODE_ENV is set only after npm ci,
# which would otherwise leave out tsx (a dev dependency).
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund && npm cache clean --force

COPY . .
# The embedded stores write under data/ when no --postgres is given; the node user must own it.
RUN mkdir -p /app/data && chown node:node /app/data

ENV NODE_ENV=production \
    QD_LOG_LEVEL=info
USER node

# 8080 gateway (WebSocket, /healthz, /readyz, /metrics), 50051 the node's gRPC API,
# 50061-50063 catalog, payments and persistence adapters.
EXPOSE 8080 50051 50061 50062 50063

# node --import tsx rather than npm/tsx wrappers: one process, so SIGTERM from `docker stop`
# reaches the code that drains and exits 0 (npm does not pass it on to the program).
CMD ["node", "--import", "tsx", "bin/quickdash.ts", "--host", "0.0.0.0", "--port", "8080"]
