#!/bin/sh
# sbps-marshal postinstall (rpm: $1 = 1 install, >= 2 upgrade; deb: $1 =
# configure, $2 = the previous version on upgrade). The service is never
# enabled or started here: an operator migrating from the old agent stops it
# first (see README). On upgrade a running agent is restarted on the new binary.
set -e
[ -d /run/systemd/system ] || exit 0
systemctl daemon-reload >/dev/null 2>&1 || :
upgrade=no
case "$1" in
  configure) [ -n "$2" ] && upgrade=yes ;;
  [2-9]|[1-9][0-9]*) upgrade=yes ;;
esac
if [ "$upgrade" = yes ]; then
  systemctl try-restart sbps-marshal.service >/dev/null 2>&1 || :
fi
exit 0
