#!/bin/sh
# sbps-marshal postremove: make systemd forget the removed unit.
set -e
[ -d /run/systemd/system ] || exit 0
systemctl daemon-reload >/dev/null 2>&1 || :
exit 0
