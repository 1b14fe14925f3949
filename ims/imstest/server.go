package imstest

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Image is an IMS ImageRecord as the server stores it. The server has its own
// type, independent of the client's, so that the client is tested against the
// wire shapes rather than against itself.
type Image struct {
	ID       string
	Name     string
	Created  string // served verbatim; Put fills an RFC 3339 time when empty
	Arch     string // Put fills "x86_64" when empty, as IMS does
	Link     *Link  // nil: no link (omitted, or null with Options.NullLinks)
	Metadata map[string]string
}

// Link is an ArtifactLinkRecord.
type Link struct {
	Path string `json:"path"`
	Etag string `json:"etag,omitempty"`
	Type string `json:"type"`
}

// ListMode selects a fault in GET /v3/images.
type ListMode int

// List modes.
const (
	ListAll      ListMode = iota // every image (normal)
	ListDropHalf                 // every second image is left out
	ListEmpty                    // an empty array
)

// ErrNotFound is returned by the Go API for an unknown id.
var ErrNotFound = errors.New("imstest: no such image")

// Options configures a Server. The zero value is an open (no auth),
// current-IMS (with metadata) server.
type Options struct {
	// Legacy emulates IMS older than 3.16: records carry no metadata and a
	// metadata PATCH is refused with 422. Changeable later with SetLegacy.
	Legacy bool
	// NullLinks serves "link": null for images without a link, as the
	// Python IMS does; by default the key is omitted, as the spec allows
	// (the spec does not mark link nullable).
	NullLinks bool
	// Verify checks the bearer token of every request; nil means no
	// authentication. A missing header or a Verify error gives 401.
	Verify func(ctx context.Context, token string) error
	// Now is the clock for created timestamps; defaults to time.Now.
	Now func() time.Time
}

// Stats counts the requests the server handled.
type Stats struct {
	Requests     int64 // every request
	Lists        int64 // GET /v3/images answered 200
	Gets         int64 // GET /v3/images/{id}, any answer after auth
	Posts        int64
	Patches      int64
	Deletes      int64
	Unauthorized int64 // 401 answers from authentication
	Injected     int64 // answers produced by FailNext
}

type entry struct {
	img Image
	raw json.RawMessage // when set, served verbatim (a malformed record)
}

// Server is an in-memory IMS serving /v3/images and the gateway path
// /apis/ims/v3/images. It is an http.Handler; Start also listens. Safe for
// concurrent use.
type Server struct {
	verify    func(ctx context.Context, token string) error
	nullLinks bool
	now       func() time.Time
	mux       *http.ServeMux

	mu       sync.Mutex
	images   map[string]*entry // guarded by mu
	order    []string          // guarded by mu; listing order
	legacy   bool              // guarded by mu
	listMode ListMode          // guarded by mu
	hidden   map[string]bool   // guarded by mu; left out of listings
	noRoute  bool              // guarded by mu; answer as Envoy with no route
	latency  time.Duration     // guarded by mu
	failLeft int               // guarded by mu
	failCode int               // guarded by mu

	// Set by Start before the Server is shared; read-only afterwards.
	httpSrv *http.Server
	baseURL string
	client  *http.Client
	caPEM   []byte

	requests, lists, gets, posts, patches, deletes, unauthorized, injected atomic.Int64
}

var _ http.Handler = (*Server)(nil)

// NewServer returns a Server handler that is not listening; see Start.
func NewServer(opts Options) *Server {
	s := &Server{
		verify:    opts.Verify,
		nullLinks: opts.NullLinks,
		now:       opts.Now,
		images:    map[string]*entry{},
		legacy:    opts.Legacy,
	}
	if s.now == nil {
		s.now = time.Now
	}
	mux := http.NewServeMux()
	// IMS itself and the CSM API gateway path.
	for _, p := range []string{"", "/apis/ims"} {
		mux.HandleFunc("GET "+p+"/v3/images", s.handleList)
		mux.HandleFunc("POST "+p+"/v3/images", s.handlePost)
		mux.HandleFunc("DELETE "+p+"/v3/images", s.handleDeleteAll)
		mux.HandleFunc("GET "+p+"/v3/images/{image_id}", s.handleGet)
		mux.HandleFunc("PATCH "+p+"/v3/images/{image_id}", s.handlePatch)
		mux.HandleFunc("DELETE "+p+"/v3/images/{image_id}", s.handleDelete)
	}
	s.mux = mux
	return s
}

// NewID returns a random (version 4) UUID, the form IMS uses for ids.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// Put stores img, replacing any record with the same id, and returns the
// stored record: an empty ID gets NewID, an empty Created the current time,
// an empty Arch "x86_64".
func (s *Server) Put(img Image) Image {
	img = s.fill(img)
	img.Metadata = cloneMap(img.Metadata)
	if img.Link != nil {
		l := *img.Link
		img.Link = &l
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.storeLocked(img.ID, &entry{img: img})
	return cloneImage(img)
}

// PutRaw stores a record served verbatim (for example one with wrong
// types), under id for Get and Delete.
func (s *Server) PutRaw(id string, raw json.RawMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.storeLocked(id, &entry{img: Image{ID: id}, raw: slices.Clone(raw)})
}

func (s *Server) storeLocked(id string, e *entry) {
	if _, ok := s.images[id]; !ok {
		s.order = append(s.order, id)
	}
	s.images[id] = e
}

func (s *Server) fill(img Image) Image {
	if img.ID == "" {
		img.ID = NewID()
	}
	if img.Created == "" {
		img.Created = s.now().UTC().Format("2006-01-02T15:04:05.000000Z07:00")
	}
	if img.Arch == "" {
		img.Arch = "x86_64"
	}
	return img
}

// Image returns a copy of the stored record.
func (s *Server) Image(id string) (Image, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.images[id]
	if !ok {
		return Image{}, false
	}
	return cloneImage(e.img), true
}

// Images returns copies of all records in listing order.
func (s *Server) Images() []Image {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Image, 0, len(s.order))
	for _, id := range s.order {
		out = append(out, cloneImage(s.images[id].img))
	}
	return out
}

// Tag sets metadata sbps-project=true on an image.
func (s *Server) Tag(id string) error { return s.SetMetadata(id, "sbps-project", "true") }

// Untag removes the sbps-project key from an image.
func (s *Server) Untag(id string) error { return s.RemoveMetadata(id, "sbps-project") }

// SetMetadata sets one metadata key of an image.
func (s *Server) SetMetadata(id, key, value string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.images[id]
	if !ok {
		return fmt.Errorf("set metadata on %s: %w", id, ErrNotFound)
	}
	if e.img.Metadata == nil {
		e.img.Metadata = map[string]string{}
	}
	e.img.Metadata[key] = value
	return nil
}

// RemoveMetadata removes one metadata key of an image.
func (s *Server) RemoveMetadata(id, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.images[id]
	if !ok {
		return fmt.Errorf("remove metadata from %s: %w", id, ErrNotFound)
	}
	delete(e.img.Metadata, key)
	return nil
}

// Delete removes an image.
func (s *Server) Delete(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.deleteLocked(id) {
		return fmt.Errorf("delete %s: %w", id, ErrNotFound)
	}
	return nil
}

func (s *Server) deleteLocked(id string) bool {
	if _, ok := s.images[id]; !ok {
		return false
	}
	delete(s.images, id)
	s.order = slices.DeleteFunc(s.order, func(x string) bool { return x == id })
	return true
}

// SetLegacy switches IMS < 3.16 emulation (no metadata) on or off.
func (s *Server) SetLegacy(on bool) {
	s.mu.Lock()
	s.legacy = on
	s.mu.Unlock()
}

// SetListMode selects a listing fault (ListDropHalf, ListEmpty) or ListAll.
func (s *Server) SetListMode(m ListMode) {
	s.mu.Lock()
	s.listMode = m
	s.mu.Unlock()
}

// Hide makes GET /v3/images leave out the given images, which GET
// /v3/images/{id} still finds: a partial listing without an error. Hide()
// with no ids clears it.
func (s *Server) Hide(ids ...string) {
	s.mu.Lock()
	s.hidden = make(map[string]bool, len(ids))
	for _, id := range ids {
		s.hidden[id] = true
	}
	s.mu.Unlock()
}

// SetGatewayNoRoute makes every request answer as the CSM API gateway
// (Envoy) does when it has no route to IMS, e.g. while IMS is redeployed:
// 404 with an empty body and "server: envoy", not IMS's problem details.
func (s *Server) SetGatewayNoRoute(on bool) {
	s.mu.Lock()
	s.noRoute = on
	s.mu.Unlock()
}

// SetLatency delays every answer by d (until the request is cancelled).
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	s.latency = d
	s.mu.Unlock()
}

// FailNext makes the next n requests answer status (e.g. 500, 503, 401)
// with a problem body, before authentication, as a failing gateway would.
// n = 0 clears the fault.
func (s *Server) FailNext(n, status int) {
	s.mu.Lock()
	s.failLeft, s.failCode = n, status
	s.mu.Unlock()
}

// Stats returns the request counters.
func (s *Server) Stats() Stats {
	return Stats{
		Requests:     s.requests.Load(),
		Lists:        s.lists.Load(),
		Gets:         s.gets.Load(),
		Posts:        s.posts.Load(),
		Patches:      s.patches.Load(),
		Deletes:      s.deletes.Load(),
		Unauthorized: s.unauthorized.Load(),
		Injected:     s.injected.Load(),
	}
}

// ServeHTTP applies latency, injected faults and authentication, then
// routes the request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	s.mu.Lock()
	lat := s.latency
	code, noRoute := 0, s.noRoute
	if s.failLeft > 0 {
		s.failLeft--
		code = s.failCode
	}
	s.mu.Unlock()
	if lat > 0 {
		t := time.NewTimer(lat)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	if noRoute {
		s.injected.Add(1)
		w.Header().Set("Server", "envoy")
		w.Header().Set("Date", time.Now().UTC().Format(http.TimeFormat))
		w.WriteHeader(http.StatusNotFound)
		return
	}
	if code != 0 {
		s.injected.Add(1)
		if code == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		}
		problem(w, code, "injected fault")
		return
	}
	if s.verify != nil {
		tok, ok := bearer(r)
		if !ok {
			s.unauthorized.Add(1)
			w.Header().Set("WWW-Authenticate", "Bearer")
			problem(w, http.StatusUnauthorized, "no bearer token")
			return
		}
		if err := s.verify(r.Context(), tok); err != nil {
			s.unauthorized.Add(1)
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			problem(w, http.StatusUnauthorized, "token rejected")
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	const p = "Bearer "
	if len(h) <= len(p) || !equalFold(h[:len(p)], p) {
		return "", false
	}
	return h[len(p):], true
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i]|0x20, b[i]|0x20
		if x != y {
			return false
		}
	}
	return true
}

// StaticToken returns a Verify function accepting exactly token.
func StaticToken(token string) func(context.Context, string) error {
	return func(_ context.Context, got string) error {
		if got != token {
			return errors.New("imstest: wrong token")
		}
		return nil
	}
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	mode, legacy := s.listMode, s.legacy
	out := make([]json.RawMessage, 0, len(s.order))
	for i, id := range s.order {
		if mode == ListEmpty || mode == ListDropHalf && i%2 == 1 || s.hidden[id] {
			continue
		}
		out = append(out, s.wireLocked(s.images[id], legacy))
	}
	s.mu.Unlock()
	s.lists.Add(1)
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request) {
	s.gets.Add(1)
	id := r.PathValue("image_id")
	s.mu.Lock()
	e, ok := s.images[id]
	var rec json.RawMessage
	if ok {
		rec = s.wireLocked(e, s.legacy)
	}
	s.mu.Unlock()
	if !ok {
		notFound(w)
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request) {
	s.deletes.Add(1)
	s.mu.Lock()
	ok := s.deleteLocked(r.PathValue("image_id"))
	s.mu.Unlock()
	if !ok {
		notFound(w)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleDeleteAll(w http.ResponseWriter, r *http.Request) {
	s.deletes.Add(1)
	s.mu.Lock()
	s.images, s.order = map[string]*entry{}, nil
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// wireLocked renders a record in the ImageRecord shape: sorted keys (as
// flask's jsonify), metadata omitted on a legacy server and always present
// ({} when empty) otherwise, link omitted or null when absent.
func (s *Server) wireLocked(e *entry, legacy bool) json.RawMessage {
	if e.raw != nil {
		return e.raw
	}
	m := map[string]any{
		"id":      e.img.ID,
		"name":    e.img.Name,
		"created": e.img.Created,
	}
	if e.img.Arch != "" {
		m["arch"] = e.img.Arch
	}
	switch {
	case e.img.Link != nil:
		m["link"] = e.img.Link
	case s.nullLinks:
		m["link"] = nil
	}
	if !legacy {
		md := e.img.Metadata
		if md == nil {
			md = map[string]string{}
		}
		m["metadata"] = md
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("imstest: marshal a record of strings: %v", err))
	}
	return b
}

// maxRequest bounds request bodies.
const maxRequest = 1 << 20

// readObject reads a JSON object body. ok=false means the answer was written:
// 400 for no input (IMS: "not json_data"), 422 for JSON that is not an object.
func readObject(w http.ResponseWriter, r *http.Request) (map[string]json.RawMessage, bool) {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxRequest+1))
	if err != nil || len(b) > maxRequest {
		problem(w, http.StatusBadRequest, "could not read the request body")
		return nil, false
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		problem(w, http.StatusBadRequest, "The request body is not a JSON object. Re-run the request with valid input.")
		return nil, false
	}
	if len(obj) == 0 {
		problem(w, http.StatusBadRequest, "No input provided. Determine the specific information that is missing or invalid and then re-run the request with valid information.")
		return nil, false
	}
	return obj, true
}

func (s *Server) handlePost(w http.ResponseWriter, r *http.Request) {
	s.posts.Add(1)
	obj, ok := readObject(w, r)
	if !ok {
		return
	}
	var img Image
	errs := map[string]string{}
	for k, v := range obj {
		switch k {
		case "name":
			if json.Unmarshal(v, &img.Name) != nil || img.Name == "" {
				errs[k] = "must be a non-empty string"
			}
		case "arch":
			if json.Unmarshal(v, &img.Arch) != nil || !validArch(img.Arch) {
				errs[k] = "must be one of aarch64, x86_64"
			}
		case "link":
			l, err := decodeLink(v)
			if err != nil {
				errs[k] = err.Error()
			}
			img.Link = l
		case "metadata":
			if json.Unmarshal(v, &img.Metadata) != nil {
				errs[k] = "must be an object of string values"
			}
		default:
			errs[k] = "unknown field"
		}
	}
	if _, ok := obj["name"]; !ok {
		errs["name"] = "missing data for required field"
	}
	if len(errs) > 0 {
		invalid(w, errs)
		return
	}
	img = s.fill(Image{Name: img.Name, Arch: img.Arch, Link: img.Link, Metadata: img.Metadata})
	s.mu.Lock()
	e := &entry{img: img}
	s.storeLocked(img.ID, e)
	rec := s.wireLocked(e, s.legacy)
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, rec)
}

func (s *Server) handlePatch(w http.ResponseWriter, r *http.Request) {
	s.patches.Add(1)
	id := r.PathValue("image_id")
	s.mu.Lock()
	_, exists := s.images[id]
	legacy := s.legacy
	s.mu.Unlock()
	if !exists {
		notFound(w)
		return
	}
	obj, ok := readObject(w, r)
	if !ok {
		return
	}
	var (
		link *Link
		arch string
		op   struct{ Operation, Key, Value string } // a set without value sets "", as IMS does
		errs = map[string]string{}
	)
	for k, v := range obj {
		switch k {
		case "link":
			l, err := decodeLink(v)
			if err != nil || l == nil {
				errs[k] = "must be an ArtifactLinkRecord with path and type"
			}
			link = l
		case "arch":
			if json.Unmarshal(v, &arch) != nil || !validArch(arch) {
				errs[k] = "must be one of aarch64, x86_64"
			}
		case "metadata":
			if legacy {
				errs[k] = "unknown field"
				continue
			}
			var raw map[string]json.RawMessage
			if json.Unmarshal(v, &raw) != nil {
				errs[k] = "must be an object with operation, key and value"
				continue
			}
			for mk, mv := range raw {
				var sv string
				if json.Unmarshal(mv, &sv) != nil {
					errs["metadata."+mk] = "must be a string"
					continue
				}
				switch mk {
				case "operation":
					op.Operation = sv
				case "key":
					op.Key = sv
				case "value":
					op.Value = sv
				default:
					errs["metadata."+mk] = "unknown field"
				}
			}
			if op.Operation != "set" && op.Operation != "remove" {
				errs["metadata.operation"] = "must be one of set, remove"
			}
			if op.Key == "" {
				errs["metadata.key"] = "missing data for required field"
			}
		default:
			errs[k] = "unknown field"
		}
	}
	if len(errs) > 0 {
		invalid(w, errs)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.images[id]
	if !ok { // deleted meanwhile
		notFound(w)
		return
	}
	if link != nil && e.img.Link != nil && *e.img.Link != *link {
		problem(w, http.StatusConflict, "The IMS image record already has a link; it cannot be patched.")
		return
	}
	if link != nil {
		e.img.Link = link
	}
	if arch != "" {
		e.img.Arch = arch
	}
	switch op.Operation {
	case "set":
		if e.img.Metadata == nil {
			e.img.Metadata = map[string]string{}
		}
		e.img.Metadata[op.Key] = op.Value
	case "remove":
		delete(e.img.Metadata, op.Key)
	}
	writeJSON(w, http.StatusOK, s.wireLocked(e, legacy))
}

func decodeLink(v json.RawMessage) (*Link, error) {
	if string(v) == "null" {
		return nil, nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(v, &raw); err != nil {
		return nil, errors.New("must be an object")
	}
	var l Link
	for k, f := range raw {
		var sv string
		if json.Unmarshal(f, &sv) != nil {
			return nil, fmt.Errorf("%s must be a string", k)
		}
		switch k {
		case "path":
			l.Path = sv
		case "etag":
			l.Etag = sv
		case "type":
			l.Type = sv
		default:
			return nil, fmt.Errorf("unknown field %s", k)
		}
	}
	if l.Path == "" || l.Type == "" {
		return nil, errors.New("path and type are required")
	}
	return &l, nil
}

func validArch(a string) bool { return a == "x86_64" || a == "aarch64" }

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func cloneImage(img Image) Image {
	img.Metadata = cloneMap(img.Metadata)
	if img.Link != nil {
		l := *img.Link
		img.Link = &l
	}
	return img
}

// problemDetails is the spec's ProblemDetails.
type problemDetails struct {
	Type   string            `json:"type"`
	Title  string            `json:"title"`
	Status int               `json:"status"`
	Detail string            `json:"detail,omitempty"`
	Errors map[string]string `json:"errors,omitempty"`
}

func problem(w http.ResponseWriter, status int, detail string) {
	writeJSON(w, status, problemDetails{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail})
}

func notFound(w http.ResponseWriter) {
	problem(w, http.StatusNotFound, "Requested resource does not exist. Re-run request with valid ID.")
}

func invalid(w http.ResponseWriter, errs map[string]string) {
	writeJSON(w, http.StatusUnprocessableEntity, problemDetails{
		Type: "about:blank", Title: http.StatusText(http.StatusUnprocessableEntity), Status: http.StatusUnprocessableEntity,
		Detail: "Input data was understood, but failed validation. Re-run request with valid input values for the fields indicated in the response.",
		Errors: errs,
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
