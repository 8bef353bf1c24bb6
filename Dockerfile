# chroma-lb: a high-availability load balancer in front of several Chroma servers.
#
#   docker build -t chroma-lb .
#   docker run -p 8000:8000 -v chroma-lb-data:/data -e ... chroma-lb

# Production dependencies only, resolved exactly as bun.lock pins them.
FROM oven/bun:1 AS deps
WORKDIR /app
COPY package.json bun.lock ./
# A fix to the Postgres driver (tests/unit/postgres-driver.test.ts), applied by bun install.
COPY patches ./patches
RUN bun install --frozen-lockfile --production

FROM oven/bun:1 AS runtime
WORKDIR /app
ENV PORT=8000 \
    DATA_DIR=/data

COPY --from=deps --chown=bun:bun /app/node_modules ./node_modules
COPY --chown=bun:bun package.json bun.lock ./
# Migrations are applied at startup, so they ship with the sources.
COPY --chown=bun:bun drizzle ./drizzle
COPY --chown=bun:bun src ./src

# The volume inherits this owner, so the non-root user can write its WAL and mappings.
RUN mkdir -p /data && chown bun:bun /data
USER bun
VOLUME /data
EXPOSE 8000

# The image has no curl; Bun's fetch does the probe. /health answers 503 while no Chroma
# instance is healthy; chroma-lb itself is still doing its job then (it logs writes and
# says so), and restarting it would not help, so both answers count as healthy here.
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
  CMD bun -e "fetch('http://127.0.0.1:${PORT:-8000}/health').then(r => process.exit(r.status === 200 || r.status === 503 ? 0 : 1), () => process.exit(1))"

CMD ["bun", "run", "src/index.ts"]
