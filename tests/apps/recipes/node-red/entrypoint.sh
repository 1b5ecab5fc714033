#!/bin/bash
# entrypoint.sh of the labbuild test image "node-red" (tests/apps/recipes/node-red).
#
# Written for this image from a reading of the official image's entrypoint,
# node-red/node-red-docker docker-custom/scripts/entrypoint.sh (which .docker/scripts/
# links to). It keeps that contract, not that code: Node-RED's red.js runs with the user
# directory /data, $NODE_OPTIONS before it and $FLOWS (flows.json) plus the container's
# arguments after it; SIGTERM or SIGINT reaches Node-RED, which stops its flows before exiting.
set -u
node ${NODE_OPTIONS:-} node_modules/node-red/red.js --userDir /data ${FLOWS:-} "$@" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null' TERM INT
wait "$pid"
status=$?
if kill -0 "$pid" 2>/dev/null; then     # a signal interrupted the wait: let Node-RED finish
	wait "$pid"
	status=$?
fi
exit "$status"
