#!/usr/bin/env bash
# start.sh of the labbuild test image "open-webui" (tests/apps/recipes/open-webui), the image's CMD
# (`bash start.sh` in WORKDIR /app/backend, as upstream's).
#
# Written for this image from a reading of open-webui/open-webui backend/start.sh. It keeps its
# contract for the default start, not its code: WEBUI_SECRET_KEY (or WEBUI_JWT_SECRET_KEY) from
# the environment, else from ./.webui_secret_key (generated on the first start); HOST (0.0.0.0),
# PORT (8080) and UVICORN_WORKERS (1) honoured; uvicorn serves open_webui.main:app with
# --forwarded-allow-ips '*'. Differences: uvicorn replaces this shell (upstream pipes it through
# `tee server.log`); the starts that need programs this image does not have are refused rather
# than faked: USE_OLLAMA_DOCKER=true (upstream's bundled ollama) and WEB_LOADER_ENGINE=playwright
# without PLAYWRIGHT_WS_URL (upstream downloads a browser at start). SPACE_ID (Hugging Face
# Spaces) is not handled.
cd "$(dirname -- "${BASH_SOURCE[0]}")" || exit 1

if [[ "${WEB_LOADER_ENGINE,,}" == "playwright" && -z "${PLAYWRIGHT_WS_URL}" ]]; then
	echo "WEB_LOADER_ENGINE=playwright without PLAYWRIGHT_WS_URL: this test image has no playwright browsers (tests/apps/recipes/open-webui)" >&2
	exit 1
fi
if [[ "${USE_OLLAMA_DOCKER,,}" == "true" ]]; then
	echo "USE_OLLAMA_DOCKER=true: this test image has no bundled ollama (tests/apps/recipes/open-webui)" >&2
	exit 1
fi

KEY_FILE=.webui_secret_key
PORT="${PORT:-8080}"
HOST="${HOST:-0.0.0.0}"
if test "$WEBUI_SECRET_KEY $WEBUI_JWT_SECRET_KEY" = " "; then
	echo "Loading WEBUI_SECRET_KEY from file, not provided as an environment variable."
	if ! [ -e "$KEY_FILE" ]; then
		echo "Generating WEBUI_SECRET_KEY"
		head -c 12 /dev/random | base64 > "$KEY_FILE"
	fi
	echo "Loading WEBUI_SECRET_KEY from $KEY_FILE"
	WEBUI_SECRET_KEY=$(cat "$KEY_FILE")
fi
export WEBUI_SECRET_KEY

echo "Starting server with logs enabled..."
exec uvicorn open_webui.main:app --host "$HOST" --port "$PORT" --forwarded-allow-ips '*' \
	--workers "${UVICORN_WORKERS:-1}"
