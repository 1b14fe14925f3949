// Command sbps-marshal-uml boots User-Mode Linux with the real LIO target
// and runs one command inside it (package uml), for developers:
//
//	sbps-marshal-uml -- targetcli ls
//	sbps-marshal-uml -timeout 2m -env FOO=bar -- sh -c 'targetcli /iscsi create iqn.2023-06.csm.iscsi:x && targetcli ls'
//
// The guest sees the host's / read-only and /tmp read-write. The command's
// output streams to stdout; its exit status is this program's.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sbps-marshal/sbps-marshal/uml"
)

type envFlags []string

func (e *envFlags) String() string     { return strings.Join(*e, " ") }
func (e *envFlags) Set(v string) error { *e = append(*e, v); return nil }

func main() {
	var env envFlags
	timeout := flag.Duration("timeout", 10*time.Minute, "kill the guest after this long")
	mem := flag.String("mem", "1G", "guest memory")
	console := flag.Bool("console", false, "print the guest kernel's console after the run")
	keep := flag.Bool("keep", false, "keep the scratch directory under /tmp")
	flag.Var(&env, "env", "KEY=value for the command (repeatable)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: %s [flags] -- command [args...]\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := uml.Run(ctx, uml.Config{Timeout: *timeout, Mem: *mem, Env: env, Keep: *keep, Output: os.Stdout}, flag.Args()...)
	if res != nil && *console {
		os.Stderr.Write(res.Console)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(125)
	}
	fmt.Fprintf(os.Stderr, "sbps-marshal-uml: exit %d (boot %v, total %v)\n", res.ExitCode, res.Boot.Round(time.Millisecond), res.Elapsed.Round(time.Millisecond))
	os.Exit(res.ExitCode)
}
