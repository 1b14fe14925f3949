#!/bin/sh
# sbps-marshal preremove (rpm: $1 = 0 on removal, 1 on upgrade; deb: $1 =
# remove or upgrade). Stops and disables the service only on removal.
# Stopping the agent leaves its LUNs in LIO as they are.
set -e
[ -d /run/systemd/system ] || exit 0
case "$1" in
  0|remove)
    systemctl disable --now sbps-marshal.service sbps-marshal-bridge-webhook.service \
      sbps-marshal-bridge-ims.service >/dev/null 2>&1 || : ;;
esac
exit 0
