// Command targetcli-sim is a drop-in targetcli (and, as targetclid or with
// "daemon", targetclid) that simulates Linux LIO for tests and the demo.
// It refuses to run unless TARGETCLI_SIM_DIR names a node directory made by
// lio/sim.NewNode. See package lio/sim.
package main

import (
	"os"

	"github.com/sbps-marshal/sbps-marshal/lio/sim"
)

func main() {
	os.Exit(sim.Main(os.Args, os.Stdin, os.Stdout, os.Stderr))
}
