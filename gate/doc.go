// Package gate decides whether this node may serve boot images at all.
//
// The old agent gated on the Kubernetes node label iscsi=sbps: on a node
// without it, it disabled tpg1 (`targetcli /iscsi/<iqn>/tpg1 disable`) and
// projected nothing; on a labelled node the TPG was enabled. This package
// keeps that decision and makes its source pluggable (SBPS_MARSHAL_GATE):
//
//	kubectl       open iff `kubectl get node <node> -o jsonpath={.metadata.labels.iscsi}
//	              --kubeconfig=<SBPS_MARSHAL_KUBECONFIG>` prints "sbps" (the default,
//	              as before; the kubeconfig defaults to /etc/kubernetes/admin.conf,
//	              what the old agent passed: a system service has no HOME, so
//	              kubectl would find no ~/.kube/config and try localhost:8080)
//	file:<path>   open iff <path> exists (any file type, content ignored);
//	              closed when it is missing
//	none          always open
//
// The package only answers the question; acting on it (disabling or
// enabling the TPG through lio, skipping passes) is the caller's job.
//
// Open returns (open, why, err). why is a sentence for logs and `systemctl
// status` (e.g. "node ncn-w001 has no iscsi label"). When err is not nil the
// gate could not be read (kubectl failed, timed out, or the file could not be
// checked) and open is meaningless: the caller keeps the state it has, so a
// Kubernetes API outage never takes LUNs away from booting nodes.
//
// Everything that reaches a command line is checked first: the node name must
// be an RFC 1123 DNS subdomain (what Kubernetes accepts as a node name),
// kubectl must be an absolute path of plain characters naming an executable
// file, and the kubeconfig an absolute path of plain characters naming a
// regular file (checked at every call: a missing one is an error naming it). kubectl runs in its own process group with a timeout; on timeout the
// whole group is killed.
//
// Gates hold no mutable state and are safe for concurrent use.
package gate
