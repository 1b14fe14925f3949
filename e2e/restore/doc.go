// Package restore holds the real-kernel tests of "LIO not restored" (issue
// 14 point 3): in User-Mode Linux with real LIO, targetcli-fb and Debian's
// targetctl (rtslib-fb), a live state emptied with `targetcli clearconfig
// confirm=True` while saveconfig.json keeps the node's target is never saved
// over the file, and a target.service stand-in (systemctltest) whose start
// runs `targetctl restore <file>` brings the target and its LUNs back. Run
// with `go test -tags kernel ./e2e/restore/` (make test-kernel).
package restore
