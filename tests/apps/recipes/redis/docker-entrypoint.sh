#!/bin/sh
# docker-entrypoint.sh of the labbuild test image "redis" (tests/apps/recipes/redis).
#
# Written for this image from a reading of the official alpine image's entrypoint,
# redis/docker-library-redis alpine/docker-entrypoint.sh
# (https://github.com/redis/docker-library-redis/blob/master/alpine/docker-entrypoint.sh).
# It keeps that contract, not that code:
#   - flags first (`--port 7000`) or a *.conf first: they are redis-server's;
#   - redis-server started as root (no --user, SKIP_DROP_PRIVS unset) first gives the data
#     directory (the working directory, /data) to redis when it holds only what Redis
#     writes there (*.rdb, appendonlydir; SKIP_FIX_PERMS=1 skips this), then runs as
#     redis (setpriv), without new privileges;
#   - a umask of 0022 becomes 0077 (Redis' files are for redis only);
#   - anything else runs as it is (`sh -c ...`, `redis-cli ...`), as whichever user.
# Not kept: sentinel's config-file permissions and the modules directory (this Redis has
# no modules).
set -e

case "$1" in
	-* | *.conf) set -- redis-server "$@" ;;
esac

is_server=
[ "$(readlink -f "$(command -v "$1" 2>/dev/null || echo "$1")")" = /usr/local/bin/redis-server ] && is_server=1

# the data directory holds only Redis' own files: safe to hand over to redis
only_redis_files() {
	[ -z "$(find . -mindepth 1 -maxdepth 1 ! -name '*.rdb' ! \( -type d -name appendonlydir \) -print | head -n 1)" ]
}

if [ -n "$is_server" ] && [ -z "${SKIP_DROP_PRIVS:-}" ] && [ "$(id -u)" = 0 ]; then
	if [ -z "${SKIP_FIX_PERMS:-}" ]; then
		if only_redis_files; then
			find . \! -user redis -exec chown redis {} +
			find . -user redis -exec chmod u+rw {} +
		else
			echo "Notice: files other than Redis' own in $(pwd): their owners are left as they are (SKIP_FIX_PERMS=1 silences this)."
		fi
	fi
	exec /bin/setpriv --reuid redis --regid redis --clear-groups --nnp --inh-caps=-all "$0" "$@"
fi

[ "$(umask)" = 0022 ] && umask 0077

exec "$@"
