// Package conformance holds the test that keeps lio/sim honest: one table
// of every command form the lio driver can emit (fileio create and delete,
// luns create with and without lun= and delete, tpg enable and disable,
// saveconfig to a file) and of the forms CSM provisions a node with
// (/iscsi create, tpg set attribute), with the failure cases the driver has
// to read (duplicate name, the same file twice, a missing file, a LUN that
// exists, the stale-tree "already used by a sibling" crash, a backing file
// on a read-only mount, lun=abc, a deleted backing file, a save file that
// cannot be written).
//
// Each row runs in one-shot, batch and targetclid mode, once against real
// targetcli-fb 2.1.53 on the real kernel LIO in User-Mode Linux (package
// uml) and once against the simulator (cmd/targetcli-sim, built on the
// host), each time from a freshly cleared LIO. Rows with driver operations
// go through lio.Driver itself, so the driver's reading of targetcli's
// messages is what is tested; a recorder between the driver and targetcli
// keeps each process's exit status. The test then requires, per row and
// mode, that real and simulated targetcli agree on exit statuses, on the
// message lines, on the driver's outcomes and on the resulting
// saveconfig.json read through lio.Parse, and that both meet the row's
// expectations. Normalisation is limited to the documented deliberate
// differences of lio/sim (a traceback's frames, random LUN aliases, the
// per-run TARGETCLI_HOME and node paths).
//
// The tests carry the build tag kernel and run inside the guest through
// uml.TestMain:
//
//	go test -tags kernel -count=1 ./lio/conformance/
//
// Rows run one after another (they share the guest's one LIO).
package conformance
