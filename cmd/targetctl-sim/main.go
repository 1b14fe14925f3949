// Command targetctl-sim is the simulator's stand-in for Debian's
// `targetctl` (rtslib-fb), which target.service runs: `restore [FILE]`
// replaces the simulated node's live state with FILE (default: the node's
// saveconfig.json), `clear` empties it. The node is TARGETCLI_SIM_DIR, a
// directory made by lio/sim.NewNode.
package main

import (
	"fmt"
	"os"

	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/lio/sim"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	dir := os.Getenv(sim.EnvDir)
	if dir == "" {
		fmt.Fprintf(os.Stderr, "targetctl-sim: %s is not set; point it at a node directory made by sim.NewNode\n", sim.EnvDir)
		return 2
	}
	n, err := sim.Open(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "targetctl-sim:", err)
		return 1
	}
	switch {
	case len(args) >= 1 && len(args) <= 2 && args[0] == "restore":
		file := n.SaveFile()
		if len(args) == 2 {
			file = args[1]
		}
		c, err := lio.Load(file)
		if err == nil {
			err = n.Restore(c)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "targetctl-sim: restore from %s: %v\n", file, err)
			return 1
		}
		return 0
	case len(args) == 1 && args[0] == "clear":
		if err := n.Clear(); err != nil {
			fmt.Fprintln(os.Stderr, "targetctl-sim: clear:", err)
			return 1
		}
		return 0
	}
	fmt.Fprintln(os.Stderr, "usage: targetctl-sim restore [FILE] | clear")
	return 2
}
