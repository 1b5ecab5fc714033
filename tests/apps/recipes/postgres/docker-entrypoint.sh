#!/usr/bin/env bash
# docker-entrypoint.sh of the labbuild test image "postgres" (tests/apps/recipes/postgres).
#
# Written for this image from a reading of the official image's entrypoint,
# docker-library/postgres 17/trixie/docker-entrypoint.sh at commit
# 6edb0a8c4def40c371514b34aef9037ec82d9110
# (https://github.com/docker-library/postgres/blob/master/17/trixie/docker-entrypoint.sh),
# and of the image's documentation (docker-library/docs, postgres/content.md). It keeps
# that contract, not that code:
#   - `postgres ...`, or flags alone, start the server; any other command runs as it is;
#   - started as root, it makes $PGDATA (0700) and /var/run/postgresql belong to postgres,
#     then runs itself again as postgres (gosu);
#   - on an empty $PGDATA (no PG_VERSION file) it needs POSTGRES_PASSWORD, unless
#     POSTGRES_HOST_AUTH_METHOD=trust; runs initdb with POSTGRES_USER (default postgres) as
#     the superuser holding that password, plus POSTGRES_INITDB_ARGS and
#     POSTGRES_INITDB_WALDIR; keeps initdb's trust for connections over the socket (so
#     `psql -U postgres` works inside the container without a password) and lets every
#     host in with a password (the server's password_encryption: scram-sha-256) or with
#     POSTGRES_HOST_AUTH_METHOD; then, on a server listening on the socket only, creates
#     POSTGRES_DB (default: POSTGRES_USER) and runs /docker-entrypoint-initdb.d/* in order
#     (*.sh executed, or sourced when not executable; *.sql, *.sql.gz, *.sql.xz, *.sql.zst
#     through psql);
#   - a $PGDATA holding a cluster is used as it is: the variables are not read again;
#   - NAME_FILE gives NAME from a file (Docker secrets) for the four POSTGRES_* inputs.
set -Eeo pipefail

INITDB_DIR=/docker-entrypoint-initdb.d

note() { printf '%s\n' "$*"; }
fail() { printf '%s: error: %s\n' "$0" "$*" >&2; exit 1; }

# input NAME [DEFAULT]: export NAME from $NAME, or from the file named by $NAME_FILE, or DEFAULT
input() {
	local name=$1 fallback=${2:-} file_name="$1_FILE"
	local value=${!name:-} file=${!file_name:-}
	[[ -n $value && -n $file ]] && fail "both $name and $file_name are set; set only one"
	[[ -n $file ]] && value=$(<"$file")
	export "$name=${value:-$fallback}"
	unset "$file_name"
}

# true unless an argument asks postgres only for help, its settings or its version
starts_server() {
	local arg
	for arg; do
		case $arg in
			-'?' | --help | --describe-config | -V | --version) return 1 ;;
		esac
	done
	return 0
}

own_directories() {
	mkdir -p "$PGDATA"
	chmod 0700 "$PGDATA" 2>/dev/null || true    # may be impossible on some mounts; postgres then says so
	mkdir -p /var/run/postgresql 2>/dev/null || true
	chmod 3775 /var/run/postgresql 2>/dev/null || true
	local dirs=("$PGDATA" /var/run/postgresql)
	if [[ -n ${POSTGRES_INITDB_WALDIR:-} ]]; then
		mkdir -p "$POSTGRES_INITDB_WALDIR"
		chmod 0700 "$POSTGRES_INITDB_WALDIR"
		dirs+=("$POSTGRES_INITDB_WALDIR")
	fi
	if [[ $(id -u) == 0 ]]; then
		find "${dirs[@]}" \! -user postgres -exec chown postgres {} +
	fi
}

# initdb refuses to run for a uid that /etc/passwd does not know: name it through nss_wrapper
as_known_user() {
	if getent passwd "$(id -u)" >/dev/null; then
		"$@"
		return
	fi
	local lib
	lib=$(find /usr/lib /lib -name libnss_wrapper.so -print -quit 2>/dev/null)
	[[ -n $lib ]] || fail "uid $(id -u) is not in /etc/passwd and libnss_wrapper.so is missing"
	local passwd group
	passwd=$(mktemp) group=$(mktemp)
	printf 'postgres:x:%s:%s:PostgreSQL:%s:/bin/false\n' "$(id -u)" "$(id -g)" "$PGDATA" >"$passwd"
	printf 'postgres:x:%s:\n' "$(id -g)" >"$group"
	local status=0
	LD_PRELOAD=$lib NSS_WRAPPER_PASSWD=$passwd NSS_WRAPPER_GROUP=$group "$@" || status=$?
	rm -f "$passwd" "$group"
	return "$status"
}

# psql as the superuser over the socket, stopping at the first error (init scripts may call it)
docker_process_sql() {
	PGHOST= PGHOSTADDR= psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc \
		${POSTGRES_DB:+--dbname "$POSTGRES_DB"} "$@"
}

make_cluster() {
	if [[ -z $POSTGRES_PASSWORD && $POSTGRES_HOST_AUTH_METHOD != trust ]]; then
		fail "the database is not initialised and POSTGRES_PASSWORD is empty.
  Set POSTGRES_PASSWORD (e.g. -e POSTGRES_PASSWORD=...), or POSTGRES_HOST_AUTH_METHOD=trust to let
  every client in without a password (not recommended: https://www.postgresql.org/docs/current/auth-trust.html)."
	fi
	[[ $POSTGRES_HOST_AUTH_METHOD == trust ]] &&
		note "WARNING: POSTGRES_HOST_AUTH_METHOD=trust: any client that reaches port 5432 gets in without a password."
	ls "$INITDB_DIR/" >/dev/null   # fail now, not after initdb, when the scripts cannot be read
	local -a initdb_args
	eval "initdb_args=($POSTGRES_INITDB_ARGS)"   # shell words, as documented for the variable
	[[ -n ${POSTGRES_INITDB_WALDIR:-} ]] && initdb_args+=(--waldir "$POSTGRES_INITDB_WALDIR")
	# a password file must not be empty, hence the newline even for no password
	as_known_user initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
		"${initdb_args[@]}"
}

allow_hosts() {
	local method=$POSTGRES_HOST_AUTH_METHOD
	[[ -n $method ]] || method=$(postgres -C password_encryption "$@")
	{
		printf '\n'
		[[ $method == trust ]] && printf '# trust: every host gets in without a password\n'
		printf 'host all all all %s\n' "$method"
	} >>"$PGDATA/pg_hba.conf"
}

first_start() {
	make_cluster
	allow_hosts "$@"
	# a local password (POSTGRES_INITDB_ARGS=--auth-local=...) needs it for psql; harmless otherwise
	export PGPASSWORD=${PGPASSWORD:-$POSTGRES_PASSWORD}
	local options
	options=$(printf '%q ' "$@" -c listen_addresses= -p "${PGPORT:-5432}")
	NOTIFY_SOCKET= PGUSER=${PGUSER:-$POSTGRES_USER} pg_ctl -D "$PGDATA" -o "$options" -w start

	local found
	found=$(POSTGRES_DB= docker_process_sql --dbname postgres --tuples-only --set db="$POSTGRES_DB" \
		<<<"SELECT 1 FROM pg_database WHERE datname = :'db';")
	if [[ -z ${found//[[:space:]]/} ]]; then
		POSTGRES_DB= docker_process_sql --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
	fi

	local psql=(docker_process_sql) script   # `"${psql[@]}"` for sourced scripts written for the official image
	for script in "$INITDB_DIR"/*; do
		[[ -e $script ]] || continue
		case $script in
			*.sh)
				if [[ -x $script ]]; then note "$0: running $script"; "$script"
				else note "$0: sourcing $script"; . "$script"; fi ;;
			*.sql) note "$0: running $script"; docker_process_sql -f "$script" ;;
			*.sql.gz) note "$0: running $script"; gunzip -c "$script" | docker_process_sql ;;
			*.sql.xz) note "$0: running $script"; xzcat "$script" | docker_process_sql ;;
			*.sql.zst) note "$0: running $script"; zstd -dc "$script" | docker_process_sql ;;
			*) note "$0: ignoring $script" ;;
		esac
	done

	PGUSER=${PGUSER:-postgres} pg_ctl -D "$PGDATA" -m fast -w stop
	unset PGPASSWORD
	note "PostgreSQL init process complete; ready for start up."
}

main() {
	[[ ${1:0:1} == - ]] && set -- postgres "$@"
	if [[ $1 != postgres ]] || ! starts_server "$@"; then
		exec "$@"
	fi
	input POSTGRES_PASSWORD
	input POSTGRES_USER postgres
	input POSTGRES_DB "$POSTGRES_USER"
	input POSTGRES_INITDB_ARGS
	: "${POSTGRES_HOST_AUTH_METHOD:=}"
	own_directories
	if [[ $(id -u) == 0 ]]; then
		exec gosu postgres "${BASH_SOURCE[0]}" "$@"
	fi
	if [[ -s $PGDATA/PG_VERSION ]]; then
		note "PostgreSQL Database directory appears to contain a database; Skipping initialization"
	else
		first_start "${@:2}"
	fi
	exec "$@"
}

main "$@"
