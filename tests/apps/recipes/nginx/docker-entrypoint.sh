#!/bin/sh
# Our own entrypoint for the nginx test image: upstream's (nginxinc/docker-nginx
# entrypoint/docker-entrypoint.sh) runs the /docker-entrypoint.d scripts when the command is
# nginx; this image has none, so it only runs the command.
set -e
exec "$@"
