#!/bin/sh
# /docker-entrypoint.sh of the labbuild test image "n8n" (tests/apps/recipes/n8n).
#
# Written for this image from a reading of n8n-io/n8n docker/images/n8n/docker-entrypoint.sh (the
# n8n 2.x one, run as user node under tini): it trusts the certificates of /opt/custom-certificates
# when that directory exists, then execs n8n with the container's arguments (none: `n8n`, which
# starts the main instance).
if [ -d /opt/custom-certificates ]; then
	echo "Trusting custom certificates from /opt/custom-certificates."
	export NODE_OPTIONS="--use-openssl-ca $NODE_OPTIONS"
	export SSL_CERT_DIR=/opt/custom-certificates
	c_rehash /opt/custom-certificates
fi
if [ "$#" -gt 0 ]; then
	exec n8n "$@"
fi
exec n8n
