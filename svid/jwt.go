package svid

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// Defaults of JWTConfig, the same as the Python agent's
// SBPS_MARSHAL_SPIRE_AGENT_SOCK_PATH and SBPS_MARSHAL_SPIRE_JWT_AUDIENCE.
const (
	DefaultSocket       = "/var/lib/spire/agent.sock"
	DefaultAudience     = "system-compute"
	DefaultFetchTimeout = 10 * time.Second
)

// NodeWorkloadID is the node-wide SPIFFE ID of the agent. XNameWorkloadID
// gives the per-node form.
const NodeWorkloadID = "spiffe://shasta/ncn/workload/sbps-marshal"

// XNameWorkloadID is the SPIFFE ID of the agent on the node with this xname.
func XNameWorkloadID(xname string) string {
	return "spiffe://shasta/ncn/" + xname + "/workload/sbps-marshal"
}

// ErrNoMatchingSVID means the Workload API answered but offered no JWT-SVID
// with an ID the agent accepts: the SPIRE registration entry is wrong.
var ErrNoMatchingSVID = errors.New("no JWT-SVID with an sbps-marshal SPIFFE ID")

// Clock tells the time. JWTSource uses it to decide when a cached token is
// due for refresh.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// JWTConfig configures a JWTSource. The zero value works on a CSM node
// where the caller has no xname.
type JWTConfig struct {
	// Socket is the Workload API socket: a path or go-spiffe's
	// "unix:///path" form. Defaults to DefaultSocket.
	Socket string
	// Audience is the JWT-SVID audience IMS's gateway expects. Defaults
	// to DefaultAudience.
	Audience string
	// XName is the node's xname (see ReadXName). When set, the per-node ID
	// XNameWorkloadID(XName) is accepted and preferred over NodeWorkloadID.
	XName string
	// FetchTimeout bounds one Workload API fetch. Defaults to
	// DefaultFetchTimeout.
	FetchTimeout time.Duration
	// Clock decides cache freshness. Defaults to the system clock.
	Clock Clock
	// Logger gets one line per fetch (ID and expiry, never the token).
	// Defaults to discarding.
	Logger *slog.Logger
	// CLI, when set, fetches through the SPIRE agent's command line
	// (SPIFFE_SOURCE=cli) instead of calling the Workload API.
	CLI *CLI
}

// JWTSource fetches, caches and refreshes the agent's JWT-SVID. It
// satisfies the IMS client's interface{ Token(ctx) (string, error) }.
type JWTSource struct {
	addr     string // go-spiffe address, "unix:///path"
	socket   string // filesystem path of the socket, "" if not a unix path
	audience string
	accepted []string // in order of preference
	timeout  time.Duration
	clock    Clock
	log      *slog.Logger
	cli      *CLI

	// mu guards cached and inflight.
	mu       sync.Mutex
	cached   *cachedToken
	inflight *fetchCall
}

type cachedToken struct {
	token     string
	id        string
	refreshAt time.Time // by Clock; after this, fetch a new one
	expiresAt time.Time // by Clock; after this, never hand it out
}

// fetchCall is one Workload API fetch that concurrent Token calls share.
// tok and err are written before done is closed.
type fetchCall struct {
	done chan struct{}
	tok  cachedToken
	err  error
}

// NewJWTSource returns a JWTSource for cfg. It does no I/O; the first Token
// call fetches.
func NewJWTSource(cfg JWTConfig) *JWTSource {
	s := &JWTSource{
		audience: cfg.Audience,
		timeout:  cfg.FetchTimeout,
		clock:    cfg.Clock,
		log:      cfg.Logger,
		cli:      cfg.CLI,
	}
	s.addr, s.socket = socketAddr(cfg.Socket)
	if s.audience == "" {
		s.audience = DefaultAudience
	}
	if s.timeout <= 0 {
		s.timeout = DefaultFetchTimeout
	}
	if s.clock == nil {
		s.clock = systemClock{}
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.XName != "" {
		s.accepted = append(s.accepted, XNameWorkloadID(cfg.XName))
	}
	s.accepted = append(s.accepted, NodeWorkloadID)
	return s
}

// Token returns a JWT-SVID for the configured audience, from the cache while
// it is fresh, else from the Workload API. If a refresh fails while the
// cached token has not yet expired, the cached token is returned and the
// failure logged, so a SPIRE agent restart does not interrupt IMS calls.
func (s *JWTSource) Token(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	s.mu.Lock()
	if c := s.cached; c != nil && s.clock.Now().Before(c.refreshAt) {
		s.mu.Unlock()
		return c.token, nil
	}
	call := s.inflight
	if call == nil {
		call = &fetchCall{done: make(chan struct{})}
		s.inflight = call
		go s.fetch(context.WithoutCancel(ctx), call)
	}
	s.mu.Unlock()

	select {
	case <-call.done:
	case <-ctx.Done():
		return "", fmt.Errorf("wait for JWT-SVID from SPIRE agent at %s: %w", s.addr, ctx.Err())
	}
	if call.err == nil {
		return call.tok.token, nil
	}

	s.mu.Lock()
	c := s.cached
	s.mu.Unlock()
	if c != nil && s.clock.Now().Before(c.expiresAt) {
		s.log.Warn("refreshing JWT-SVID failed, using the cached one until it expires",
			"spiffe_id", c.id, "expires_at", c.expiresAt, "err", call.err)
		return c.token, nil
	}
	return "", call.err
}

// Invalidate drops the cached token, so the next Token call fetches a new
// one. Call it when a server refused the token (HTTP 401). A fetch already
// under way is not cached when it completes.
func (s *JWTSource) Invalidate() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cached = nil
	s.inflight = nil
}

// fetch runs call and stores its result; ctx carries values but no
// cancellation, so one caller giving up does not fail the others.
func (s *JWTSource) fetch(ctx context.Context, call *fetchCall) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	tok, err := s.fetchOnce(ctx)

	s.mu.Lock()
	if s.inflight == call { // not invalidated meanwhile
		s.inflight = nil
		if err == nil {
			s.cached = &tok
		}
	}
	call.tok, call.err = tok, err
	s.mu.Unlock()
	close(call.done)
}

func (s *JWTSource) fetchOnce(ctx context.Context) (cachedToken, error) {
	if err := checkSocket(s.socket); err != nil {
		return cachedToken{}, err
	}
	fetchedAt := s.clock.Now()
	svids, err := s.fetchSVIDs(ctx)
	if err != nil {
		return cachedToken{}, err
	}
	picked, err := s.pick(svids)
	if err != nil {
		return cachedToken{}, err
	}
	lifetime := tokenLifetime(picked, fetchedAt)
	tok := cachedToken{
		token:     picked.Marshal(),
		id:        picked.ID.String(),
		refreshAt: fetchedAt.Add(refreshAfter(lifetime)),
		expiresAt: fetchedAt.Add(lifetime),
	}
	s.log.Info("fetched JWT-SVID", "spiffe_id", tok.id, "audience", s.audience,
		"lifetime", lifetime.Round(time.Second), "refresh_in", tok.refreshAt.Sub(fetchedAt).Round(time.Second))
	return tok, nil
}

// fetchSVIDs gets the JWT-SVIDs for the audience from the CLI or the
// Workload API.
func (s *JWTSource) fetchSVIDs(ctx context.Context) ([]*jwtsvid.SVID, error) {
	if s.cli != nil {
		return s.cli.FetchJWT(ctx, s.audience)
	}
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(s.addr))
	if err != nil {
		return nil, fmt.Errorf("connect to SPIRE agent Workload API at %s: %w", s.addr, err)
	}
	defer client.Close()
	svids, err := client.FetchJWTSVIDs(ctx, jwtsvid.Params{Audience: s.audience})
	if err != nil {
		return nil, fmt.Errorf("fetch JWT-SVID for audience %q from SPIRE agent at %s (is the agent running and sbps-marshal registered?): %w",
			s.audience, s.addr, noIdentity(s.addr, err))
	}
	return svids, nil
}

// pick returns the SVID with the most preferred accepted ID.
func (s *JWTSource) pick(svids []*jwtsvid.SVID) (*jwtsvid.SVID, error) {
	for _, want := range s.accepted {
		for _, sv := range svids {
			if sv.ID.String() == want {
				return sv, nil
			}
		}
	}
	offered := make([]string, 0, len(svids))
	for _, sv := range svids {
		offered = append(offered, sv.ID.String())
	}
	return nil, fmt.Errorf("%w: SPIRE agent at %s offered [%s] for audience %q, want one of [%s]; check the workload's SPIRE registration entry",
		ErrNoMatchingSVID, s.addr, strings.Join(offered, ", "), s.audience, strings.Join(s.accepted, ", "))
}

// tokenLifetime is how long the token lives, from its own iat and exp so
// that clock skew between node and SPIRE server does not matter. Without
// iat, it is the time from fetchedAt to exp.
func tokenLifetime(sv *jwtsvid.SVID, fetchedAt time.Time) time.Duration {
	if iat, ok := sv.Claims["iat"].(float64); ok && !math.IsNaN(iat) {
		issued := time.Unix(0, 0).Add(time.Duration(iat * float64(time.Second)))
		if l := sv.Expiry.Sub(issued); l > 0 {
			return l
		}
	}
	return max(sv.Expiry.Sub(fetchedAt), 0)
}

// refreshAfter is when, into a token's lifetime, to fetch a new one: at 80%
// or 30 s before expiry, whichever comes first, but not before half-time.
func refreshAfter(lifetime time.Duration) time.Duration {
	early := min(lifetime*8/10, lifetime-30*time.Second)
	return max(early, lifetime/2)
}
