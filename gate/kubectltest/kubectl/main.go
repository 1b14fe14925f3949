// Command kubectl is the kubectl stand-in of gate/kubectltest: it finds its
// kubeconfig the way real kubectl does and answers node label queries from
// the fixture the kubeconfig points at. See package kubectltest.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/sbps-marshal/sbps-marshal/gate/kubectltest"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	out, err := kubectltest.Run(args, getenv)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprint(stdout, out)
	return 0
}
