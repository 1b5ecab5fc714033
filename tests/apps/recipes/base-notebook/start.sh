#!/bin/bash
# start.sh of the labbuild test image "base-notebook" (tests/apps/recipes/base-notebook), the
# script tini starts. Written from a reading of jupyter/docker-stacks
# images/docker-stacks-foundation/start.sh; it keeps that contract, not that code:
#   - the command is the arguments (bash without any); start.sh named again inside it is skipped;
#   - hooks of /usr/local/bin/start-notebook.d run first, of before-notebook.d last;
#   - as root: CHOWN_HOME=1|yes and CHOWN_EXTRA=dir,dir give those to $NB_UID:$NB_GID
#     (options in CHOWN_HOME_OPTS / CHOWN_EXTRA_OPTS), GRANT_SUDO=1|yes gives $NB_USER
#     password-less sudo, conda's bin/ joins sudo's secure_path, and the command runs as
#     $NB_USER through sudo with the environment kept;
#   - as anyone else: warnings for what only root could do; the command runs as is;
#   - JUPYTER_ENV_VARS_TO_UNSET=A,B leaves those variables out of the command's environment.
# Not kept: renaming jovyan or changing its uid/gid as root (NB_USER, NB_UID, NB_GID other than
# the image's): this script says so and exits 1.
set -e
log() { echo "start.sh: $*" >&2; }

if [ $# -eq 0 ]; then
	cmd=(bash)
else
	cmd=("$@")
fi
if [ "${_START_SH_EXECUTED:-}" = 1 ]; then
	log "already ran; executing ${cmd[*]}"
	exec "${cmd[@]}"
fi
export _START_SH_EXECUTED=1

unset_listed() {
	local name
	for name in ${JUPYTER_ENV_VARS_TO_UNSET//,/ }; do
		unset "$name"
	done
	unset JUPYTER_ENV_VARS_TO_UNSET
}
yes_() { [ "$1" = 1 ] || [ "$1" = yes ]; }

# shellcheck disable=SC1091
source /usr/local/bin/run-hooks.sh /usr/local/bin/start-notebook.d

if [ "$(id -u)" = 0 ]; then
	if [ "${NB_USER}" != jovyan ] || [ "${NB_UID}" != "$(id -u jovyan)" ] || [ "${NB_GID}" != "$(id -g jovyan)" ]; then
		log "this test image cannot change jovyan to ${NB_USER} ${NB_UID}:${NB_GID} (tests/apps/recipes/base-notebook)"
		exit 1
	fi
	if yes_ "${CHOWN_HOME:-}"; then
		log "giving /home/${NB_USER} to ${NB_UID}:${NB_GID}"
		# shellcheck disable=SC2086
		chown ${CHOWN_HOME_OPTS:-} "${NB_UID}:${NB_GID}" "/home/${NB_USER}"
	fi
	for dir in ${CHOWN_EXTRA//,/ }; do
		log "giving ${dir} to ${NB_UID}:${NB_GID}"
		# shellcheck disable=SC2086
		chown ${CHOWN_EXTRA_OPTS:-} "${NB_UID}:${NB_GID}" "${dir}"
	done
	sed -r "s#Defaults\s+secure_path\s*=\s*\"?([^\"]+)\"?#Defaults secure_path=\"${CONDA_DIR}/bin:\1\"#" /etc/sudoers \
		| grep secure_path > /etc/sudoers.d/path
	if yes_ "${GRANT_SUDO:-}"; then
		log "granting ${NB_USER} password-less sudo"
		echo "${NB_USER} ALL=(ALL) NOPASSWD:ALL" > /etc/sudoers.d/added-by-start-script
	fi
	# shellcheck disable=SC1091
	source /usr/local/bin/run-hooks.sh /usr/local/bin/before-notebook.d
	unset_listed
	log "running as ${NB_USER}: ${cmd[*]}"
	exec sudo --preserve-env --set-home --user "${NB_USER}" \
		LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}" PATH="${PATH}" PYTHONPATH="${PYTHONPATH:-}" "${cmd[@]}"
fi

yes_ "${GRANT_SUDO:-}" && log "GRANT_SUDO needs the container started as root"
[ "${NB_USER}" != jovyan ] && [ "${NB_USER}" != "$(id -un 2>/dev/null)" ] && log "NB_USER needs the container started as root"
[ "${NB_UID}" != "$(id -u)" ] && [ "${NB_UID}" != "$(id -u jovyan)" ] && log "NB_UID needs the container started as root"
[ -w "/home/jovyan" ] || log "no write access to /home/jovyan: start with group users (100), e.g. --group-add=users"
# shellcheck disable=SC1091
source /usr/local/bin/run-hooks.sh /usr/local/bin/before-notebook.d
unset_listed
log "executing ${cmd[*]}"
exec "${cmd[@]}"
