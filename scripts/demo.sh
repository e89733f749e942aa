#!/bin/sh
# The main job on the built-in example: make the Debian base image (cached
# after the first time), bake hello:1.0.0 from it, boot the result and ask
# the service for its version.
set -eu
cd "$(dirname "$0")/.."
KILN=./bin/kiln
$KILN doctor
$KILN base debian
if $KILN images show hello:1.0.0 >/dev/null 2>&1; then
	echo "==> hello:1.0.0 is already in the store (kiln images rm hello:1.0.0 to build it again)"
else
	$KILN build examples/hello/hello.kiln.hcl
fi
$KILN images ls
$KILN run hello:1.0.0 --memory 512M -- 'curl -s localhost:8080; systemctl is-active hello'
