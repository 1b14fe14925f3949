// Package deploy holds what an operator installs besides the binary, and
// the tests that keep it honest:
//
//   - sbps-marshal.service: the systemd unit (Type=notify, watchdog,
//     hardening that still lets targetcli write configfs and /etc/target),
//     checked with `systemd-analyze verify` and `systemd-analyze security`;
//   - sbps-marshal.env: the example /etc/sysconfig/sbps-marshal, every key
//     of config.Keys() commented out with its default and help. It is
//     generated: after changing a key in package config run
//     `go test ./deploy -run TestEnvFile -update`;
//   - nfpm.yaml: RPM and DEB packaging (`make rpm`, `make deb`), whose
//     file lists a test checks with `rpm -qpl` and `dpkg-deb -c`.
//
// Its only Go code is UnitEnvironment, for tests that run the agent as the
// unit does.
package deploy
