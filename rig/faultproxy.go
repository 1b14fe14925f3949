package rig

import (
	"context"
	"fmt"
	"html"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Fault is what a FaultProxy does to each request while it is set.
type Fault int

// The faults a FaultProxy can inject. The zero value passes every request
// through unchanged.
const (
	// FaultNone passes the request to the server and its answer back.
	FaultNone Fault = iota
	// Fault500 answers 500 InternalError with S3's XML error body.
	Fault500
	// Fault503 answers 503 ServiceUnavailable with S3's XML error body, as
	// Ceph RGW does when it sheds load.
	Fault503
	// FaultSlow holds the request for the proxy's delay (SetSlow) before
	// passing it on; a client whose timeout is shorter gives up first.
	FaultSlow
	// FaultReset accepts the request and resets the connection (TCP RST,
	// SO_LINGER 0) without answering.
	FaultReset
)

// String names the fault as the tests and docs/RELIABILITY.md do.
func (f Fault) String() string {
	switch f {
	case FaultNone:
		return "pass through"
	case Fault500:
		return "500 InternalError"
	case Fault503:
		return "503 ServiceUnavailable"
	case FaultSlow:
		return "slow"
	case FaultReset:
		return "connection reset"
	}
	return fmt.Sprintf("Fault(%d)", int(f))
}

// FaultStats counts what a FaultProxy did since it started.
type FaultStats struct {
	Requests int64 // requests received
	Faulted  int64 // requests a fault was applied to (answered, delayed or reset)
}

// FaultProxy is a reverse proxy on loopback in front of one HTTP server
// (the rig's versitygw) whose fault can be switched at run time, so tests
// can show what a client does when S3 answers 500 or 503, answers late, or
// resets connections. It keeps the client's Host header, so SigV4
// signatures made for the proxy's address verify at the server.
//
// Its methods are safe for concurrent use. A request takes the fault set
// when it arrives; a slow request already waiting is released by Set,
// SetSlow or Close.
type FaultProxy struct {
	target *url.URL
	ln     net.Listener
	srv    *http.Server
	rp     *httputil.ReverseProxy
	tr     *http.Transport // its own, so Close can drop the upstream keep-alive connections

	mu      sync.Mutex
	fault   Fault
	delay   time.Duration
	release chan struct{} // closed when the fault changes: slow requests stop waiting

	requests atomic.Int64
	faulted  atomic.Int64
}

// StartFaultProxy starts a proxy on a free loopback port that passes
// everything to target (a base URL such as S3.Endpoint()).
func StartFaultProxy(target string) (*FaultProxy, error) {
	u, err := url.Parse(target)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("rig: fault proxy target %q is not a base URL such as http://127.0.0.1:7070", target)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("rig: fault proxy: listen on loopback: %w", err)
	}
	p := &FaultProxy{target: u, ln: ln, release: make(chan struct{})}
	p.tr = http.DefaultTransport.(*http.Transport).Clone()
	p.rp = &httputil.ReverseProxy{
		Transport: p.tr,
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.Host = r.In.Host // the client signed this host
		},
		ErrorLog: log.New(io.Discard, "", 0), // a stopped server is a test's own doing
	}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go p.srv.Serve(ln)
	return p, nil
}

// URL is the proxy's base URL (http://127.0.0.1:port).
func (p *FaultProxy) URL() string { return "http://" + p.ln.Addr().String() }

// Host is the proxy's host:port, as S3_HOST takes it.
func (p *FaultProxy) Host() string { return p.ln.Addr().String() }

// Set switches the fault for requests from now on; FaultNone clears it.
// Slow requests still waiting are released and passed on.
func (p *FaultProxy) Set(f Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fault = f
	close(p.release)
	p.release = make(chan struct{})
}

// SetSlow makes every request from now on wait d before it is passed on
// (FaultSlow).
func (p *FaultProxy) SetSlow(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
	p.Set(FaultSlow)
}

// Fault returns the fault set now.
func (p *FaultProxy) Fault() Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fault
}

// Stats returns the proxy's counters.
func (p *FaultProxy) Stats() FaultStats {
	return FaultStats{Requests: p.requests.Load(), Faulted: p.faulted.Load()}
}

// Close stops the proxy and drops its connections, the clients' and its own
// to the server: a versitygw stopped after the proxy must not wait for an
// idle keep-alive connection of the proxy's (its graceful shutdown does).
// Requests in flight are given a moment to finish, then cut.
func (p *FaultProxy) Close() error {
	p.Set(FaultNone)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := p.srv.Shutdown(ctx)
	if err != nil {
		err = p.srv.Close()
	}
	p.tr.CloseIdleConnections()
	return err
}

// ServeHTTP applies the current fault to one request.
func (p *FaultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.requests.Add(1)
	p.mu.Lock()
	fault, delay, release := p.fault, p.delay, p.release
	p.mu.Unlock()
	switch fault {
	case Fault500:
		p.faulted.Add(1)
		s3Error(w, r, http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again.")
		return
	case Fault503:
		p.faulted.Add(1)
		s3Error(w, r, http.StatusServiceUnavailable, "ServiceUnavailable", "Please reduce your request rate.")
		return
	case FaultSlow:
		p.faulted.Add(1)
		select {
		case <-time.After(delay):
		case <-release:
		case <-r.Context().Done():
			return
		}
	case FaultReset:
		p.faulted.Add(1)
		reset(w)
		return
	}
	p.rp.ServeHTTP(w, r)
}

// s3Error writes an S3 REST error: the status, and (except for HEAD) the
// XML body S3 servers send, so the client's error decoding is exercised.
func s3Error(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("x-amz-request-id", "faultproxy")
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+`<Error><Code>%s</Code><Message>%s</Message><Resource>%s</Resource><RequestId>faultproxy</RequestId></Error>`,
		code, html.EscapeString(msg), html.EscapeString(r.URL.Path))
}

// reset closes the request's connection with a TCP RST.
func reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}
