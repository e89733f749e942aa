#!/bin/sh
set -eu
# Runs as root through execute_command's sudo -E.
install -m 0644 /tmp/motd /etc/motd
echo "APP_VERSION=${APP_VERSION}" > /etc/app-version
echo "runner=$(id -un) builder=${PACKER_BUILDER_TYPE} build=${PACKER_BUILD_NAME}" >> /etc/app-version
