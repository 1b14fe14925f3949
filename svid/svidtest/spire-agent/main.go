// Command spire-agent is the SPIRE agent command line stand-in of package
// svidtest: `spire-agent api fetch jwt|x509 ...` against a Workload API
// socket, as the real CLI. Built and hard-linked as
// sbps-marshal-spire-agent by svidtest.BuildCLI.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/sbps-marshal/sbps-marshal/svid/svidtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := svidtest.RunCLI(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
