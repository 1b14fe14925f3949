// Package csmworker holds one end-to-end test (issue 14's "Done when"):
// three CSM workers, one of them rebuilt, each the real `sbps-marshal run`
// started as systemd starts sbps-marshal.service (`env -i`, the unit's
// Environment=, an EnvironmentFile such as /etc/sysconfig/sbps-marshal
// that sets only what a CSM node's file sets), on one NATS with JetStream,
// labelled through a kubectl stand-in that needs the kubeconfig, SPIRE
// registered by the CLI's path, and a target.service stand-in that restores
// saveconfig.json into the simulated LIO. The package has no code of its
// own; see csmworker_test.go.
package csmworker
