#!/bin/sh
# The main job on the built-in example: make the Debian base image (cached
# after the first time), boot it and run a command in it over SSH.
set -eu
cd "$(dirname "$0")/.."
KILN=./bin/kiln
$KILN doctor
$KILN base debian
$KILN run debian:12 --memory 512M -- 'cat /etc/os-release | head -3; echo "kernel $(uname -r), cloud-init $(cloud-init --version 2>&1)"'
