// Package lio holds the tests that drive the real Linux LIO with the
// agent's own lio.Driver (and, where a fault shows only there, the agent
// itself) inside User-Mode Linux (package uml): real targetcli-fb 2.1.53,
// rtslib-fb and targetclid on the 6.1 kernel's configfs. Its tests are
// built with the tag kernel and run with `make test-kernel`; each test
// provisions the node's target the way CSM's playbook does
// (`/iscsi create iqn.2023-06.csm.iscsi:<host>`, tpg1 with
// demo_mode_write_protect=1 prod_mode_write_protect=1 generate_node_acls=1)
// from an empty LIO.
//
// The tests in one run share one guest and so one kernel LIO: they run
// one after another (no t.Parallel) and each starts by clearing LIO.
//
// BenchmarkModes measures one apply of 1 and of 50 changes over 100 and
// 1,000 LUNs already present, in each targetcli mode, and the agent's read
// of the real saveconfig.json; `make bench-kernel` runs it and writes
// docs/BENCHMARKS-KERNEL.md:
//
//	go test -tags kernel -run '^$' -bench Modes -benchtime 1x -timeout 60m ./e2e/lio/ -modes.luns=100,1000
package lio
