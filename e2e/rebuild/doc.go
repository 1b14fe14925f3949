// Package rebuild tests, on the real kernel, issue 14's rebuild safety: an
// open-iscsi initiator logged in through a worker whose LUN map changes
// under its live session (the CASMTRIAGE-8984/8999 incident: a LUN number
// that pointed at one image now pointing at another) must end with every
// path active and reading the image its WWID names, without anyone logging
// it out and in.
//
// The tests (build tag kernel) run inside User-Mode Linux through
// uml.TestMain, with real LIO, targetcli-fb and open-iscsi on one guest
// over loopback; the host builds `sbps-marshal run` in TestMain. The stack
// around the agent (NATS, versitygw, the IMS and SPIFFE stand-ins) and the
// initiator's view (scsi_id for the WWID the target gives now,
// /sys/block/sdX/device/wwid for the one the kernel holds) are those of
// e2e/initiator, whose package doc describes them; harness_kernel_test.go
// is a trimmed copy of its harness.
//
// # The scenario
//
// LUN_REGISTRY=local (no fleet registry: the case where a rebuilt worker
// numbers its LUNs afresh). Images A, B, C are uploaded one after another
// and projected at LUNs 0, 1, 2; the initiator discovers, logs in once and
// reads each by WWID. The worker is then rebuilt: the agent is stopped,
// every backstore is deleted with targetcli (the target, its portal and
// tpg1's attributes stay, as target.service restores them on a reinstalled
// node), saveconfig, STATE_DIR is wiped, and A is deleted from S3. The
// agent starts again, projects B and C from LUN 0 and, having no record of
// the map sessions saw, resets tpg1's sessions (disable+enable) once; A is
// then uploaded again and gets the next free number. The test checks the
// precondition that some image's number changed, that the agent logged its
// reset once and counted it in sbps_marshal_session_resets_total.
//
// # What the initiator side does, and why
//
// Nothing but what a compute node does by itself: iscsid (its own process
// group, the test's child) reconnects the session the target dropped;
// the test never runs `iscsiadm -m node -l/-u`. It runs `iscsiadm -m
// session -R` about once a second while it waits: on a compute node udev
// and multipathd rescan devices on the events the target's UNIT ATTENTION
// (REPORTED LUNS DATA HAS CHANGED) and the re-login cause; the guest has
// neither udev nor multipathd. The rescan re-reads each existing disk's
// capacity and VPD pages and adds LUNs it lacks; it does not remove disks.
//
// It then requires, within 3 minutes of the rebuilt agent's start: every
// disk the target gives a WWID for is in state running, the kernel's WWID
// equals the target's, and the disk reads exactly the bytes of the image
// with that WWID (BLKFLSBUF first, so that no page-cache copy of the old
// LUN hides the new one); and every image is read that way on some disk.
//
// If the rebuilt agent logs no reset within 30 s of its first pass, the
// test fails; it then logs what the initiator sees with no reset (20 s of
// rescans) and disables and enables tpg1 by hand with targetcli, as
// agent/sessions.go's reset does, and applies the check above to that.
// If that fails after the disable+enable, the test fails and then,
// for the report only, restarts LIO as the old agent's target.service
// restart does (targetctl save, clear, restore) and logs what the
// initiator sees after that too: device list, sysfs state, WWIDs, session
// state and dmesg.
package rebuild
