package lio

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// targetclid's protocol (targetcli-fb, targetclid.py and call_daemon in
// targetcli_shell.py): the client writes one request, the commands joined by
// '%'; the daemon reads it with a single recv(65535), runs the commands until
// the first one that fails, and answers with a native-endian int32 length
// followed by the output. The length counts Python characters, not bytes.
// The client then writes "-END@OF@DATA-" and the daemon closes the
// connection. The official non-interactive client prefixes "cd /%".
const (
	daemonEnd        = "-END@OF@DATA-"
	daemonMaxRequest = 65535
	daemonMaxReply   = 64 << 20
)

// request sends one command to targetclid and returns its output. sent
// reports whether the request was written (and so may have run).
func (d *Driver) request(ctx context.Context, cmd string) (out string, err error) {
	out, _, err = d.requestSent(ctx, cmd)
	return out, err
}

func (d *Driver) requestSent(ctx context.Context, cmd string) (out string, sent bool, err error) {
	ctx, cancel := context.WithTimeoutCause(ctx, d.cfg.Timeout,
		fmt.Errorf("targetclid took longer than %s to answer", d.cfg.Timeout))
	defer cancel()
	req := "cd /%" + cmd
	if d.cfg.OnCall != nil {
		start := time.Now()
		defer func() { d.cfg.OnCall(start, time.Now()) }()
	}
	if len(req) > daemonMaxRequest {
		return "", false, fmt.Errorf("targetclid request of %d bytes exceeds its %d-byte read", len(req), daemonMaxRequest)
	}
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "unix", d.cfg.Socket)
	if err != nil {
		return "", false, fmt.Errorf("connect to targetclid at %s: %w (start targetclid, or use targetcli mode batch)", d.cfg.Socket, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	fail := func(what string, err error) (string, bool, error) {
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		return "", sent, fmt.Errorf("targetclid at %s, %s for %q: %w", d.cfg.Socket, what, cmd, err)
	}

	d.requests.Add(1)
	if _, err := io.WriteString(conn, req); err != nil {
		return fail("sending the request", err)
	}
	sent = true
	var n int32
	if err := binary.Read(conn, binary.NativeEndian, &n); err != nil {
		return fail("reading the reply length", err)
	}
	if n < 0 || n > daemonMaxReply {
		return fail("reading the reply", fmt.Errorf("implausible reply length %d", n))
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(conn, buf); err != nil {
		return fail("reading the reply", err)
	}
	_, _ = io.WriteString(conn, daemonEnd)
	if !isASCII(buf) {
		// The length counted characters; read the rest of the bytes
		// until the daemon closes the connection.
		_ = conn.SetReadDeadline(time.Now().Add(time.Second))
		rest, err := io.ReadAll(conn)
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			return fail("reading the reply", err)
		}
		buf = append(buf, rest...)
	}
	return string(buf), true, nil
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

// runDaemon sends each command as its own request, so that each answer
// belongs to one command, then saveconfig.
func (d *Driver) runDaemon(ctx context.Context, lines []line) ([]cmdResult, bool, error) {
	said := make([]cmdResult, len(lines))
	for i, l := range lines {
		out, sent, err := d.requestSent(ctx, l.String())
		said[i] = cmdResult{reached: sent, msg: strings.TrimSpace(out)}
		if err != nil {
			return said, false, err
		}
	}
	if err := d.save(ctx); err != nil {
		return said, false, err
	}
	return said, true, nil
}
