#!/bin/sh
# /docker-entrypoint.d/20-envsubst-on-templates.sh of the labbuild test image "nginx".
#
# Written for this image from a reading of nginx/docker-nginx entrypoint/20-envsubst-on-templates.sh:
# every $NGINX_ENVSUBST_TEMPLATE_DIR (/etc/nginx/templates) file ending in
# $NGINX_ENVSUBST_TEMPLATE_SUFFIX (.template) becomes the same relative path, suffix dropped, under
# $NGINX_ENVSUBST_OUTPUT_DIR (/etc/nginx/conf.d), with only the variables defined in the
# environment substituted (filtered by $NGINX_ENVSUBST_FILTER when set).
set -e

template_dir="${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}"
suffix="${NGINX_ENVSUBST_TEMPLATE_SUFFIX:-.template}"
output_dir="${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}"
filter="${NGINX_ENVSUBST_FILTER:-}"

[ -d "$template_dir" ] || exit 0
if [ ! -w "$output_dir" ]; then
	echo "$0: ERROR: $template_dir exists, but $output_dir is not writable" >&2
	exit 0
fi
defined_envs=$(printf '${%s} ' $(awk "END { for (name in ENVIRON) { print ( name ~ /${filter}/ ) ? name : \"\" } }" < /dev/null))
find "$template_dir" -follow -type f -name "*$suffix" -print | while read -r template; do
	relative_path="${template#"$template_dir/"}"
	output_path="$output_dir/${relative_path%"$suffix"}"
	subdir=$(dirname "$relative_path")
	mkdir -p "$output_dir/$subdir"
	echo "$0: Running envsubst on $template to $output_path"
	envsubst "$defined_envs" < "$template" > "$output_path"
done
