#!/bin/sh
# hapair postremove: on purge, remove the state and configuration this
# package made; the operator's key and config go only with purge.
set -e
case "$1" in
	purge)
		rm -rf /var/lib/hapair /etc/hapair
		;;
esac
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
