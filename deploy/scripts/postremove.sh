#!/bin/sh
# sbps-marshal postremove (rpm %postun: $1 = 0 on removal, >= 1 when another
# version replaced this one; deb postrm: $1 = remove, purge, upgrade, ...).
#
# Makes systemd forget the removed unit. When the package that replaced this
# one is the Python agent (a rollback to 1.x: the unit now in place runs
# /usr/lib/sbps-marshal/bin/sbps-marshal), the hold preinstall.sh put on the
# service (a mask) is lifted: it only guards the switch to this agent. The
# agent that runs keeps running until `systemctl restart sbps-marshal`.
set -e
unit=/usr/lib/systemd/system/sbps-marshal.service
python=no
if [ -r "$unit" ]; then
	while IFS= read -r line; do
		case $line in ExecStart=/usr/lib/sbps-marshal/*) python=yes ;; esac
	done <"$unit"
fi
# Masked: /etc's unit is a link to /dev/null, a character device.
if [ "$python" = yes ] && [ -c /etc/systemd/system/sbps-marshal.service ]; then
	if command -v systemctl >/dev/null 2>&1; then
		systemctl unmask sbps-marshal.service >/dev/null 2>&1 || :
	else
		rm -f /etc/systemd/system/sbps-marshal.service
	fi
	echo "sbps-marshal: back to the Python agent: sbps-marshal.service unmasked; the running agent runs on until: systemctl restart sbps-marshal"
fi
[ -d /run/systemd/system ] || exit 0
command -v systemctl >/dev/null 2>&1 || exit 0
systemctl daemon-reload >/dev/null 2>&1 || :
exit 0
