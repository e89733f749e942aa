#!/bin/bash
# Installs the hello service: its environment file and systemd unit.
set -euo pipefail

install -d -m 0755 /etc/hello
cat > /etc/hello/hello.env <<ENV
APP_VERSION=${APP_VERSION}
GREETING=${GREETING}
PORT=8080
ENV
chmod 0644 /etc/hello/hello.env
if [ -n "${DEPLOY_TOKEN}" ]; then
  # Readable by root only; the build log shows the value masked.
  install -m 0600 /dev/null /etc/hello/token
  printf '%s\n' "${DEPLOY_TOKEN}" > /etc/hello/token
  echo "deploy token installed: ${DEPLOY_TOKEN}"
fi

install -m 0644 /opt/hello/hello.service /etc/systemd/system/hello.service
systemctl daemon-reload
systemctl enable --now hello.service

# Prove it answers before the image is sealed.
for _ in $(seq 1 50); do
  if curl -fsS http://127.0.0.1:8080/healthz >/dev/null; then
    echo "hello ${APP_VERSION} answers on :8080 (jq $(jq --version))"
    exit 0
  fi
  sleep 0.2
done
echo "hello did not answer on :8080" >&2
journalctl -u hello --no-pager | tail -20 >&2
exit 1
