package svid

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// socketAddr turns a configured socket ("", a path, or a go-spiffe address
// such as "unix:///path") into the go-spiffe address and, for unix sockets,
// the filesystem path.
func socketAddr(socket string) (addr, path string) {
	if socket == "" {
		socket = DefaultSocket
	}
	if strings.Contains(socket, ":") && !strings.HasPrefix(socket, "/") {
		u, err := url.Parse(socket)
		if err == nil && u.Scheme == "unix" {
			return socket, u.Path
		}
		return socket, "" // tcp:// or malformed: go-spiffe reports it
	}
	if abs, err := filepath.Abs(socket); err == nil {
		socket = abs
	}
	return "unix://" + socket, socket
}

// checkSocket turns "no socket" into an error an operator can act on, before
// gRPC turns it into a less readable one.
func checkSocket(path string) error {
	if path == "" {
		return nil
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("SPIRE agent Workload API socket %s does not exist: is the SPIRE agent running? (set SBPS_MARSHAL_SPIRE_AGENT_SOCK_PATH if it listens elsewhere): %w", path, err)
	case err != nil:
		return fmt.Errorf("SPIRE agent Workload API socket %s: %w", path, err)
	case fi.Mode()&os.ModeSocket == 0:
		return fmt.Errorf("SPIRE agent Workload API socket %s is not a socket (mode %s): check SBPS_MARSHAL_SPIRE_AGENT_SOCK_PATH", path, fi.Mode())
	}
	return nil
}
