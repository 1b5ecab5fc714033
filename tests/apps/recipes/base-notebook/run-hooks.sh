#!/bin/bash
# run-hooks.sh of the labbuild test image "base-notebook" (tests/apps/recipes/base-notebook),
# written from a reading of jupyter/docker-stacks images/docker-stacks-foundation/run-hooks.sh.
# Same contract, sourced by start.sh with one directory: its *.sh files are sourced, its other
# executable files run, in name order; a failing hook is reported and the start goes on.
if [ "$#" -ne 1 ] || [ ! -d "$1" ]; then
	echo "run-hooks.sh: want exactly one directory, got: $*" >&2
	return 1
fi
for hook in "$1"/*; do
	[ -e "$hook" ] || continue
	case "$hook" in
		*.sh)
			echo "run-hooks.sh: sourcing $hook"
			# shellcheck disable=SC1090
			source "$hook" || echo "run-hooks.sh: $hook failed, continuing" >&2
			;;
		*)
			if [ -x "$hook" ]; then
				echo "run-hooks.sh: running $hook"
				"$hook" || echo "run-hooks.sh: $hook failed, continuing" >&2
			else
				echo "run-hooks.sh: ignoring $hook (neither *.sh nor executable)"
			fi
			;;
	esac
done
