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
//   - nfpm.yaml and scripts/: RPM and DEB packaging (`make rpm`, `make
//     deb`), whose file lists a test checks with `rpm -qpl` and `dpkg-deb
//     -c`, rpmlint and lintian; the upgrade from the Python agent's package
//     and the rollback are tested in an `rpm --root` (upgrade_test.go);
//   - bridges/: the bridges' units, env file and Kubernetes manifests, and
//     the RGW commands (bridges_test.go);
//   - monitoring/: alert rules, dashboard and scrape objects, checked with
//     promtool and against a real /metrics (monitoring_test.go).
//
// Its only Go code is UnitEnvironment, for tests that run the agent as the
// unit does.
package deploy
