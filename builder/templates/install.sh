#!/bin/sh
# install.sh — install this Local AI Lab bundle on a host that has only
# sh, docker (with `docker compose` or a v2 `docker-compose`), sha256sum,
# tar and the POSIX tools (awk, sed, tr, head). No Python, no network.
#
#   sh install.sh --dir DIR [--key PUB] [--gpu|--no-gpu] [--no-start] [--timeout SECONDS]
#                 [--claimed SERVICE]...
#
# Run it from the unpacked bundle (tar -xf BUNDLE; cd BUNDLE-DIR). It does
# what `labbuild install` does:
#   1. sha256sum -c SHA256SUMS, every sha256 manifest.json lists equal to SHA256SUMS', and
#      with --key the signature manifest.json.sig (openssl) over manifest.json — nothing is
#      touched before both pass
#   1c. checks the host as `labbuild doctor` does: the engine answers, compose v2
#      is there, every published host port is free (or held by this lab's own
#      containers: an upgrade), and the images fit on the engine's disk (x2)
#   2. copies the release to DIR/releases/<version>/ and points DIR/current at it
#      (DIR/previous keeps the release it replaced, for a rollback)
#   3. docker load of images/ (host platform only) and a check that every
#      image ID equals the locked config digest
#   4. generates missing secrets into DIR/.env (mode 0600) from /dev/urandom;
#      existing values are kept, values are never printed; the keys generated
#      are recorded in DIR/audit.log (one JSON line, labbuild's format, no value);
#      a derived secret (derive=bcrypt) is the bcrypt hash of another, by mkpasswd.
#      Operator-supplied
#      secrets are never generated: when one of a required service is missing
#      from DIR/.env it stops before step 2, naming the key; an optional
#      service without its supplied secret is installed but not started
#   4b. with the front door on (access/lab.json): makes the lab CA, the wildcard
#      certificate of the domain and the OIDC signing key in DIR/door/ (openssl;
#      kept across upgrades) and the users directory DIR/access/
#   5. writes DIR/compose.yaml (with --gpu: plus compose.gpu.yaml, refused
#      without the NVIDIA runtime; neither flag: as the install was), runs
#      docker compose up -d in DIR, then waits for every health probe.
#   6. prints the provisioning calls ([[provision]]: e.g. claiming an app's admin
#      account with a password from DIR/.env) that `labbuild install` makes and
#      this script cannot (no JSON HTTP client): make them, or run labbuild install.
#      Until they succeeded such a service publishes no host port (DIR/unpublished.yaml,
#      as labbuild install keeps it): the calls go to its container's address; then
#      run install.sh again with --claimed SERVICE to publish it.
# A bundle that ships models ([[models]]) is refused: use `labbuild install`.
# Exit 0 only when every service that is not optional is healthy.
# A delta bundle (labbuild release --since) is refused: install it with
# `labbuild install`, which checks that the engine holds its base's images.
set -eu
LC_ALL=C
export LC_ALL

die() { printf 'error: %s\n' "$1" >&2; [ $# -lt 2 ] || printf 'hint: %s\n' "$2" >&2; exit 1; }
say() { printf '%s\n' "$*" >&2; }

DIR=""
KEY=""
START=1
TIMEOUT=300
GPU=""
CLAIMED=""
USAGE="usage: sh install.sh --dir DIR [--key PUB] [--gpu|--no-gpu] [--no-start] [--timeout SECONDS] [--claimed SERVICE]..."
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) [ $# -ge 2 ] || die "--dir needs a value"; DIR=$2; shift 2 ;;
        --dir=*) DIR=${1#--dir=}; shift ;;
        --key) [ $# -ge 2 ] || die "--key needs a value"; KEY=$2; shift 2 ;;
        --key=*) KEY=${1#--key=}; shift ;;
        --no-start) START=0; shift ;;
        --claimed) [ $# -ge 2 ] || die "--claimed needs a service"; CLAIMED="$CLAIMED $2"; shift 2 ;;
        --claimed=*) CLAIMED="$CLAIMED ${1#--claimed=}"; shift ;;
        --gpu) GPU=1; shift ;;
        --no-gpu) GPU=0; shift ;;
        --timeout) [ $# -ge 2 ] || die "--timeout needs a value"; TIMEOUT=$2; shift 2 ;;
        --timeout=*) TIMEOUT=${1#--timeout=}; shift ;;
        -h|--help) sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1" "$USAGE" ;;
    esac
done
[ -n "$DIR" ] || die "--dir DIR is required" "$USAGE"
case "$TIMEOUT" in ''|*[!0-9]*) die "--timeout must be a number of seconds" ;; esac

case "$KEY" in ""|/*) ;; *) KEY="$(pwd)/$KEY" ;; esac
BUNDLE=$(cd "$(dirname "$0")" && pwd -P)
cd "$BUNDLE"
[ -f manifest.json ] && [ -f SHA256SUMS ] || die "$BUNDLE is not an unpacked bundle (manifest.json or SHA256SUMS missing)" \
    "unpack the bundle with tar -xf and run install.sh from its top directory"

# ---------------------------------------------------------------- 1. verify
say "verifying $(wc -l < SHA256SUMS | tr -d ' ') files against SHA256SUMS"
if ! sha256sum -c SHA256SUMS > "${TMPDIR:-/tmp}/labbuild-verify.$$" 2>&1; then
    grep -v ': OK$' "${TMPDIR:-/tmp}/labbuild-verify.$$" >&2 || true
    rm -f "${TMPDIR:-/tmp}/labbuild-verify.$$"
    die "the bundle does not match its SHA256SUMS: nothing was installed" "copy the bundle again; it is damaged"
fi
rm -f "${TMPDIR:-/tmp}/labbuild-verify.$$"
if [ -n "$KEY" ]; then
    [ -f "$KEY" ] || die "--key $KEY: no such file" "pass the .pub file written by labbuild keygen"
    command -v openssl >/dev/null 2>&1 || die "--key needs openssl to check the signature, and it is not installed" \
        "install openssl, or check the bundle elsewhere with: labbuild verify BUNDLE --key PUB"
    [ -f manifest.json.sig ] || die "the bundle is not signed (no manifest.json.sig): nothing was installed" \
        "ask for a bundle made with labbuild release --sign KEY"
    SIG="${TMPDIR:-/tmp}/labbuild-sig.$$"
    if openssl pkey -pubin -in "$KEY" -noout -text 2>/dev/null | head -n 1 | grep -qi ed25519; then
        # bundles signed before labbuild 0.2: a raw 64-byte Ed25519 signature
        cp manifest.json.sig "$SIG"
        openssl pkeyutl -verify -pubin -inkey "$KEY" -rawin -in manifest.json -sigfile "$SIG" >/dev/null 2>&1 \
            || { rm -f "$SIG"; die "manifest.json.sig does not verify with $KEY: nothing was installed" \
                 "the bundle was altered, or signed with another key"; }
    else
        # base64 of a DER ECDSA signature over manifest.json with SHA-256 (what cosign verify-blob checks)
        openssl base64 -d -A -in manifest.json.sig -out "$SIG" 2>/dev/null \
            && openssl dgst -sha256 -verify "$KEY" -signature "$SIG" manifest.json >/dev/null 2>&1 \
            || { rm -f "$SIG"; die "manifest.json.sig does not verify with $KEY: nothing was installed" \
                 "the bundle was altered, or signed with another key"; }
    fi
    rm -f "$SIG"
    say "signature of manifest.json verified with $KEY"
fi

# manifest.json is canonical JSON (sorted keys, one value per line): flatten it
# to path=value lines once, then read values with mget.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/labbuild-install.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM
flatten_json() {   # $1: a canonical JSON file -> path=value lines
awk '
function unquote(s) {
    if (s ~ /^".*"$/) { s = substr(s, 2, length(s) - 2); gsub(/\\"/, "\"", s); gsub(/\\\\/, "\\", s) }
    return s
}
{
    line = $0; sub(/^[ \t]+/, "", line); sub(/[ \t\r]+$/, "", line)
    if (line == "") next
    if (line == "}" || line == "}," || line == "]" || line == "],") { depth--; next }
    key = ""
    if (depth > 0 && type[depth] == "a") { key = idx[depth]++ }
    else if (match(line, /^"([^"\\]|\\.)*": /)) { key = unquote(substr(line, 1, RLENGTH - 2)); line = substr(line, RLENGTH + 1) }
    sub(/,$/, "", line)
    path = ""
    for (i = 2; i <= depth; i++) path = path comp[i] "."
    path = path key
    if (line == "{" || line == "[") {
        depth++; comp[depth] = key; type[depth] = (line == "{") ? "o" : "a"; idx[depth] = 0
        next
    }
    print path "=" unquote(line)
}' "$1"
}
flatten_json manifest.json > "$WORK/manifest.flat"

# SHA256SUMS is signed by nothing: every file manifest.json lists (and the signature covers
# manifest.json) must have the same sha256 in SHA256SUMS, which `sha256sum -c` checked above.
# Else a changed file with a recomputed SHA256SUMS line would pass, even with --key.
if ! awk 'NR == FNR { if (match($0, /^files\..*\.sha256=/)) want[substr($0, 7, RLENGTH - 14)] = substr($0, RLENGTH + 1); next }
          { sums[substr($0, 67)] = substr($0, 1, 64) }
          END { for (f in want) if (sums[f] != want[f]) { print f; bad = 1 }; exit bad }' \
        "$WORK/manifest.flat" SHA256SUMS > "$WORK/disagree"; then
    die "SHA256SUMS does not agree with manifest.json on $(head -n 1 "$WORK/disagree"): nothing was installed" \
        "the bundle was altered after it was released: copy it again from its source"
fi

mget() { awk -v k="$1" 'index($0, k "=") == 1 { print substr($0, length(k) + 2); exit }' "$WORK/manifest.flat"; }
mlist() { awk -v k="$1" 'index($0, k ".") == 1 { v = substr($0, length(k) + 2); if (v ~ /^[0-9]+=/) { sub(/^[0-9]+=/, "", v); print v } }' "$WORK/manifest.flat"; }

LAB=$(mget lab)
VERSION=$(mget version)
OFFLINE=$(mget offline)
[ -n "$LAB" ] && [ -n "$VERSION" ] || die "manifest.json has no lab name or version"
# The identifier grammars of builder/names.py (tests/test_names.py keeps them equal):
# names that reach paths and commands are checked in full before anything is used.
GRAMMAR_NAME='[a-z][a-z0-9]*(-[a-z0-9]+)*'
GRAMMAR_SERVICE_LENGTH='.{2,41}'
GRAMMAR_LAB_LENGTH='.{2,63}'
GRAMMAR_VERSION='(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-((0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\.(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?(\+([0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*))?'
valid() {  # $1 ERE, $2 value: one line matching in full
    case "$2" in *"
"*) return 1 ;; esac
    printf '%s\n' "$2" | grep -Eqx -- "$1"
}
valid "$GRAMMAR_NAME" "$LAB" && valid "$GRAMMAR_LAB_LENGTH" "$LAB" || die "manifest.json names an unusable lab: $LAB" "the bundle is damaged or not a labbuild bundle"
valid "$GRAMMAR_VERSION" "$VERSION" || die "manifest.json names an unusable version: $VERSION" "the bundle is damaged or not a labbuild bundle"
BASE_VERSION=$(mget since.version)
if [ -n "$BASE_VERSION" ]; then
    valid "$GRAMMAR_VERSION" "$BASE_VERSION" || BASE_VERSION="(unusable version)"
    die "this is a delta bundle of $LAB $VERSION: it carries only what release $BASE_VERSION lacks, and install.sh does not install deltas (it cannot check that the engine holds the base's images): nothing was installed" \
        "install it with: labbuild install BUNDLE.tar --dir DIR (add --base BASE_BUNDLE on a host without $BASE_VERSION); or use the full bundle of $VERSION"
fi
SERVICES=$(sed -n 's/^services\.\([^.]*\)\.image=.*/\1/p' "$WORK/manifest.flat" | sort -u | tr '\n' ' ')
for svc in $SERVICES; do
    valid "$GRAMMAR_NAME" "$svc" && valid "$GRAMMAR_SERVICE_LENGTH" "$svc" || die "manifest.json names an unusable service: $svc" "the bundle is damaged or not a labbuild bundle"
done

# Models (issue 12) are placed into volumes through the engine with every blob re-hashed while it
# streams, temp names and links, blobs before manifests: `labbuild install` does that; this script
# does not, and refuses rather than bring up a lab without the models its bundle carries.
MODELS=$(sed -n 's/^services\.\([^.]*\)\.models\.[0-9]*\.name=\(.*\)$/\1:\2/p' "$WORK/manifest.flat" | tr '\n' ' ')
if [ -n "$MODELS" ] && [ "$OFFLINE" = "true" ]; then
    die "this bundle ships models (${MODELS% }); install.sh cannot place them: nothing was installed" \
        "install it with labbuild: labbuild install <bundle archive> --dir $DIR (pip install labbuild; it needs no network)"
fi

# the front door's keys are made with openssl (as labbuild install makes them with Python):
# refuse up front when it cannot, so nothing is touched
DOOR_DOMAIN=""
if [ -f access/lab.json ]; then
    DOOR_DOMAIN=$(sed -n 's/^  "domain": "\([a-z0-9.-]*\)",\{0,1\}$/\1/p' access/lab.json)
    case "$DOOR_DOMAIN" in
        ""|.*|*.|*..*) die "access/lab.json names no front-door domain: the bundle is damaged" ;;
        *.*) ;;
        *) die "access/lab.json: front-door domain '$DOOR_DOMAIN' has one label only" ;;
    esac
    command -v openssl >/dev/null 2>&1 || die "this bundle's front door needs openssl to make its CA, certificate and OIDC key: nothing was installed" \
        "install openssl (apt-get install openssl), or install with \`labbuild install\`"
fi

# ---------------------------------------------------------------- 1b. operator-supplied secrets
# Secrets only a third party can issue (manifest: services.S.supplied) are never
# generated. Missing for a service that is not optional: stop now, before
# anything is loaded or written. Missing for an optional service: install it,
# but do not start it (WAITING) until the key is in DIR/.env.
env_value() {  # KEY -> the value DIR/.env gives it last (quotes around it removed), as compose reads it
    [ -f "$DIR/.env" ] || return 0
    awk -v k="$1" '
        { line = $0; sub(/^[ \t]*(export[ \t]+)?/, "", line)
          if (index(line, k "=") != 1) next
          v = substr(line, length(k) + 2)
          if (v ~ /^'"'"'.*'"'"'[ \t]*$/) { sub(/[ \t]*$/, "", v); v = substr(v, 2, length(v) - 2) }
          else if (v ~ /^".*"[ \t]*$/) { sub(/[ \t]*$/, "", v); v = substr(v, 2, length(v) - 2); gsub(/\\\$/, "$", v); gsub(/\\"/, "\"", v); gsub(/\\\\/, "\\", v) }
          else { sub(/ #.*/, "", v); gsub(/^[ \t]+|[ \t]+$/, "", v) }
          val = v }
        END { printf "%s", val }' "$DIR/.env"
}
env_has() {  # KEY -> 0 when DIR/.env assigns it a non-empty value
    [ -f "$DIR/.env" ] || return 1
    awk -v k="$1" '
        { line = $0; sub(/^[ \t]*(export[ \t]+)?/, "", line)
          if (index(line, k) != 1) next
          rest = substr(line, length(k) + 1); sub(/^[ \t]*/, "", rest)
          if (substr(rest, 1, 1) != "=") next
          v = substr(rest, 2); gsub(/[ \t\r'"'"'"]/, "", v)
          if (v != "") { found = 1; exit } }
        END { exit found ? 0 : 1 }' "$DIR/.env"
}
sed -n 's/^services\.\([^.]*\)\.supplied\.\([0-9]*\)\.key=\([A-Za-z_][A-Za-z0-9_]*\)$/\1 \2 \3/p' \
    "$WORK/manifest.flat" > "$WORK/supplied"
WAITING=""
missing=0
while read -r svc idx key; do
    env_has "$key" && continue
    if [ "$(mget "services.$svc.optional")" = true ]; then
        case " $WAITING " in *" $svc "*) ;; *) WAITING="$WAITING $svc" ;; esac
        say "$svc is optional and not started: needs $key in $DIR/.env"
    else
        say "missing: $key (for $svc): $(mget "services.$svc.supplied.$idx.description")"
        missing=$((missing + 1))
    fi
done < "$WORK/supplied"
[ "$missing" = 0 ] || die "$missing operator-supplied secret(s) missing from $DIR/.env; nothing was installed" \
    "add each KEY=value line named above to $DIR/.env (install never generates them), then run install.sh again"
PROFILES=""
for svc in $SERVICES; do
    [ "$(mget "services.$svc.optional")" = true ] || continue
    case " $WAITING " in *" $svc "*) continue ;; esac
    PROFILES="$PROFILES --profile $svc"
done

# ---------------------------------------------------------------- 1d. front-door users (issue 23)
# A bundle with the front door (access/lab.json) needs a user in DIR/access/users_database.yml before
# its identity provider starts. An existing file is kept as it is (upgrades, re-installs). Without
# one, the first admin is made as `labbuild install` makes it, its password hashed by Debian's
# argon2 command (package argon2; the reference implementation's CLI) in Authelia's PHC format;
# without that command install.sh refuses here, before anything is touched.
DOOR_USERS=""
if [ -f access/lab.json ]; then
    if [ -L "$DIR/access" ] || { [ -e "$DIR/access" ] && [ ! -d "$DIR/access" ]; }; then
        die "$DIR/access is not a directory: nothing was installed" "move it away; the front door keeps its users there (links are never followed)"
    fi
    if [ -L "$DIR/access/users_database.yml" ] || { [ -e "$DIR/access/users_database.yml" ] && [ ! -f "$DIR/access/users_database.yml" ]; }; then
        die "$DIR/access/users_database.yml is not a regular file: nothing was installed" "move it away; the front door's user file is written there"
    fi
    if [ -f "$DIR/access/users_database.yml" ]; then
        DOOR_USERS=keep
    else
        command -v argon2 >/dev/null 2>&1 || die "this bundle's front door needs a first admin, whose password install.sh hashes with the argon2 command, which is not installed: nothing was installed" \
            "install it (apt-get install argon2), or install with labbuild: labbuild install <bundle archive> --dir $DIR"
        DOOR_USERS=make
    fi
fi

# ---------------------------------------------------------------- compose
if docker compose version >/dev/null 2>&1; then
    compose() { docker compose "$@"; }
elif command -v docker-compose >/dev/null 2>&1 && docker-compose version 2>/dev/null | grep -q 'v2\.'; then
    compose() { docker-compose "$@"; }
else
    die "neither 'docker compose' nor a v2 'docker-compose' was found" \
        "install the Docker Compose v2 plugin (docker-compose-plugin) or a v2 docker-compose binary"
fi
docker info >/dev/null 2>&1 || die "the Docker engine does not answer" "start it (systemctl start docker) and check that you may use it"

# ---------------------------------------------------------------- GPU (as labbuild install --gpu)
GPU_MARK="# labbuild: gpu=on"
if [ -z "$GPU" ]; then   # neither flag: keep what the install has
    if [ -f "$DIR/compose.yaml" ] && grep -qxF "$GPU_MARK" "$DIR/compose.yaml"; then GPU=1; else GPU=0; fi
fi
if [ "$GPU" = 1 ]; then
    if [ ! -f compose.gpu.yaml ]; then
        say "warning: --gpu given, but no service of this bundle reserves a GPU"
        GPU=0
    elif ! docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"nvidia"' \
        && ! ls /etc/cdi /var/run/cdi 2>/dev/null | grep -qi nvidia; then
        die "--gpu asked for the GPU services, but the engine has no nvidia runtime and there is no NVIDIA CDI spec in /etc/cdi or /var/run/cdi: nothing was installed" \
            "install the NVIDIA Container Toolkit (nvidia-ctk runtime configure --runtime=docker; systemctl restart docker), or install with --no-gpu"
    fi
fi

# ---------------------------------------------------------------- host ports (as labbuild doctor)
# Every published host port must be free, or held by this lab's own containers (an upgrade):
# read from /proc/net (Linux), a listening TCP or bound UDP socket on the same port whose
# address covers the bind address. Nothing is touched before this passes.
OWN_PORTS=$(docker ps --filter "label=com.docker.compose.project=$LAB" --format '{{.Ports}}' 2>/dev/null | tr ',' '\n')
port_taken() {  # $1 bind address, $2 port, $3 tcp|udp -> 0 when another socket holds it
    [ -r /proc/net/tcp ] || return 1
    want=$(printf '%s' "$1" | awk -F. 'NF == 4 { printf "%02X%02X%02X%02X", $4, $3, $2, $1 }')
    if [ "$3" = udp ]; then state=07; set -- "$2" /proc/net/udp /proc/net/udp6
    else state=0A; set -- "$2" /proc/net/tcp /proc/net/tcp6; fi
    port=$1; shift
    awk -v port="$(printf '%04X' "$port")" -v st="$state" -v want="$want" '
        FNR > 1 && $4 == st {
            n = split($2, a, ":"); if (a[n] != port) next
            addr = a[1]; any = (addr ~ /^0+$/)
            if (any || want == "" || want == "00000000" || addr == want) { found = 1; exit }
        }
        END { exit !found }' "$@" 2>/dev/null
}
TAKEN=""
for svc in $SERVICES; do
    i=0
    while [ -n "$(mget "services.$svc.ports.$i.container")" ]; do
        host=$(mget "services.$svc.ports.$i.host")
        proto=$(mget "services.$svc.ports.$i.protocol")
        bind=$(mget "services.$svc.ports.$i.bind")
        name=$(mget "services.$svc.ports.$i.name")
        i=$((i + 1))
        valid '[0-9]{1,5}' "$host" || continue          # no host port (null): nothing to bind
        valid '(tcp|udp)' "$proto" || die "manifest.json: services.$svc.ports: protocol '$proto' is neither tcp nor udp"
        if printf '%s\n' "$OWN_PORTS" | grep -q ":$host->[0-9]*/$proto"; then
            continue                                     # this lab's own container (an upgrade)
        fi
        if port_taken "$bind" "$host" "$proto"; then
            TAKEN="$TAKEN
  port $svc/$name: $bind:$host/$proto is in use by another program"
        fi
    done
done
if [ -n "$TAKEN" ]; then
    die "the host is not ready (nothing was installed):$TAKEN" \
        "stop what listens there (see: ss -ltnup), or change the host port in the service's blueprint and release again"
fi

# ---------------------------------------------------------------- disk (as labbuild doctor)
# The engine unpacks the image blobs to about twice their size (doctor.UNPACK_FACTOR), on the
# filesystem of its root directory; the release's small files are not counted.
NEED_KIB=$(awk -F= 'index($1, "files.images/blobs/") == 1 && $1 ~ /\.size$/ { s += $2 } END { printf "%.0f", s * 2 / 1024 }' "$WORK/manifest.flat")
if [ "$NEED_KIB" -gt 0 ]; then
    probe=$(docker info --format '{{.DockerRootDir}}' 2>/dev/null) || probe=""
    [ -n "$probe" ] || probe=/var/lib/docker
    while [ ! -e "$probe" ] && [ "$probe" != / ]; do probe=$(dirname "$probe"); done
    FREE_KIB=$(df -Pk "$probe" 2>/dev/null | awk 'NR == 2 { print $4 }')
    if valid '[0-9]+' "$FREE_KIB" && [ "$FREE_KIB" -lt "$NEED_KIB" ]; then
        die "the host is not ready (nothing was installed): disk: $((NEED_KIB / 1024)) MiB needed for the images (x2 unpacked), $((FREE_KIB / 1024)) MiB free on $probe" \
            "free $(((NEED_KIB - FREE_KIB) / 1024 + 1)) MiB on $probe (docker system prune removes unused images)"
    fi
fi

# ---------------------------------------------------------------- 2. release dir
mkdir -p "$DIR/releases"
DIR=$(cd "$DIR" && pwd -P)
RELEASE="$DIR/releases/$VERSION"
if [ "$BUNDLE" != "$RELEASE" ]; then
    if [ -d "$RELEASE" ]; then
        if ! cmp -s "$RELEASE/SHA256SUMS" SHA256SUMS; then
            die "$RELEASE already holds a different release $VERSION" "releases are immutable: install a bundle with a new version"
        fi
    else
        say "copying the release to $RELEASE"
        rm -rf "$RELEASE.partial"
        mkdir "$RELEASE.partial"
        for f in * .[!.]*; do
            [ -e "$f" ] || continue
            [ "$f" = images ] && continue   # loaded into the engine, not kept twice
            cp -R "$f" "$RELEASE.partial/"
        done
        mv "$RELEASE.partial" "$RELEASE"
    fi
fi

# ---------------------------------------------------------------- 3. images
HOST_PLATFORM=$(docker version --format '{{.Server.Os}}/{{.Server.Arch}}' 2>/dev/null) || die "cannot ask the engine for its platform"
platform_of() {  # the platform key of service $1 matching the host (linux/arm64 also matches linux/arm64/v8)
    sed -n "s|^services\.$1\.config_digests\.\($HOST_PLATFORM[^=]*\)=.*|\1|p" "$WORK/manifest.flat" | head -n 1
}
if [ -d images ]; then
    PLAT_FILE=$(printf '%s' "$HOST_PLATFORM" | tr '/' '_')
    LOADMAN=""
    for f in images/docker-load/"$PLAT_FILE".json images/docker-load/"$PLAT_FILE"_*.json; do
        [ -f "$f" ] && { LOADMAN=$f; break; }
    done
    [ -n "$LOADMAN" ] || { [ -f images/manifest.json ] && LOADMAN=images/manifest.json; }
    [ -n "$LOADMAN" ] || die "this bundle has no images for $HOST_PLATFORM" "build it with: labbuild release VERSION --with-images --platform $HOST_PLATFORM"
    cp "$LOADMAN" "$WORK/manifest.json"
    grep -o 'blobs/sha256/[0-9a-f]*' "$WORK/manifest.json" | sort -u > "$WORK/blobs"
    say "loading $(wc -l < "$WORK/blobs" | tr -d ' ') blobs into the engine ($HOST_PLATFORM)"
    # shellcheck disable=SC2046
    tar -cf - -C "$WORK" manifest.json -C "$BUNDLE/images" $(cat "$WORK/blobs") | docker load >&2 \
        || die "docker load failed" "check the engine log and free disk space"
fi
checked=0
for svc in $SERVICES; do
    image=$(mget "services.$svc.image")
    plat=$(platform_of "$svc")
    [ -n "$plat" ] || { [ "$OFFLINE" = true ] && die "$svc: the lock has no $HOST_PLATFORM image for $image"; continue; }
    want=$(mget "services.$svc.config_digests.$plat")
    if ! got=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null); then
        [ "$OFFLINE" = true ] && die "$svc: image $image is not in the engine after loading" "the bundle is incomplete; rebuild it with --with-images"
        continue   # online bundle: compose pulls it by digest
    fi
    [ "$got" = "$want" ] || die "$svc: image $image has ID $got but the lock says $want" \
        "another image holds this tag; remove it (docker rmi $image) and install again"
    checked=$((checked + 1))
done
say "image IDs match the lock: $checked of $(echo $SERVICES | wc -w | tr -d ' ') services checked"

# ---------------------------------------------------------------- 4. secrets
umask 077
touch "$DIR/.env"
chmod 600 "$DIR/.env"
random_chars() {  # $1 alphabet for tr, $2 length
    tr -dc "$1" < /dev/urandom | head -c "$2"
}
# DIR/audit.log: one JSON line per operation on the secrets, never a value, in the format of
# labbuild's builder/host/auditlog.py (json.dumps(sort_keys=True): these keys in this order, ", " and
# ": " separators). Appended (>>), 0600; a torn last line is closed off first; no symbolic link.
AUDIT="$DIR/audit.log"
audit_check() {
    if [ -L "$AUDIT" ] || { [ -e "$AUDIT" ] && [ ! -f "$AUDIT" ]; }; then
        die "$AUDIT is not a regular file: nothing was generated" "install.sh appends the audit log there: move it away"
    fi
}
json_str() {  # $1 -> a JSON string literal: \ and " escaped, control characters dropped
    printf '"%s"' "$(printf '%s' "$1" | tr -d '\000-\037\177' | sed 's/\\/\\\\/g; s/"/\\"/g')"
}
json_list() {  # words -> a JSON array of them, sorted (byte order) and unique
    printf '%s\n' "$@" | LC_ALL=C sort -u | awk 'NF { printf "%s\"%s\"", (n++ ? ", " : ""), $0 }'
}
audit_append() {  # $1 command, $2 keys, $3 services (space-separated), $4 detail; outcome ok
    audit_check
    sudo_part=""
    if [ "$(id -u)" = 0 ] && [ -n "${SUDO_USER:-}" ]; then sudo_part=", \"sudo_user\": $(json_str "$SUDO_USER")"; fi
    # shellcheck disable=SC2086
    line="{\"command\": $(json_str "$1"), \"detail\": $(json_str "$4"), \"host\": $(json_str "$(uname -n)"),\
 \"keys\": [$(json_list $2)], \"outcome\": \"ok\", \"services\": [$(json_list $3)]$sudo_part,\
 \"time\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\", \"user\": $(json_str "$(id -un 2>/dev/null || id -u)")}"
    if [ -s "$AUDIT" ] && [ "$(tail -c 1 "$AUDIT" | od -An -c | tr -d ' ')" != '\n' ]; then line="
$line"; fi
    printf '%s\n' "$line" >> "$AUDIT" || die "cannot append to $AUDIT" "check the permissions of $DIR"
    chmod 600 "$AUDIT"
    sync "$AUDIT" 2>/dev/null || sync
}
owner_of() {  # KEY -> the service whose secret it is (manifest.json; the last in name order, as labbuild)
    awk -v k="$1" 'index($0, "services.") == 1 && substr($0, length($0) - length(k)) == "=" k {
        split($0, p, "."); if (p[3] == "secrets") s = p[2] } END { print s }' "$WORK/manifest.flat"
}
if [ -f secrets.env.example ]; then
    added=0
    added_keys=""
    audit_check
    # a secret is a KEY= line; its kind and length come from the comment on that
    # line or the comment lines just above it ("generate=token length=32", or
    # free text naming token|password|hex and a number).
    # A derived secret ("derive=bcrypt from=KEY") is no random value: it is made below from
    # KEY's value, once that exists; a derive= this script does not know is left out.
    awk '
        /^[ \t]*#/ { c = c " " $0; next }
        /^[A-Za-z_][A-Za-z0-9_.]*=/ {
            k = $0; sub(/=.*/, "", k); t = c " " $0; c = ""
            if (t ~ /derive=/) {
                if (match(t, /derive=bcrypt from=[A-Za-z_][A-Za-z0-9_]*/)) { print k, "bcrypt", 0, substr(t, RSTART + 19, RLENGTH - 19) }
                next
            }
            kind = "token"; if (t ~ /password/) kind = "password"; else if (t ~ /hex/) kind = "hex"
            if (match(t, /generate[ =:]*(token|password|hex)/)) { kind = substr(t, RSTART, RLENGTH); sub(/generate[ =:]*/, "", kind) }
            len = 32
            if (match(t, /length[ =:]*[0-9]+/)) { len = substr(t, RSTART, RLENGTH); gsub(/[^0-9]/, "", len) }
            else if (match(t, /[0-9]+ *(chars|characters)/)) { len = substr(t, RSTART, RLENGTH); gsub(/[^0-9]/, "", len) }
            pre = "-"   # "prefix=sk-": fixed text before the random part (length counts only that part)
            if (match(t, /prefix=[A-Za-z0-9][A-Za-z0-9_-]*/)) { pre = substr(t, RSTART + 7, RLENGTH - 7) }
            print k, kind, len, pre; next
        }
        { c = "" }' secrets.env.example > "$WORK/secrets"
    while read -r key kind len pre; do
        grep -q "^$key=" "$DIR/.env" && continue
        [ "$kind" != bcrypt ] || continue
        [ "$pre" != "-" ] || pre=""
        case "$kind" in
            password) value=$(random_chars 'A-Za-z0-9' "$len") ;;
            hex) value=$(random_chars '0-9a-f' "$len") ;;
            *) value=$(random_chars 'A-Za-z0-9_-' "$len") ;;
        esac
        printf '%s=%s%s\n' "$key" "$pre" "$value" >> "$DIR/.env"
        added=$((added + 1))
        added_keys="$added_keys $key"
    done < "$WORK/secrets"
    # derived: the bcrypt hash ($2b$, cost 10, as labbuild install makes it with pyca/bcrypt) of
    # the source's value, by mkpasswd (Debian package whois; libxcrypt's bcrypt), read from stdin:
    # never in argv. Single-quoted in .env: a hash holds $, which compose would interpolate.
    while read -r key kind len src; do
        [ "$kind" = bcrypt ] || continue
        grep -q "^$key=" "$DIR/.env" && continue
        value=$(env_value "$src")
        [ -n "$value" ] || continue
        # by its path: busybox sh would run its own mkpasswd applet, which has no bcrypt
        mkpasswd=""
        for d in $(printf '%s' "$PATH" | tr ':' ' '); do [ -x "$d/mkpasswd" ] && { mkpasswd="$d/mkpasswd"; break; }; done
        [ -n "$mkpasswd" ] || die "$key is the bcrypt hash of $src, which install.sh makes with mkpasswd, and it is not installed" \
            "install it (apt-get install whois), then run install.sh again; or install with labbuild install <bundle archive> --dir $DIR"
        [ "$(printf '%s' "$value" | wc -c)" -le 72 ] || die "$src is longer than the 72 bytes bcrypt reads" "shorten it in $DIR/.env, then run install.sh again"
        value=$(printf '%s' "$value" | "$mkpasswd" -m bcrypt -R 10 -s) || die "$mkpasswd could not make the bcrypt hash $key" \
            "install.sh needs the mkpasswd of Debian's whois package (libxcrypt; busybox's has no bcrypt): apt-get install whois; or install with labbuild install <bundle archive> --dir $DIR"
        valid '[$]2[aby][$]10[$][./A-Za-z0-9]{53}' "$value" || die "mkpasswd printed no bcrypt hash for $key" \
            "install with labbuild install <bundle archive> --dir $DIR"
        printf "%s='%s'\n" "$key" "$value" >> "$DIR/.env"
        added=$((added + 1))
        added_keys="$added_keys $key"
    done < "$WORK/secrets"
    if [ "$added" -gt 0 ]; then
        owners=""
        for key in $added_keys; do owners="$owners $(owner_of "$key")"; done
        audit_append "install" "$added_keys" "$owners" "generated $added secret(s) into .env"
    fi
    say "secrets: $added generated into $DIR/.env (existing values kept)"
fi
umask 022

# ---------------------------------------------------------------- 4b. front door keys
# door: begin (tests/test_door_install.py runs this block on its own)
if [ -n "$DOOR_DOMAIN" ]; then
    umask 077
    mkdir -p "$DIR/door" "$DIR/access"
    chmod 700 "$DIR/door" "$DIR/access"
    D="$DIR/door"
    DOOR_RE=$(printf '%s' "$DOOR_DOMAIN" | sed 's/\./\\./g')     # the domain as an ERE (dots literal)
    covered=0
    if [ -f "$D/lab.crt" ] && [ -f "$D/lab.key" ] \
        && openssl x509 -in "$D/lab.crt" -noout -checkend 2592000 >/dev/null 2>&1 \
        && openssl x509 -in "$D/lab.crt" -noout -text 2>/dev/null > "$WORK/lab.txt" \
        && grep -Eq "DNS:\*\.$DOOR_RE(,|\$)" "$WORK/lab.txt" && grep -Eq "DNS:$DOOR_RE(,|\$)" "$WORK/lab.txt"; then
        covered=1      # kept: made by an earlier install, or supplied by the operator
    fi
    if [ "$covered" = 0 ] && { [ ! -f "$D/ca.crt" ] || [ ! -f "$D/ca.key" ]; }; then
        [ ! -f "$D/ca.crt" ] || die "$D/lab.crt does not cover $DOOR_DOMAIN (or expires within 30 days) and there is no $D/ca.key to sign a new one with" \
            "put a certificate for *.$DOOR_DOMAIN and $DOOR_DOMAIN at $D/lab.crt (key: lab.key), or remove $D/ca.crt to have a lab CA made"
        openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -sha256 \
            -subj "/O=Local AI Lab/CN=Local AI Lab CA" -keyout "$D/.ca.key.new" -out "$D/.ca.crt.new" \
            -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
            -addext "keyUsage=critical,digitalSignature,keyCertSign,cRLSign" 2>"$WORK/openssl.err" \
            || die "openssl could not make the lab CA: $(cat "$WORK/openssl.err")"
        chmod 644 "$D/.ca.crt.new"
        mv -f "$D/.ca.key.new" "$D/ca.key"
        mv -f "$D/.ca.crt.new" "$D/ca.crt"
        say "front door: made the lab CA $D/ca.crt (trust it in your browser: see runbooks/authelia.md)"
    fi
    if [ "$covered" = 0 ]; then
        printf 'basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:*.%s,DNS:%s\n' \
            "$DOOR_DOMAIN" "$DOOR_DOMAIN" > "$WORK/leaf.ext"
        serial=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
            -subj "/O=Local AI Lab/CN=*.$DOOR_DOMAIN" -keyout "$D/.lab.key.new" -out "$WORK/lab.csr" 2>"$WORK/openssl.err" \
            && openssl x509 -req -in "$WORK/lab.csr" -CA "$D/ca.crt" -CAkey "$D/ca.key" -set_serial "0x$serial" \
                -days 825 -sha256 -extfile "$WORK/leaf.ext" -out "$D/.lab.crt.new" 2>"$WORK/openssl.err" \
            || die "openssl could not make the front door's certificate: $(cat "$WORK/openssl.err")"
        chmod 644 "$D/.lab.crt.new"
        mv -f "$D/.lab.key.new" "$D/lab.key"
        mv -f "$D/.lab.crt.new" "$D/lab.crt"
        say "front door: made the certificate of *.$DOOR_DOMAIN and $DOOR_DOMAIN ($D/lab.crt)"
    fi
    if [ ! -f "$D/oidc-jwks.pem" ]; then
        openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$D/.oidc-jwks.pem.new" 2>"$WORK/openssl.err" \
            || die "openssl could not make the OIDC signing key: $(cat "$WORK/openssl.err")"
        mv -f "$D/.oidc-jwks.pem.new" "$D/oidc-jwks.pem"
        say "front door: made the OIDC signing key $D/oidc-jwks.pem"
    fi
    umask 022
fi
# door: end

# ---------------------------------------------------------------- switch current
point() {  # point DIR/$1 at $2 (relative), replacing the link in one rename where mv -T exists
    rm -f "$DIR/.$1.new"
    ln -s "$2" "$DIR/.$1.new"
    if ! mv -T "$DIR/.$1.new" "$DIR/$1" 2>/dev/null; then
        rm -f "$DIR/$1"
        mv "$DIR/.$1.new" "$DIR/$1"
    fi
}
if [ -L "$DIR/current" ]; then
    old=$(readlink "$DIR/current")
    [ "$old" = "releases/$VERSION" ] || point previous "$old"
fi
point current "releases/$VERSION"
# unpublished: begin (tests/test_unpublished_install_sh.py runs this block on its own)
# No window for a first visitor (as builder/install/unpublished.py): a service whose [[provision]]
# calls never succeeded in this DIR (DIR/audit.log: a "provision" entry with outcome ok since the last
# `uninstall --volumes`) publishes no host port: DIR/unpublished.yaml resets its ports. --claimed SVC:
# the operator made its calls; recorded in DIR/audit.log as labbuild records "done before".
provisioned_before() {
    [ -f "$AUDIT" ] || return 0
    awk 'index($0, "\"command\": \"uninstall --volumes\"") { list = ""; next }
         index($0, "\"command\": \"provision\"") && index($0, "\"outcome\": \"ok\"") && match($0, /"services": \["[a-z][a-z0-9-]*"\]/) {
             list = list " " substr($0, RSTART + 14, RLENGTH - 16) }
         END { print list }' "$AUDIT"
}
for svc in $CLAIMED; do
    valid "$GRAMMAR_NAME" "$svc" || die "--claimed $svc: not a service name" "name a service the calls were printed for"
    [ -n "$(mget "services.$svc.provision.0.path")" ] || die "--claimed $svc: this bundle has no provisioning calls for a service of that name" \
        "name a service the calls were printed for"
    audit_check
    audit_append "provision" "$(mlist "services.$svc.provision.0.keys" | tr '\n' ' ')" "$svc" "$svc: already: claimed by the operator's calls (install.sh --claimed)"
    say "$svc: recorded as claimed in $AUDIT: its port is published"
done
BEFORE=" $(provisioned_before) "
UNPUBLISHED=""
for svc in $SERVICES; do
    [ -n "$(mget "services.$svc.provision.0.path")" ] || continue
    case "$BEFORE" in *" $svc "*) continue ;; esac
    i=0
    ok=1
    while [ -n "$(mget "services.$svc.provision.$i.path")" ]; do
        hp=$(mget "services.$svc.provision.$i.host_port"); cp=$(mget "services.$svc.provision.$i.container_port")
        { [ -n "$hp" ] && [ "$hp" != null ] && [ -n "$cp" ] && [ "$cp" != null ]; } || ok=0
        i=$((i + 1))
    done
    [ "$ok" = 0 ] || UNPUBLISHED="$UNPUBLISHED $svc"
done
UNPUBLISHED=${UNPUBLISHED# }
if [ -n "$UNPUBLISHED" ]; then
    {
        printf '# Written by labbuild: these services publish no host port until install has claimed their\n'
        printf '# admin account (builder/install/unpublished.py); do not edit.\nservices:\n'
        for svc in $UNPUBLISHED; do printf '  %s:\n    ports: !reset []\n' "$svc"; done
    } > "$DIR/.unpublished.yaml.new" && mv -f "$DIR/.unpublished.yaml.new" "$DIR/unpublished.yaml"
    say "$(echo "$UNPUBLISHED" | sed 's/ /, /g'): no host port until install has claimed the admin (DIR/unpublished.yaml)"
fi
# unpublished: end
# DIR/compose.yaml: plain `docker compose` in DIR finds this release (same file as labbuild writes)
case "$LAB$VERSION" in *[!A-Za-z0-9.+-]*) die "manifest.json: unexpected characters in lab or version" ;; esac
{
    printf '# Written by labbuild on every install, upgrade and rollback; do not edit (put your\n'
    printf "# settings into .env, which wins over the release's lab.env). Run: docker compose ps\n"
    [ "$GPU" = 0 ] || printf '%s\n' "$GPU_MARK"
    [ -z "$UNPUBLISHED" ] || printf '# labbuild: unpublished until provisioned: %s\n' "$UNPUBLISHED"
    printf 'name: "%s"\ninclude:\n' "$LAB"
    paths='"releases/'"$VERSION"'/compose.yaml"'
    [ "$GPU" != 1 ] || paths="$paths"', "releases/'"$VERSION"'/compose.gpu.yaml"'
    [ -z "$UNPUBLISHED" ] || paths="$paths"', "unpublished.yaml"'
    printf '  - path: [%s]\n' "$paths"
    printf '    env_file: ["releases/%s/lab.env", ".env"]\n' "$VERSION"
} > "$DIR/.compose.yaml.new" && mv -f "$DIR/.compose.yaml.new" "$DIR/compose.yaml"
[ -n "$UNPUBLISHED" ] || rm -f "$DIR/unpublished.yaml"
say "installed $LAB $VERSION into $RELEASE"

# ---------------------------------------------------------------- 4c. the front door's first admin
# users: begin (tests/test_install_sh_users.py runs this block on its own)
# The same file `labbuild install` writes (builder.host.userdb): mode 0600 in DIR/access (0700);
# argon2id with Authelia's defaults (t=3, m=65536 KiB, p=4, 32-byte key) over a 16-character random
# salt; the password (24 characters of [A-Za-z0-9_-]) is printed once on stdout, never stored.
if [ "$DOOR_USERS" = make ]; then
    umask 077
    mkdir -p "$DIR/access"
    chmod 700 "$DIR/access"
    ADMIN_PASSWORD=$(random_chars 'A-Za-z0-9_-' 24)
    ADMIN_SALT=$(random_chars 'A-Za-z0-9' 16)
    ADMIN_HASH=$(printf '%s' "$ADMIN_PASSWORD" | argon2 "$ADMIN_SALT" -id -t 3 -k 65536 -p 4 -l 32 -e) \
        || die "argon2 could not hash the first admin's password" "install with labbuild install <bundle archive> --dir $DIR"
    valid '[$]argon2id[$]v=19[$]m=65536,t=3,p=4[$][A-Za-z0-9+/]{22}[$][A-Za-z0-9+/]{43}' "$ADMIN_HASH" \
        || die "argon2 printed no argon2id hash in Authelia's format" "install with labbuild install <bundle archive> --dir $DIR"
    {
        printf "# The front door's users (Authelia file backend). Managed with \`labbuild users ... --dir DIR\`;\n"
        printf '# hand edits are kept, comments are not.\n'
        printf 'users:\n  admin:\n    displayname: admin\n    password: "%s"\n    email: ""\n' "$ADMIN_HASH"
        printf '    groups:\n    - admin\n    disabled: false\n'
    } > "$DIR/access/.users_database.yml.new"
    chmod 600 "$DIR/access/.users_database.yml.new"
    mv -f "$DIR/access/.users_database.yml.new" "$DIR/access/users_database.yml"
    umask 022
    say "front door: made the first admin 'admin' in $DIR/access/users_database.yml"
    printf 'front door: first admin admin, password %s (shown once; change it: labbuild users passwd admin --dir %s)\n' \
        "$ADMIN_PASSWORD" "$DIR"
elif [ "$DOOR_USERS" = keep ]; then
    chmod 600 "$DIR/access/users_database.yml" 2>/dev/null || say "warning: cannot set the mode of $DIR/access/users_database.yml to 0600"
fi
# users: end

[ "$START" = 1 ] || { say "not started (--no-start)"; exit 0; }

# ---------------------------------------------------------------- 5. up + health
cd "$DIR"
unset COMPOSE_FILE COMPOSE_PROJECT_NAME COMPOSE_ENV_FILES COMPOSE_PROFILES   # DIR/compose.yaml decides
say "starting: cd $DIR && docker compose up -d"
up_failed() {
    running=$(docker ps --filter "label=com.docker.compose.project=$LAB" --format '{{.Label "com.docker.compose.service"}}' | sort | tr '\n' ' ')
    say "error: docker compose up failed: $1"
    grep -i 'error' "$WORK/up.log" | tail -n 6 >&2 || true
    if grep -qi 'address already in use\|port is already allocated' "$WORK/up.log"; then
        say "hint: another program uses a host port of this lab: stop it, or change the port and release again"
    fi
    if [ -n "$running" ]; then
        say "containers of $LAB running now: $running"
        say "stop them with: cd $DIR && docker compose down"
    else
        say "no container of $LAB is running"
    fi
    exit 1
}
# shellcheck disable=SC2086  # PROFILES: "--profile SERVICE" words of the optional services to start
compose $PROFILES up -d --remove-orphans > "$WORK/up.log" 2>&1 \
    || { cat "$WORK/up.log" >&2; up_failed "compose exited with an error"; }
cat "$WORK/up.log" >&2
# compose can exit 0 although a pull or a start failed: trust only the containers' states
docker ps -a --filter "label=com.docker.compose.project=$LAB" \
    --format '{{.Label "com.docker.compose.service"}} {{.State}}' > "$WORK/states"
for svc in $SERVICES; do
    case " $WAITING " in *" $svc "*) continue ;; esac
    state=$(awk -v s="$svc" '$1 == s { print $2; exit }' "$WORK/states")
    case "$state" in
        '') up_failed "$svc has no container" ;;
        created|dead) up_failed "$svc is $state, not running" ;;
    esac
done

# Scrape targets of optional services (as `labbuild install` does, builder/install/targets.py):
# each started one gets its file_sd group in the prometheus container, the others [] — a
# service that is not started is no scrape target and fires no TargetDown.
TARGETS="$RELEASE/observability/prometheus/optional-targets.json"
if [ -f "$TARGETS" ]; then
    flatten_json "$TARGETS" > "$WORK/targets.flat"
    tget() { awk -v k="$1" 'index($0, k "=") == 1 { print substr($0, length(k) + 2); exit }' "$WORK/targets.flat"; }
    tdir=$(tget dir)
    tsvc=$(tget service)
    case "$tdir" in /?*) ;; *) die "$TARGETS: malformed (dir)" "the bundle is damaged" ;; esac
    valid "$GRAMMAR_NAME" "$tsvc" || die "$TARGETS: malformed (service)" "the bundle is damaged"
    mkdir -p "$WORK/targets/${tdir##*/}"
    for svc in $(sed -n 's/^groups\.\([^.]*\)\.targets\.0=.*/\1/p' "$WORK/targets.flat"); do
        valid "$GRAMMAR_NAME" "$svc" || die "$TARGETS: malformed (group $svc)" "the bundle is damaged"
        case " $WAITING " in
            *" $svc "*) printf '[]\n' ;;
            *) printf '[{"labels": {"service": "%s"}, "targets": ["%s"]}]\n' "$svc" "$(tget "groups.$svc.targets.0")" ;;
        esac > "$WORK/targets/${tdir##*/}/$svc.json"
    done
    cid=$(docker ps -aq --filter "label=com.docker.compose.project=$LAB" --filter "label=com.docker.compose.service=$tsvc" | head -n 1)
    [ -n "$cid" ] || up_failed "$tsvc has no container for the optional services' scrape targets"
    tar -C "$WORK/targets" -cf - "${tdir##*/}" | docker cp - "$cid:${tdir%/*}" \
        || up_failed "writing the optional services' scrape targets into $tsvc failed"
    say "prometheus: optional scrape targets written to $tdir"
fi

# dependency order: a service after everything it depends on
ORDER=""
left=$SERVICES
while [ -n "$left" ]; do
    next=""
    progressed=0
    for svc in $left; do
        ready=1
        for dep in $(mlist "services.$svc.depends_on"); do
            case " $ORDER " in *" $dep "*) ;; *) case " $SERVICES " in *" $dep "*) ready=0 ;; esac ;; esac
        done
        if [ $ready = 1 ]; then ORDER="$ORDER $svc"; progressed=1; else next="$next $svc"; fi
    done
    [ $progressed = 1 ] || { ORDER="$ORDER $next"; break; }
    left=$next
done

probe() {  # scheme port path accepted-statuses [host: 127.0.0.1] -> 0 when healthy
    h=${5:-127.0.0.1}
    if [ "$1" = tcp ]; then
        if command -v nc >/dev/null 2>&1; then nc -z -w 2 "$h" "$2" >/dev/null 2>&1; return; fi
        rc=0; curl -s -o /dev/null --max-time 2 "telnet://$h:$2" </dev/null >/dev/null 2>&1 || rc=$?
        [ $rc -ne 7 ] && [ $rc -ne 28 ]; return
    fi
    if command -v curl >/dev/null 2>&1; then
        code=$(curl -k -s -o /dev/null -w '%{http_code}' --max-time 5 "$1://$h:$2$3" 2>/dev/null) || code=000
    elif command -v wget >/dev/null 2>&1; then
        code=$(wget -S -q -O /dev/null -T 5 --no-check-certificate "$1://$h:$2$3" 2>&1 | awk '/^ *HTTP\//{c=$2} END{print c+0}')
    else
        die "neither curl nor wget is installed: cannot probe health" "install curl, or check the services yourself"
    fi
    if [ -n "$4" ]; then
        for s in $4; do [ "$code" = "$s" ] && return 0; done
        return 1
    fi
    case "$code" in 2??) return 0 ;; esac
    return 1
}

container_ip() {  # SERVICE -> its container's address on the lab network
    docker ps -q --filter "label=com.docker.compose.project=$LAB" --filter "label=com.docker.compose.service=$1" \
        | head -n 1 | xargs -r docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' | awk '{ print $1 }'
}
container_port() {  # SERVICE PORT-NAME -> the port's number in the container
    i=0
    while n=$(mget "services.$1.ports.$i.name"); [ -n "$n" ]; do
        [ "$n" != "$2" ] || { mget "services.$1.ports.$i.container"; return; }
        i=$((i + 1))
    done
}
deadline=$(( $(date +%s) + TIMEOUT ))
for svc in $ORDER; do
    case " $WAITING " in *" $svc "*) say "  $svc: not started: optional, needs its supplied secret (see above)"; continue ;; esac
    optional=$(mget "services.$svc.optional")
    port=$(mget "services.$svc.health.host_port")
    if [ -z "$port" ] || [ "$port" = null ]; then
        say "  $svc: no health probe (started)"
        continue
    fi
    scheme=$(mget "services.$svc.health.scheme"); [ -n "$scheme" ] && [ "$scheme" != null ] || scheme=http
    path=$(mget "services.$svc.health.path"); [ -n "$path" ] && [ "$path" != null ] || path=/
    statuses=$(mlist "services.$svc.health.status" | tr '\n' ' ')
    host=127.0.0.1
    case " $UNPUBLISHED " in *" $svc "*)      # no host port yet: its address on the lab network
        host=$(container_ip "$svc"); port=$(container_port "$svc" "$(mget "services.$svc.health.port")") ;;
    esac
    printf '  %s: waiting for %s://%s:%s%s ' "$svc" "$scheme" "$host" "$port" "$path" >&2
    until probe "$scheme" "$port" "$path" "$statuses" "$host"; do
        if [ "$(date +%s)" -ge "$deadline" ] && [ "$optional" = true ]; then
            printf 'not healthy (optional: does not fail the install)\n' >&2
            continue 2
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            printf 'FAILED\n' >&2
            say "error: $svc did not become healthy within ${TIMEOUT}s"
            say "--- last log lines of $svc:"
            compose logs --no-color --tail 20 "$svc" >&2 || true
            say "--- runbook: $RELEASE/$(mget "services.$svc.runbook")"
            say "the lab's containers are left running for inspection; stop them with:"
            say "  cd $DIR && docker compose down"
            exit 1
        fi
        printf '.' >&2
        sleep 1
    done
    printf 'healthy\n' >&2
done
say "all services of $LAB $VERSION are up"

# ---------------------------------------------------------------- 6. provisioning: printed, not made
# [[provision]] calls (an app's owner account, claimed with a password generated into DIR/.env; an app's
# own LiteLLM key, registered with the master key) need a JSON HTTP client with a cookie jar and values
# filled in without pasting them into JSON text; this script has only sh and curl/wget, so it prints the
# calls for the operator instead (labbuild install makes them itself). Until they succeeded, such a
# service publishes no host port (DIR/unpublished.yaml): the calls go to its container's address, and
# `install.sh --claimed SERVICE` publishes it afterwards; an app's own key is refused until then.
clean() { tr -d '\000-\037\177'; }
for svc in $ORDER; do
    [ -n "$(mget "services.$svc.provision.0.path")" ] || continue
    case " $WAITING " in *" $svc "*) continue ;; esac
    case "$BEFORE" in *" $svc "*) say "$svc: its calls succeeded before (DIR/audit.log)"; continue ;; esac
    case " $UNPUBLISHED " in
        *" $svc "*) say "NOT DONE: $svc publishes no host port until these calls are made (an admin account goes to"
                    say "  whoever calls first; apps' keys are not accepted yet); install.sh does not make them: run"
                    say "  'labbuild install' with this bundle and --dir $DIR, or make them now from this host, in order,"
                    say "  replacing each \${KEY} (in the body and the Authorization header) by the value of KEY in"
                    say "  $DIR/.env (an answer saying it was done before counts as done), then publish it:"
                    say "  sh install.sh --dir $DIR --claimed $svc" ;;
        *) say "NOT DONE: $svc is not set up until these calls are made (an admin account left to its first visitor,"
           say "  or apps' keys it does not accept yet); install.sh does not make them: run 'labbuild install' with"
           say "  this bundle and --dir $DIR, or make them now, in order, replacing each \${KEY} (in the body and the"
           say "  Authorization header) by the value of KEY in $DIR/.env (an answer saying it was done before counts as done):" ;;
    esac
    i=0
    while p=$(mget "services.$svc.provision.$i.path"); [ -n "$p" ]; do
        m=$(mget "services.$svc.provision.$i.method" | clean)
        b=$(mget "services.$svc.provision.$i.bearer" | clean)
        auth=""
        [ -z "$b" ] || auth=" -H 'Authorization: Bearer \${$b}'"
        hp=$(mget "services.$svc.provision.$i.host_port" | clean)
        cport=$(mget "services.$svc.provision.$i.container_port" | clean)
        if case " $UNPUBLISHED " in *" $svc "*) true ;; *) false ;; esac; then   # until claimed: its address
            url="http://$(container_ip "$svc" | clean):$cport$(printf '%s' "$p" | clean)"
        elif valid '[0-9]{1,5}' "$hp"; then
            url="http://127.0.0.1:$hp$(printf '%s' "$p" | clean)"
        else   # behind the front door no port is published: the container's address on the lab network
            say "  # (no host port: set ADDR to $svc's address, e.g. ADDR=\$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' \$(docker ps -q --filter label=com.docker.compose.project=$LAB --filter label=com.docker.compose.service=$svc) | cut -d' ' -f1))"
            url="http://\$ADDR:$cport$(printf '%s' "$p" | clean)"
        fi
        say "  # $(mget "services.$svc.provision.$i.description" | clean)"
        if [ "$m" = GET ]; then
            say "  curl -sS -b cookies.txt -c cookies.txt$auth $url"
        else
            say "  curl -sS -b cookies.txt -c cookies.txt -X $m -H 'Content-Type: application/json'$auth --data-binary @- $url <<'BODY'"
            say "$(mget "services.$svc.provision.$i.body" | clean)"
            say "BODY"
        fi
        i=$((i + 1))
    done
done
