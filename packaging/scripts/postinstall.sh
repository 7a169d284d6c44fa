#!/bin/sh
# hapair postinstall: create the API group, register the unit. The daemon
# is not started: it needs /etc/hapair/hapair.toml and a key first
# (hapairctl keygen). An upgrade restarts a running daemon, unless it is
# the active node's.
set -e
if command -v systemd-sysusers >/dev/null 2>&1; then
	systemd-sysusers hapair.conf || true
elif ! getent group hapair >/dev/null 2>&1; then
	groupadd --system hapair || true
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	if systemctl is-active --quiet hapaird.service; then
		# The active node's daemon is left running the version before
		# this upgrade: restarted, it hands over only if the standby
		# takes over at that moment, and where the peer is down, or is
		# upgraded at the same time (as configuration management does),
		# the VIP and every session would be lost. "hapairctl role"
		# exits 1 for any other role, 3 when the daemon does not answer.
		rc=0
		hapairctl role >/dev/null 2>&1 || rc=$?
		if [ "$rc" -eq 1 ]; then
			systemctl try-restart hapaird.service || true
		else
			echo "hapair: hapaird is active on this node (or did not answer) and goes on running the version before this upgrade." >&2
			echo "hapair: to run the new one, hand over and restart: hapairctl switchover && systemctl restart hapaird" >&2
		fi
	fi
fi
exit 0
