#!/bin/sh
# hapair preremove: stop the daemon on removal (not on upgrade); its
# ExecStopPost releases any VIP this node holds.
set -e
case "$1" in
	remove|purge|0)
		if [ -d /run/systemd/system ]; then
			systemctl disable --now hapaird.service >/dev/null 2>&1 || true
		fi
		;;
esac
exit 0
