package ims

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// Defaults for [Config].
const (
	DefaultTimeout = 10 * time.Second
	DefaultMaxBody = 64 << 20
	// maxRecordBody bounds single-record and error responses.
	maxRecordBody = 1 << 20
)

// Sentinel errors; match with errors.Is.
var (
	// ErrNotFound: IMS answered 404 for an image (it was deleted).
	ErrNotFound = errors.New("ims: image not found")
	// ErrNoRoute: a 404 that is not IMS's own answer (no problem details
	// in the body): the API gateway has no route to IMS, e.g. while IMS is
	// redeployed. It says nothing about the image; retry later.
	ErrNoRoute = errors.New("ims: the API gateway answered 404 without IMS's problem details (no route to IMS)")
	// ErrUnauthorized: IMS (the API gateway) answered 401 or 403 even after
	// a fresh token.
	ErrUnauthorized = errors.New("ims: unauthorized")
	// ErrTooLarge: a response exceeded the configured bound.
	ErrTooLarge = errors.New("ims: response too large")
)

// Config configures a [Client].
type Config struct {
	// BaseURL is the image collection URL, API_GATEWAY + "/" + IMS_URI, e.g.
	// https://api-gw-service-nmn.local/apis/ims/v3/images. Required; http or
	// https; no user info, query or fragment.
	BaseURL string
	// HTTPClient sends the requests; the caller sets TLS (CA file). Defaults
	// to a client with a clone of http.DefaultTransport (TLS verification on,
	// proxy from the environment). Its own Timeout is left as given.
	HTTPClient *http.Client
	// Token yields the bearer token. Required: use NoToken{} for IMS_AUTH=none.
	Token TokenSource
	// Timeout bounds each request including reading the body (IMS_TIMEOUT).
	// Defaults to DefaultTimeout (10s).
	Timeout time.Duration
	// MaxBody bounds the listing body in bytes. Defaults to DefaultMaxBody
	// (64 MiB).
	MaxBody int64
	// UserAgent is sent as User-Agent. Defaults to "sbps-marshal".
	UserAgent string
}

// Stats counts the requests a Client sent, for benchmarks and metrics.
type Stats struct {
	Requests int64 // HTTP requests sent, retries included
	Lists    int64 // List calls
	Gets     int64 // Get calls
	Patches  int64 // SetMetadata/RemoveMetadata calls
	Retries  int64 // requests repeated after a 401 with a fresh token
	Failures int64 // calls that returned an error
}

// Client talks to IMS. Build it with [New]; safe for concurrent use.
type Client struct {
	base    *url.URL
	http    *http.Client
	token   TokenSource
	timeout time.Duration
	maxBody int64
	ua      string

	requests, lists, gets, patches, retries, failures atomic.Int64
}

// New validates cfg and returns a Client.
func New(cfg Config) (*Client, error) {
	if cfg.BaseURL == "" {
		return nil, errors.New("ims: BaseURL is empty; set API_GATEWAY and IMS_URI")
	}
	u, err := url.Parse(strings.TrimRight(cfg.BaseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("ims: BaseURL is not a URL: %w", err)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return nil, fmt.Errorf("ims: BaseURL %q must be http or https", u.Redacted())
	}
	if u.Host == "" {
		return nil, fmt.Errorf("ims: BaseURL %q has no host", u.Redacted())
	}
	if u.User != nil {
		return nil, fmt.Errorf("ims: BaseURL %q carries user info; pass credentials through Token instead", u.Redacted())
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("ims: BaseURL %q must not have a query or fragment", u.Redacted())
	}
	if cfg.Token == nil {
		return nil, errors.New("ims: Token is nil; use ims.NoToken{} for IMS_AUTH=none")
	}
	if cfg.Timeout < 0 || cfg.MaxBody < 0 {
		return nil, errors.New("ims: Timeout and MaxBody must not be negative")
	}
	c := &Client{
		base:    u,
		http:    cfg.HTTPClient,
		token:   cfg.Token,
		timeout: cfg.Timeout,
		maxBody: cfg.MaxBody,
		ua:      cfg.UserAgent,
	}
	if c.http == nil {
		c.http = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	if c.maxBody == 0 {
		c.maxBody = DefaultMaxBody
	}
	if c.ua == "" {
		c.ua = "sbps-marshal"
	}
	return c, nil
}

// Stats returns the request counters so far.
func (c *Client) Stats() Stats {
	return Stats{
		Requests: c.requests.Load(),
		Lists:    c.lists.Load(),
		Gets:     c.gets.Load(),
		Patches:  c.patches.Load(),
		Retries:  c.retries.Load(),
		Failures: c.failures.Load(),
	}
}

// List fetches every image record (GET BaseURL). Records that do not decode
// are returned in Listing.Errors; err is non-nil only when the listing as a
// whole failed (transport, status, not a JSON array, too large).
func (c *Client) List(ctx context.Context) (Listing, error) {
	c.lists.Add(1)
	body, err := c.do(ctx, http.MethodGet, c.base.String(), nil, c.maxBody)
	if err != nil {
		c.failures.Add(1)
		return Listing{}, err
	}
	l, err := decodeListing(body)
	if err != nil {
		c.failures.Add(1)
		return Listing{}, fmt.Errorf("GET %s: %w", c.base.Redacted(), err)
	}
	return l, nil
}

// Get fetches one image record. A deleted image yields an error matching
// ErrNotFound. id must be a UUID; anything else fails before any request.
func (c *Client) Get(ctx context.Context, id string) (Image, error) {
	c.gets.Add(1)
	img, err := c.get(ctx, id)
	if err != nil {
		c.failures.Add(1)
	}
	return img, err
}

func (c *Client) get(ctx context.Context, id string) (Image, error) {
	if err := ValidID(id); err != nil {
		return Image{}, err
	}
	u := c.imageURL(id)
	body, err := c.do(ctx, http.MethodGet, u, nil, maxRecordBody)
	if err != nil {
		return Image{}, err
	}
	img, err := decodeImage(body)
	if err != nil {
		return Image{}, fmt.Errorf("ims: GET %s: image record: %w", u, err)
	}
	if img.ID != id {
		return Image{}, fmt.Errorf("ims: GET %s: IMS returned record %s instead", u, img.ID)
	}
	return img, nil
}

// SetMetadata sets metadata key=value on an image (PATCH with operation
// "set"), e.g. SetMetadata(ctx, id, TagKey, TagValue) to tag it. It returns
// the updated record.
func (c *Client) SetMetadata(ctx context.Context, id, key, value string) (Image, error) {
	return c.patchMetadata(ctx, id, metadataOp{Operation: "set", Key: key, Value: &value})
}

// RemoveMetadata removes a metadata key from an image (PATCH with operation
// "remove"); removing an absent key succeeds.
func (c *Client) RemoveMetadata(ctx context.Context, id, key string) (Image, error) {
	return c.patchMetadata(ctx, id, metadataOp{Operation: "remove", Key: key})
}

type metadataOp struct {
	Operation string  `json:"operation"`
	Key       string  `json:"key"`
	Value     *string `json:"value,omitempty"`
}

func (c *Client) patchMetadata(ctx context.Context, id string, op metadataOp) (Image, error) {
	c.patches.Add(1)
	img, err := c.patch(ctx, id, op)
	if err != nil {
		c.failures.Add(1)
	}
	return img, err
}

func (c *Client) patch(ctx context.Context, id string, op metadataOp) (Image, error) {
	if err := ValidID(id); err != nil {
		return Image{}, err
	}
	if op.Key == "" {
		return Image{}, errors.New("ims: metadata key is empty")
	}
	body, err := json.Marshal(struct {
		Metadata metadataOp `json:"metadata"`
	}{op})
	if err != nil {
		return Image{}, fmt.Errorf("ims: encode metadata patch: %w", err)
	}
	u := c.imageURL(id)
	resp, err := c.do(ctx, http.MethodPatch, u, body, maxRecordBody)
	if err != nil {
		return Image{}, err
	}
	img, err := decodeImage(resp)
	if err != nil {
		return Image{}, fmt.Errorf("ims: PATCH %s: image record: %w", u, err)
	}
	return img, nil
}

func (c *Client) imageURL(id string) string {
	return c.base.JoinPath(id).String()
}

// StatusError is an HTTP error answer from IMS. It names the URL (without
// secrets), the status and an excerpt of the body.
type StatusError struct {
	Method string
	URL    string
	Status int
	Body   string
	// Problem is true when the body is IMS's own error answer: RFC 7807
	// problem details (the spec's ProblemDetails, application/json or
	// application/problem+json) for this status. A gateway's answer (Envoy:
	// empty body or text/plain) is not.
	Problem bool
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("ims: %s %s: HTTP %d %s", e.Method, e.URL, e.Status, http.StatusText(e.Status))
	if e.Body != "" {
		msg += ": " + e.Body
	}
	switch {
	case e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden:
		msg += " (check the IMS credentials: SPIFFE ID and audience, or the token file)"
	case e.Status >= 500:
		msg += " (IMS or the API gateway is failing; retry later)"
	case e.Status == http.StatusNotFound && !e.Problem:
		msg += " (not IMS's answer: the API gateway has no route to IMS, e.g. while IMS is redeployed; nothing is taken as deleted, retry later)"
	}
	return msg
}

// Unwrap maps IMS's own 404 to ErrNotFound, any other 404 (the gateway's)
// to ErrNoRoute, and 401/403 to ErrUnauthorized.
func (e *StatusError) Unwrap() error {
	switch e.Status {
	case http.StatusNotFound:
		if !e.Problem {
			return ErrNoRoute
		}
		return ErrNotFound
	case http.StatusUnauthorized, http.StatusForbidden:
		return ErrUnauthorized
	}
	return nil
}

// do sends one request (and one retry after a 401 if the token source can be
// invalidated) and returns the body of a 2xx answer, at most limit bytes.
func (c *Client) do(ctx context.Context, method, u string, body []byte, limit int64) ([]byte, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, c.timeout,
		fmt.Errorf("ims: %s %s took longer than IMS_TIMEOUT=%s: %w", method, redact(u), c.timeout, context.DeadlineExceeded))
	defer cancel()

	inv, canRetry := c.token.(Invalidator)
	for attempt := 0; ; attempt++ {
		b, status, err := c.once(ctx, method, u, body, limit)
		if err == nil {
			return b, nil
		}
		if status == http.StatusUnauthorized && canRetry && attempt == 0 {
			inv.Invalidate()
			c.retries.Add(1)
			continue
		}
		return nil, err
	}
}

func (c *Client) once(ctx context.Context, method, u string, body []byte, limit int64) ([]byte, int, error) {
	tok, err := c.token.Token(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("ims: %s %s: get bearer token: %w", method, redact(u), err)
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, 0, fmt.Errorf("ims: build %s %s: %w", method, redact(u), err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.ua)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	c.requests.Add(1)
	resp, err := c.http.Do(req)
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
			return nil, 0, fmt.Errorf("ims: %s %s: %w", method, redact(u), cause)
		}
		return nil, 0, fmt.Errorf("ims: %s %s: %w", method, redact(u), stripURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxRecordBody))
		return nil, resp.StatusCode, &StatusError{Method: method, URL: redact(u), Status: resp.StatusCode, Body: excerpt(bytes.TrimSpace(b), 200),
			Problem: isProblem(resp.Header.Get("Content-Type"), b, resp.StatusCode)}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
			err = cause
		}
		return nil, resp.StatusCode, fmt.Errorf("ims: %s %s: read body: %w", method, redact(u), err)
	}
	if int64(len(b)) > limit {
		return nil, resp.StatusCode, fmt.Errorf("ims: %s %s: body exceeds %d bytes: %w (raise the listing bound if IMS really holds that many images)", method, redact(u), limit, ErrTooLarge)
	}
	return b, resp.StatusCode, nil
}

// isProblem reports whether an error answer is IMS's own: a JSON body
// (application/json or application/problem+json) holding RFC 7807 problem
// details whose status is the answer's status, as IMS's OpenAPI spec
// describes every error response. The CSM API gateway's own answers (Envoy
// with no route: 404 and an empty body; text/plain) are not.
func isProblem(contentType string, body []byte, status int) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil || (mt != "application/json" && mt != "application/problem+json") {
		return false
	}
	var p struct {
		Status *int    `json:"status"`
		Title  *string `json:"title"`
		Detail *string `json:"detail"`
	}
	if json.Unmarshal(body, &p) != nil || p.Status == nil || *p.Status != status {
		return false
	}
	return p.Title != nil || p.Detail != nil
}

// redact removes anything secret-looking from a URL for messages.
func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "<unparsable URL>"
	}
	p.RawQuery = ""
	return p.Redacted()
}

// stripURLError drops the *url.Error wrapper, whose message repeats the URL.
func stripURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
