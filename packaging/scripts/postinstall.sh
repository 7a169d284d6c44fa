#!/bin/sh
# hapair postinstall: create the API group, register the unit. The daemon
# is not started: it needs /etc/hapair/hapair.toml and a key first
# (hapairctl keygen). An upgrade restarts a running daemon, unless it is
# the active node's or the new version refuses the configuration.
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
		# prints the role and exits 1 for any but ACTIVE; a daemon that
		# does not answer, or a file hapairctl cannot read, prints an
		# error instead, and its exit code may be 1 too.
		rc=0
		role=$(hapairctl role 2>&1) || rc=$?
		case "$rc:$role" in
		1:STANDBY | 1:FAULT | 1:INIT)
			# A standby restarted on a file the new version refuses
			# would not come back: check with the new one first.
			if out=$(hapaird --check --file-only -c /etc/hapair/hapair.toml 2>&1); then
				systemctl try-restart hapaird.service || true
			else
				echo "hapair: the new hapaird refuses /etc/hapair/hapair.toml, so the running daemon ($role) was not restarted:" >&2
				echo "$out" >&2
				echo "hapair: mend the file, then: systemctl restart hapaird" >&2
			fi
			;;
		0:ACTIVE)
			echo "hapair: hapaird is active on this node and goes on running the version before this upgrade." >&2
			echo "hapair: to run the new one, hand over and restart: hapairctl switchover && systemctl restart hapaird" >&2
			;;
		*)
			echo "hapair: the running hapaird's role could not be read, so it was not restarted: $role" >&2
			echo "hapair: if it is the standby: systemctl restart hapaird; if active: hapairctl switchover && systemctl restart hapaird" >&2
			;;
		esac
	fi
fi
exit 0
