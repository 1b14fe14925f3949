#!/bin/sh
# sbps-marshal preinstall (RPM %pre: $1 = 1 install, >= 2 upgrade; deb
# preinst: $1 = install or upgrade).
#
# Over the Python agent (sbps-marshal 1.x: its unit runs
# /usr/lib/sbps-marshal/bin/sbps-marshal) the service is held: masked, so
# that nothing (re)starts it into this agent before an operator has checked
# the node. The 1.x package's own scripts run after ours during an upgrade and
# restart the service on upgrade (SUSE's %service_del_postun try-restart, or
# a needs-restart mark the systemd package acts on at the end of the
# transaction): systemd refuses to start or restart a masked unit, while a
# running old agent keeps running. postinstall.sh prints how to release the
# hold; a reboot does not release it.
set -e
unit=/usr/lib/systemd/system/sbps-marshal.service
python=no
[ -e /usr/lib/sbps-marshal/bin/sbps-marshal ] && python=yes
if [ -r "$unit" ]; then
	while IFS= read -r line; do
		case $line in ExecStart=/usr/lib/sbps-marshal/*) python=yes ;; esac
	done <"$unit"
fi
[ "$python" = yes ] || exit 0
if command -v systemctl >/dev/null 2>&1 && systemctl mask sbps-marshal.service >/dev/null 2>&1; then
	exit 0
fi
# No systemctl (an image build), or it failed: mask by hand.
if [ -L /etc/systemd/system/sbps-marshal.service ] || ln -s /dev/null /etc/systemd/system/sbps-marshal.service 2>/dev/null; then
	exit 0
fi
echo "sbps-marshal: warning: could not mask sbps-marshal.service; the Python package's scripts may restart it into the new agent during this upgrade" >&2
exit 0
