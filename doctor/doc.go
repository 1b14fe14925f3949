// Package doctor checks every dependency of the agent on this node and says,
// for each one that is not right, what to run or change: `sbps-marshal
// doctor`. Each row is OK, WARN (the agent runs, but something is off or
// was not checked) or FAIL (the agent cannot do its job until it is fixed).
//
// The checks go through the agent's own code wherever it has one (the
// configuration loader, the node gate, the systemctl and targetcli
// drivers, the saveconfig.json guard, the S3 and IMS clients, the SPIFFE
// sources, the NATS authentication), so that doctor and the agent cannot
// disagree about the node.
//
// Concurrency and ordering: the checks run concurrently, in groups whose
// rows depend on each other (kubectl then the label; targetcli then LIO's
// state; the SVID then IMS; NATS then its stream and registry bucket) and
// run in order within a group. Every step is bounded by Options.Timeout,
// even one blocked in a system call (a hung s3fs mount): its row then says
// it did not answer. Run returns the rows in the fixed order of Rows,
// whatever order the checks finished in. Nothing is changed on the node,
// except that checking LIO's live state saves it to the agent's staging
// file beside saveconfig.json and removes it again, as `sbps-marshal
// status` does.
package doctor
