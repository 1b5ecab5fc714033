#!/bin/sh
# busybox.sh ROOT: a busybox userland in ROOT, like the busybox and alpine images the
# official Prometheus and Redis images start from: Debian's busybox-static as /bin/busybox
# with a link per applet (sh, wget, grep, nc, ...: no curl, no bash), the users root and
# nobody (65534), CA certificates, /etc/services, /etc/nsswitch.conf and the time zones
# (what quay.io/prometheus/busybox adds to busybox: prometheus/busybox glibc/Dockerfile,
# https://github.com/prometheus/busybox/blob/master/glibc/Dockerfile).
set -eu
root=$1
install -D -m 0755 /bin/busybox "$root/bin/busybox"
/bin/busybox --list-full | while read -r applet; do
	[ -e "$root/$applet" ] || [ -L "$root/$applet" ] || { mkdir -p "$root/$(dirname "$applet")"; ln -s /bin/busybox "$root/$applet"; }
done
mkdir -p "$root/etc/ssl/certs" "$root/usr/share" "$root/tmp" "$root/root" "$root/home" "$root/var"
chmod 1777 "$root/tmp"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
cp /etc/services "$root/etc/services"
cp -a /usr/share/zoneinfo "$root/usr/share/"
printf 'hosts: files dns\nnetworks: files\n' >"$root/etc/nsswitch.conf"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\nnogroup:x:65534:\n' >"$root/etc/group"
