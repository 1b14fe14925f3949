package sim

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

// endOfData is what targetcli's client sends after reading a reply.
const endOfData = "-END@OF@DATA-"

// ServeDaemon serves the targetclid protocol on the unix socket at socket
// (Node.SocketPath when empty) until ctx ends, in this process. Like
// targetclid it builds its tree once at start (so it goes stale), serves one
// connection at a time, runs each request's %-separated commands in order,
// stops at the first failing one, and never saves on its own.
//
// A DieAfter fault stops the server: the connection is closed without a
// reply and ServeDaemon returns ErrDied. Another daemon of the same node
// makes it fail with "targetclid is already running...".
func (n *Node) ServeDaemon(ctx context.Context, socket string) error {
	if socket == "" {
		socket = n.SocketPath()
	}
	pid, err := flock(filepath.Join(n.dir, pidFile), false)
	if errors.Is(err, errLocked) {
		return errors.New("targetclid is already running...")
	}
	if err != nil {
		return fmt.Errorf("opening pidfile failed: %w", err)
	}
	defer pid.Close()

	sh, err := startShell(ctx, n, io.Discard, io.Discard)
	if err != nil {
		return err
	}
	os.Remove(socket)
	ln, err := net.Listen("unix", socket)
	if err != nil {
		return fmt.Errorf("targetclid simulator: listen on %s: %w", socket, err)
	}
	os.Chmod(socket, 0o600)
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer ln.Close()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("targetclid simulator: accept on %s: %w", socket, err)
		}
		stopConn := context.AfterFunc(ctx, func() { conn.Close() })
		err = sh.serveConn(conn)
		stopConn()
		conn.Close()
		if errors.Is(err, ErrDied) {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// serveConn is targetclid's client_thread: each read of up to 65535 bytes
// is one request (commands joined by '%'); the reply is a native-endian
// int32 length then the output; "-END@OF@DATA-" ends the connection.
func (sh *shell) serveConn(conn net.Conn) error {
	buf := make([]byte, 65535)
	for {
		n, err := conn.Read(buf)
		if n == 0 || err != nil && n == 0 {
			return nil
		}
		data := string(buf[:n])
		if strings.Contains(data, endOfData) {
			return nil
		}
		var out bytes.Buffer
		sh.out, sh.errw = &out, &out
		for _, cmd := range strings.Split(data, "%") {
			err := sh.runLine(strings.TrimRight(cmd, "\x00"))
			if errors.Is(err, ErrDied) {
				return err
			}
			if errors.Is(err, errExit) {
				continue
			}
			if err != nil {
				var ce *CommandError
				if !errors.As(err, &ce) && sh.ctx.Err() != nil {
					return nil
				}
				fmt.Fprintln(&out, err)
				break
			}
		}
		reply := make([]byte, 4, 4+out.Len())
		binary.NativeEndian.PutUint32(reply, uint32(int32(out.Len())))
		reply = append(reply, out.Bytes()...)
		if _, err := conn.Write(reply); err != nil {
			return nil
		}
	}
}

func mainDaemon(ctx context.Context, n *Node, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("targetclid", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", n.SocketPath(), "unix socket to serve (real targetclid: /var/run/targetclid.sock)")
	if err := fs.Parse(args); err != nil {
		return 255
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	err := n.ServeDaemon(ctx, *socket)
	switch {
	case errors.Is(err, ErrDied):
		die()
	case err != nil:
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintln(stderr, "Signal received, quiting gracefully!")
	return 0
}
