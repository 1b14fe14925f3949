//go:build !linux

package svidtest

import (
	"errors"
	"net"
)

// peerCred is Linux-only here: elsewhere no caller is attested, and only
// AnyCaller entries issue identities.
func peerCred(*net.UnixConn) (uid, gid, pid int, err error) {
	return 0, 0, 0, errors.New("peer credentials are read on Linux only")
}
