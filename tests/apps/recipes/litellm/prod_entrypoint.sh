#!/bin/sh
# docker/prod_entrypoint.sh of the labbuild test image "litellm" (tests/apps/recipes/litellm).
#
# Written for this image from a reading of BerriAI/litellm docker/prod_entrypoint.sh. It keeps
# its contract for the default start, not its code: the container's arguments go to `litellm`,
# which replaces this shell. Its two other starts need programs this image does not have, so
# they are refused rather than faked: SEPARATE_HEALTH_APP=1 (upstream runs the proxy and a
# separate health app under supervisord) and USE_DDTRACE=true (upstream runs ddtrace-run).
if [ "${SEPARATE_HEALTH_APP:-}" = 1 ]; then
	echo "SEPARATE_HEALTH_APP=1: this test image has no supervisord (tests/apps/recipes/litellm)" >&2
	exit 1
fi
if [ "${USE_DDTRACE:-}" = true ]; then
	echo "USE_DDTRACE=true: this test image has no ddtrace (tests/apps/recipes/litellm)" >&2
	exit 1
fi
exec litellm "$@"
