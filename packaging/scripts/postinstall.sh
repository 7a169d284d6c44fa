#!/bin/sh
# hapair postinstall: create the API group, register the unit. The daemon
# is not started: it needs /etc/hapair/hapair.toml and a key first
# (hapairctl keygen). An upgrade restarts a running daemon.
set -e
if command -v systemd-sysusers >/dev/null 2>&1; then
	systemd-sysusers hapair.conf || true
elif ! getent group hapair >/dev/null 2>&1; then
	groupadd --system hapair || true
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	if systemctl is-active --quiet hapaird.service; then
		systemctl try-restart hapaird.service || true
	fi
fi
exit 0
