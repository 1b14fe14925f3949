// Package initiator tests the agent end to end from a compute node's point
// of view, on the real kernel: its tests (build tag kernel, `make
// test-kernel`) run inside User-Mode Linux through uml.TestMain, with the
// real LIO target, real targetcli-fb and a real open-iscsi initiator on the
// same guest, talking over loopback.
//
// # What runs where
//
// On the host, TestMain builds the sbps-marshal binary into a directory
// under /tmp (the only host folder the guest shares) and boots the guest
// once for the package. Compiling inside the guest would take minutes.
//
// In the guest, each test starts what a CSM worker has around the agent,
// in the test process: an embedded NATS with JetStream, versitygw (real
// S3, posix backend) publishing bucket notifications to it, an IMS server
// built to IMS's OpenAPI spec served over TLS and authenticating with
// JWT-SVIDs, and a SPIFFE Workload API. It provisions the node's target
// the way CSM's playbook does (`/iscsi create
// iqn.2023-06.csm.iscsi:ncn-w001`, the default portal replaced by
// 127.0.0.1:3260 standing in for the NMN address, tpg1 `set attribute
// demo_mode_write_protect=1 prod_mode_write_protect=1
// generate_node_acls=1`, saveconfig) and runs the real `sbps-marshal run`
// with real targetcli.
//
// # Configuration, and where it differs from a CSM worker
//
//   - SQUASHFS_S3FS_MOUNT is versitygw's posix bucket directory, in which
//     every object is a plain file: the bytes LIO serves are the bytes S3
//     stores. It lives on an ext4 file system in guest memory (a loop
//     device): versitygw keeps object metadata in user xattrs, which
//     hostfs and the 6.1 kernel's tmpfs lack. CSM mounts the bucket with
//     s3fs. The fuse module loads in the guest and /dev/fuse exists, but
//     s3fs was not tried there: rig.MountS3FS mounts read-only, and the
//     kernel opens a fileio backing file O_RDWR, so over that mount every
//     create would fail with EROFS (REALLIO.md, difference 3). The s3fs
//     path is not covered here.
//   - LIO_SAVE_FILE is /etc/rtslib-fb-target/saveconfig.json, Debian's
//     rtslib default, so that the agent's file and the one a plain
//     `saveconfig` (the playbook's, the old agent's) writes are the same
//     file, as /etc/target/saveconfig.json is on SLES.
//   - GATE=none (there is no Kubernetes); NODE_NAME=ncn-w001 (the guest
//     has no host name); the Workload API stand-in, which attests the
//     calling binary as SPIRE does, registers the agent binary's own path
//     (CSM registers only /usr/bin/sbps-marshal-spire-agent, the old
//     agent's CLI hard link; SPIFFE_SOURCE=cli is not covered here);
//     CA_FILE trusts the IMS server's self-signed
//     certificate; RESYNC_INTERVAL=1h so that changes travel as events;
//     NATS_STREAM=SBPS (JetStream, at-least-once). Everything else is the
//     default: TARGETCLI_MODE=batch, LUN_REGISTRY=local, /usr/bin/targetcli.
//
// # The initiator's view
//
// There is no udev in the guest, so /dev/disk/by-id is empty. A disk is
// identified by asking the target: scsi_id (INQUIRY VPD page 0x83) gives
// the WWID multipath would group it by, "36001405" plus the first 25 hex
// digits of the backstore's wwn. The kernel's own copy in
// /sys/block/sdX/device/wwid is what it read at attach time; where the two
// differ, the LUN number now serves something else under a live session.
//
// The Linux SCSI layer does not remove a disk whose LUN went away: after
// `iscsiadm -m session -R` the sdX stays, and LIO answers LUN 0, once
// deleted, with its virtual LUN 0 (32 KiB of zeros, no WWID of ours). So an
// image has left the initiator's view when no disk's fresh INQUIRY names
// its WWID any more.
//
// # A worker rebuilt under a live session (rebuild_kernel_test.go)
//
// Issue 14's rebuild safety (the CASMTRIAGE-8984/8999 incident: a LUN
// number that pointed at one image now pointing at another). With
// LUN_REGISTRY=local, images A, B, C are projected at LUNs 0, 1, 2 and read
// by a logged-in initiator; the worker is rebuilt (agent stopped, every
// backstore deleted with targetcli while the target, portal and tpg1's
// attributes stay, STATE_DIR wiped, A deleted from S3), the agent starts
// again and numbers B and C from 0, then A comes back. The test checks
// that precondition, that the running agent reset tpg1's sessions once
// (log and sbps_marshal_session_resets_total), and that within 3 minutes
// every disk is running, the kernel's WWID equals the target's, and it
// reads exactly the bytes of the image with that WWID (BLKFLSBUF first).
// The initiator side does only what a compute node does by itself: iscsid
// reconnects the dropped session; the test never logs out or in, and runs
// `iscsiadm -m session -R` about once a second in place of the rescans
// udev and multipathd do on the target's UNIT ATTENTION (the guest has
// neither). Without the reset the test then shows what the initiator sees
// and tries the reset by hand, for the report.
//
// Tests share one guest and run one after another; each starts from an
// empty LIO, no iSCSI session and no node records, and leaves it so.
package initiator
