#!/bin/sh
# sbps-marshal postinstall (rpm %post: $1 = 1 install, >= 2 upgrade; deb
# postinst: $1 = configure, $2 = the previous version on upgrade).
#
#   held (masked: preinstall.sh over the Python agent, or an operator):
#        nothing is started or restarted; says how to check and switch.
#   fresh install: not enabled, not started; says what to do.
#   upgrade 2.x -> 2.y: try-restart (a running agent, or bridge, restarts on
#        the new binary, a stopped one stays stopped), unless /etc/sysconfig/services
#        has DISABLE_RESTART_ON_UPDATE=yes (SUSE's switch for every package).
#
# Without systemctl (an image build, rpm --root) there is nothing to do.
set -e
case "$1" in
	configure) upgrade=no; [ -n "${2:-}" ] && upgrade=yes ;;
	1) upgrade=no ;;
	[0-9]*) upgrade=yes ;;
	*) exit 0 ;; # deb abort-upgrade, abort-remove, ...
esac
command -v systemctl >/dev/null 2>&1 || exit 0
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
state=$(systemctl is-enabled sbps-marshal.service 2>/dev/null) || :
if [ "$state" = masked ]; then
	cat <<'MSG'
sbps-marshal: sbps-marshal.service is masked (held): not started or restarted.
  A running agent (the Python one, when upgrading from 1.x) keeps running.
  Check the node:  sbps-marshal doctor && sbps-marshal plan
  Then switch:     systemctl unmask sbps-marshal && systemctl restart sbps-marshal
MSG
	exit 0
fi
if [ "$upgrade" = no ]; then
	cat <<'MSG'
sbps-marshal: installed, not enabled or started.
  Settings:        /etc/sysconfig/sbps-marshal
  Check the node:  sbps-marshal doctor && sbps-marshal plan
  Then:            systemctl enable --now sbps-marshal
MSG
	exit 0
fi
[ -d /run/systemd/system ] || exit 0
if [ -r /etc/sysconfig/services ] && (. /etc/sysconfig/services && [ "${DISABLE_RESTART_ON_UPDATE:-no}" = yes ]); then
	echo "sbps-marshal: not restarted (DISABLE_RESTART_ON_UPDATE=yes in /etc/sysconfig/services): systemctl try-restart sbps-marshal"
	exit 0
fi
systemctl try-restart sbps-marshal.service sbps-marshal-bridge-webhook.service \
	sbps-marshal-bridge-ims.service >/dev/null 2>&1 || :
exit 0
