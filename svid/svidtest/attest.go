package svidtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/grpc/peer"
)

// Entry is a registration entry: the SPIFFE ID SPIRE issues to a workload
// whose attested selectors include all of Selectors. Selectors take SPIRE's
// unix workload attestor's form: "unix:uid:<n>", "unix:gid:<n>",
// "unix:path:<binary>".
type Entry struct {
	SPIFFEID  string
	Selectors []string
	// AnyCaller issues SPIFFEID to every caller, attested or not. SPIRE has
	// no such entry; it is for tests that do not care who calls.
	AnyCaller bool
}

// CSMEntry is CSM's registration of the agent (cray-spire's
// cray-spire-workloads): spiffe://shasta/ncn/workload/sbps-marshal for a
// process of uid 0 and gid 0 whose binary is path (on a worker,
// /usr/bin/sbps-marshal-spire-agent, a hard link of spire-agent).
func CSMEntry(path string) Entry {
	return Entry{SPIFFEID: DefaultID, Selectors: []string{"unix:uid:0", "unix:gid:0", "unix:path:" + path}}
}

// ProcessEntry registers id for the calling process's own binary, user and
// group: what a Server registers by default, so that a test's own
// go-spiffe client gets its identity and a program it starts does not.
func ProcessEntry(id string) Entry {
	return Entry{SPIFFEID: id, Selectors: processSelectors()}
}

// PathEntry registers id for a process of this process's user and group
// whose binary is path.
func PathEntry(id, path string) Entry {
	return Entry{SPIFFEID: id, Selectors: []string{
		"unix:uid:" + strconv.Itoa(os.Getuid()), "unix:gid:" + strconv.Itoa(os.Getgid()), "unix:path:" + path}}
}

func processSelectors() []string {
	sel := []string{"unix:uid:" + strconv.Itoa(os.Getuid()), "unix:gid:" + strconv.Itoa(os.Getgid())}
	if exe, err := os.Executable(); err == nil {
		sel = append(sel, "unix:path:"+exe)
	}
	return sel
}

func checkEntries(entries []Entry) error {
	for _, e := range entries {
		if e.AnyCaller == (len(e.Selectors) > 0) {
			return fmt.Errorf("entry for %s: give either selectors or AnyCaller", e.SPIFFEID)
		}
		for _, sel := range e.Selectors {
			kind, _, _ := strings.Cut(strings.TrimPrefix(sel, "unix:"), ":")
			if !strings.HasPrefix(sel, "unix:") || !slices.Contains([]string{"uid", "gid", "path"}, kind) {
				return fmt.Errorf("entry for %s: selector %q: want unix:uid:<n>, unix:gid:<n> or unix:path:<binary>", e.SPIFFEID, sel)
			}
		}
	}
	return nil
}

// caller is what the server knows of the process at the other end of a
// connection: its credentials from SO_PEERCRED when the connection was
// made, or why they are unknown.
type caller struct {
	net.Addr
	uid, gid, pid int
	err           error
}

// attestListener records each connection's peer credentials in its remote
// address, which gRPC hands to the handlers as the peer's address.
type attestListener struct{ net.Listener }

func (l attestListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	cl := &caller{Addr: c.RemoteAddr()}
	if uc, ok := c.(*net.UnixConn); ok {
		cl.uid, cl.gid, cl.pid, cl.err = peerCred(uc)
	} else {
		cl.err = fmt.Errorf("not a unix socket connection (%T)", c)
	}
	return attestedConn{Conn: c, caller: cl}, nil
}

type attestedConn struct {
	net.Conn
	caller *caller
}

func (c attestedConn) RemoteAddr() net.Addr { return c.caller }

// attest returns the caller's selectors as SPIRE's unix workload attestor
// (with discover_workload_path) finds them at the time of the call: uid and
// gid of the peer, and the binary its pid runs, from /proc/<pid>/exe.
func attest(ctx context.Context) ([]string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, fmt.Errorf("no peer in the call's context")
	}
	cl, ok := p.Addr.(*caller)
	if !ok {
		return nil, fmt.Errorf("peer address %T carries no credentials", p.Addr)
	}
	if cl.err != nil {
		return nil, fmt.Errorf("peer credentials: %w", cl.err)
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", cl.pid))
	if err != nil {
		return nil, fmt.Errorf("binary of pid %d: %w", cl.pid, err)
	}
	return []string{"unix:uid:" + strconv.Itoa(cl.uid), "unix:gid:" + strconv.Itoa(cl.gid), "unix:path:" + exe}, nil
}

// identities are the SPIFFE IDs of the entries the selectors satisfy, in
// registration order, each once.
func identities(entries []Entry, selectors []string) []string {
	var ids []string
	for _, e := range entries {
		match := e.AnyCaller
		if !match {
			match = true
			for _, s := range e.Selectors {
				if !slices.Contains(selectors, s) {
					match = false
					break
				}
			}
		}
		if match && !slices.Contains(ids, e.SPIFFEID) {
			ids = append(ids, e.SPIFFEID)
		}
	}
	return ids
}
