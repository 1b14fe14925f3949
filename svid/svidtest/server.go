package svidtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// DefaultID is the SPIFFE ID a Server gives its workload unless told
// otherwise: the node-wide sbps-marshal workload ID CSM registers.
const DefaultID = "spiffe://shasta/ncn/workload/sbps-marshal"

// SocketName is the file name of the Workload API socket inside the
// directory given to Start.
const SocketName = "agent.sock"

// maxSocketPath is the longest unix socket path every platform accepts
// (sockaddr_un.sun_path is 104 bytes on BSDs, 108 on Linux, NUL included).
const maxSocketPath = 103

// Options configures a Server. The zero value is usable.
type Options struct {
	// TrustDomain of every SVID and bundle. Defaults to "shasta".
	TrustDomain string
	// Entries are the registration entries: a caller gets the SPIFFE IDs
	// of the entries its attested selectors satisfy (see Entry), in this
	// order; one that satisfies none is refused with PermissionDenied "no
	// identity issued", as SPIRE refuses it. Defaults to ProcessEntry(id)
	// for each of IDs: the process that starts the server, and no other.
	Entries []Entry
	// IDs, when Entries is empty, are the SPIFFE IDs registered for the
	// process that starts the server, in the order the Workload API
	// returns them. Defaults to []string{DefaultID}.
	IDs []string
	// JWTTTL is the lifetime of each JWT-SVID. Defaults to 5 minutes.
	JWTTTL time.Duration
	// X509ID is the SPIFFE ID of the X.509-SVID. Defaults to DefaultID.
	X509ID string
	// X509TTL is the lifetime of each X.509-SVID. Defaults to 1 hour.
	X509TTL time.Duration
	// Now is the server's clock for iat/exp and for Verifier. Defaults to
	// time.Now. go-spiffe clients check exp against the real time, so keep
	// it close to real time.
	Now func() time.Time
	// Logger receives one line per rejected call. Defaults to discarding.
	Logger *slog.Logger
}

// Counts are the calls a Server has answered, by RPC. Rejected counts the
// calls refused for lacking the Workload API security header, Denied those
// refused because no registration entry matched the caller.
type Counts struct {
	FetchJWTSVID     int
	FetchJWTBundles  int
	ValidateJWTSVID  int
	FetchX509SVID    int
	FetchX509Bundles int
	Rejected         int
	Denied           int
}

// Server is a running fake SPIRE agent Workload API. Create it with Start or
// New.
type Server struct {
	dir    string
	socket string
	td     spiffeid.TrustDomain
	now    func() time.Time
	log    *slog.Logger

	x509ID  spiffeid.ID
	x509TTL time.Duration

	jwtKey *ecdsa.PrivateKey
	kid    string
	signer jose.Signer

	caKey  *ecdsa.PrivateKey
	caCert *x509.Certificate

	// mu guards everything below.
	mu      sync.Mutex
	entries []Entry
	jwtTTL  time.Duration
	counts  Counts
	grpc    *grpc.Server
	served  chan struct{} // closed when the current Serve returns
	closed  bool
	// x509 is the workload's X.509-SVID now; x509Rotated is closed and
	// replaced when RotateX509 issues a new one, so that open
	// FetchX509SVID streams send it.
	x509        issuedSVID
	x509Rotated chan struct{}
}

// Start creates the keys and CA and serves the Workload API on
// dir/agent.sock. dir must exist. Close the Server when done.
func Start(dir string, opts Options) (*Server, error) {
	s, err := newServer(dir, opts)
	if err != nil {
		return nil, err
	}
	if err := s.listen(); err != nil {
		return nil, err
	}
	return s, nil
}

// New starts a Server in a fresh temporary directory and closes it when the
// test ends. It fails the test if the server cannot start.
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	dir := t.TempDir()
	if len(filepath.Join(dir, SocketName)) > maxSocketPath {
		// Long test names make long temp dirs; unix sockets need short paths.
		var err error
		dir, err = os.MkdirTemp("", "spire")
		if err != nil {
			t.Fatalf("svidtest: make socket dir: %v", err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	s, err := Start(dir, opts)
	if err != nil {
		t.Fatalf("svidtest: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

func newServer(dir string, opts Options) (*Server, error) {
	socket := filepath.Join(dir, SocketName)
	if !filepath.IsAbs(socket) {
		abs, err := filepath.Abs(socket)
		if err != nil {
			return nil, fmt.Errorf("resolve socket path %s: %w", socket, err)
		}
		socket = abs
	}
	if len(socket) > maxSocketPath {
		return nil, fmt.Errorf("socket path %s is %d bytes, unix sockets allow %d: use a shorter directory (os.MkdirTemp(\"\", \"spire\"))", socket, len(socket), maxSocketPath)
	}
	tdName := opts.TrustDomain
	if tdName == "" {
		tdName = "shasta"
	}
	td, err := spiffeid.TrustDomainFromString(tdName)
	if err != nil {
		return nil, fmt.Errorf("trust domain %q: %w", tdName, err)
	}
	entries := slices.Clone(opts.Entries)
	if len(entries) == 0 {
		ids := opts.IDs
		if len(ids) == 0 {
			ids = []string{DefaultID}
		}
		for _, id := range ids {
			entries = append(entries, ProcessEntry(id))
		}
	}
	if err := checkEntries(entries); err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(entries))
	for _, e := range entries {
		ids = append(ids, e.SPIFFEID)
	}
	if err := checkIDs(td, ids); err != nil {
		return nil, err
	}
	x509IDStr := opts.X509ID
	if x509IDStr == "" {
		x509IDStr = DefaultID
	}
	x509ID, err := spiffeid.FromString(x509IDStr)
	if err != nil {
		return nil, fmt.Errorf("X509ID %q: %w", x509IDStr, err)
	}
	s := &Server{
		dir:     dir,
		socket:  socket,
		td:      td,
		now:     opts.Now,
		log:     opts.Logger,
		x509ID:  x509ID,
		x509TTL: opts.X509TTL,
		entries: entries,
		jwtTTL:  opts.JWTTTL,
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.x509TTL <= 0 {
		s.x509TTL = time.Hour
	}
	if s.jwtTTL <= 0 {
		s.jwtTTL = 5 * time.Minute
	}
	if err := s.initJWT(); err != nil {
		return nil, err
	}
	if err := s.initCA(); err != nil {
		return nil, err
	}
	if s.x509, err = s.issueSVID(); err != nil {
		return nil, err
	}
	s.x509Rotated = make(chan struct{})
	return s, nil
}

func checkIDs(td spiffeid.TrustDomain, ids []string) error {
	for _, id := range ids {
		parsed, err := spiffeid.FromString(id)
		if err != nil {
			return fmt.Errorf("SPIFFE ID %q: %w", id, err)
		}
		if !parsed.MemberOf(td) {
			return fmt.Errorf("SPIFFE ID %q is not in trust domain %q", id, td.Name())
		}
	}
	return nil
}

func (s *Server) listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("svidtest: server is closed")
	}
	if s.grpc != nil {
		return nil
	}
	// A stale socket file from a killed process would make Listen fail.
	if err := os.Remove(s.socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket %s: %w", s.socket, err)
	}
	lis, err := net.Listen("unix", s.socket)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.socket, err)
	}
	g := grpc.NewServer(
		grpc.UnaryInterceptor(s.unaryGuard),
		grpc.StreamInterceptor(s.streamGuard),
	)
	workload.RegisterSpiffeWorkloadAPIServer(g, &api{s: s})
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = g.Serve(attestListener{lis}) // returns when Stop closes the listener
	}()
	s.grpc, s.served = g, served
	return nil
}

// SocketPath is the absolute path of the Workload API unix socket.
func (s *Server) SocketPath() string { return s.socket }

// Addr is the socket in go-spiffe's address form, "unix:///path".
func (s *Server) Addr() string { return "unix://" + s.socket }

// TrustDomain is the trust domain of every SVID the server issues.
func (s *Server) TrustDomain() spiffeid.TrustDomain { return s.td }

// SetIDs replaces the registration entries with one ProcessEntry per ID.
// With no IDs, every call answers PermissionDenied like SPIRE for an
// unregistered workload. It panics on an ID outside the trust domain (a
// test bug).
func (s *Server) SetIDs(ids ...string) {
	entries := make([]Entry, 0, len(ids))
	for _, id := range ids {
		entries = append(entries, ProcessEntry(id))
	}
	s.SetEntries(entries...)
}

// SetEntries replaces the registration entries, as `spire-server entry
// create/delete` does; calls from then on are attested against them. It
// panics on an invalid entry (a test bug).
func (s *Server) SetEntries(entries ...Entry) {
	ids := make([]string, 0, len(entries))
	for _, e := range entries {
		ids = append(ids, e.SPIFFEID)
	}
	if err := checkIDs(s.td, ids); err != nil {
		panic("svidtest: SetEntries: " + err.Error())
	}
	if err := checkEntries(entries); err != nil {
		panic("svidtest: SetEntries: " + err.Error())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries = slices.Clone(entries)
}

// Entries returns the registration entries in force.
func (s *Server) Entries() []Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.entries)
}

// identitiesOf attests the caller of ctx and returns its SPIFFE IDs; with
// none it counts the call as denied and returns SPIRE's PermissionDenied.
func (s *Server) identitiesOf(ctx context.Context, method string) ([]string, error) {
	selectors, aerr := attest(ctx)
	s.mu.Lock()
	ids := identities(s.entries, selectors)
	if len(ids) == 0 {
		s.counts.Denied++
	}
	s.mu.Unlock()
	if len(ids) == 0 {
		s.log.Warn("no identity issued", "method", method, "selectors", selectors, "attest_err", aerr)
		return nil, status.Error(codes.PermissionDenied, "no identity issued")
	}
	return ids, nil
}

// SetJWTTTL changes the lifetime of JWT-SVIDs issued from now on.
func (s *Server) SetJWTTTL(ttl time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jwtTTL = ttl
}

// Counts returns how many calls of each RPC the server has answered.
func (s *Server) Counts() Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts
}

// Stop stops serving and removes the socket, as when the SPIRE agent goes
// down. Open streams end. Keys and CA are kept for Restart.
func (s *Server) Stop() {
	s.mu.Lock()
	g, served := s.grpc, s.served
	s.grpc, s.served = nil, nil
	s.mu.Unlock()
	if g == nil {
		return
	}
	g.Stop()
	<-served
	_ = os.Remove(s.socket)
}

// Restart stops the server if it is running and serves again on the same
// socket with the same keys, as when the SPIRE agent restarts.
func (s *Server) Restart() error {
	s.Stop()
	return s.listen()
}

// Close stops the server for good.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.Stop()
}

func (s *Server) count(f func(*Counts)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.counts)
}

// checkHeader enforces the Workload API's security header the way the SPIRE
// agent does: without "workload.spiffe.io: true" the call is refused.
func (s *Server) checkHeader(ctx context.Context, method string) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if slices.Contains(md.Get("workload.spiffe.io"), "true") {
		return nil
	}
	s.count(func(c *Counts) { c.Rejected++ })
	s.log.Warn("rejected Workload API call without security header", "method", method)
	return status.Error(codes.InvalidArgument, "security header missing from request")
}

func (s *Server) unaryGuard(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := s.checkHeader(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (s *Server) streamGuard(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := s.checkHeader(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}
