#!/bin/sh
# closure.sh ROOT SOURCE[=TARGET]...: copy each SOURCE file or directory from this (builder)
# stage into the root filesystem ROOT, at TARGET when given (replacing what is there, e.g. a
# busybox applet of that name), together with every shared library its ELF files load (ldd)
# and the dynamic loader. Of Debian's merged-/usr links (bin, sbin, lib, lib64 -> usr/...),
# ROOT gets those it lacks, so libraries land where ldd found them.
# Used by the recipes whose official image is not Debian (busybox, alpine): the final stage
# is FROM scratch and holds only what this copies.
set -eu
root=$1
shift
mkdir -p "$root/usr/bin" "$root/usr/sbin" "$root/usr/lib" "$root/usr/lib64"
for d in bin sbin lib lib64; do
	[ -e "$root/$d" ] || ln -s "usr/$d" "$root/$d"
done

# put PATH (a file, directory or symlink) into ROOT at the same path, following symlinks too
keep() {
	[ -e "$root$1" ] || [ -L "$root$1" ] || cp -a --parents "$1" "$root"
	if [ -L "$1" ]; then
		keep "$(readlink -f "$1")"
	fi
}

elves=$(mktemp)
for spec; do
	src=${spec%%=*}
	dst=${spec#*=}
	[ "$spec" = "$src" ] && dst=$src
	mkdir -p "$root$(dirname "$dst")"
	rm -rf "$root$dst"    # never write through a link into this stage
	cp -a -L "$src" "$root$dst"
	find -L "$src" -type f -print >>"$elves"
done
while read -r f; do
	ldd "$f" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
done <"$elves" | sort -u | while read -r lib; do
	keep "$lib"
done
rm -f "$elves"
