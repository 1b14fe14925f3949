package lio

import (
	"bytes"
	"encoding/json"
	"hash/maphash"
)

// parseCache parses saveconfig.json again after a change while decoding
// only the storage objects, LUNs and node ACLs whose bytes changed: a node
// serving 10,000 images has a 20 MB file of which one event changes a few
// hundred bytes, and decoding all of it costs most of a second.
//
// Its reader walks the document's structure itself and hands every value
// to the same decoders Parse uses, so a document it accepts decodes to
// exactly what Parse returns. Anything outside the layout rtslib writes
// (duplicate keys, nulls where arrays belong, a value that does not decode)
// makes it give up, and Parse then decides, with Parse's errors.
//
// Not safe for concurrent use.
type parseCache struct {
	seeds [2]maphash.Seed
	cur   elements // decoded in the latest successful parse
	// blobs holds one copy of each raw attribute and ALUA blob of the
	// storage objects decoded: rtslib writes the same ~1.7 KB for every
	// fileio backstore the agent creates, 17 MB at 10,000 kept once.
	blobs map[string]json.RawMessage

	fast, slow, decoded int // parses taken by each path, elements decoded (for tests)
}

type elements struct {
	objects map[elemKey]*StorageObject
	luns    map[elemKey]*LUN
	acls    map[elemKey]*NodeACL
}

// elemKey identifies an element by its bytes: two independent 64-bit
// hashes under seeds chosen at random per process, and the length.
type elemKey struct {
	h1, h2 uint64
	n      int
}

func newParseCache() *parseCache {
	return &parseCache{seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}}
}

func (c *parseCache) key(b []byte) elemKey {
	return elemKey{maphash.Bytes(c.seeds[0], b), maphash.Bytes(c.seeds[1], b), len(b)}
}

// parse decodes data as Parse does. The result never refers to data, so
// the caller may reuse the buffer.
func (c *parseCache) parse(data []byte) (*Config, error) {
	p := fastParser{s: scanner{b: data}, c: c, next: elements{
		objects: make(map[elemKey]*StorageObject, len(c.cur.objects)+1),
		luns:    make(map[elemKey]*LUN, len(c.cur.luns)+1),
		acls:    make(map[elemKey]*NodeACL, len(c.cur.acls)),
	}}
	if cfg, ok := p.config(); ok {
		c.cur = p.next
		c.fast++
		return cfg, nil
	}
	c.slow++
	return Parse(data)
}

type fastParser struct {
	s       scanner
	c       *parseCache
	next    elements
	lastKey elemKey // of the element cached read last
}

func (p *fastParser) config() (*Config, bool) {
	s := &p.s
	cfg := &Config{}
	ok := s.object(func(key string) bool {
		switch key {
		case "storage_objects":
			cfg.StorageObjects = make([]StorageObject, 0, len(p.c.cur.objects))
			return s.array(func() bool {
				so, ok := p.storageObject()
				cfg.StorageObjects = append(cfg.StorageObjects, so)
				return ok
			})
		case "targets":
			cfg.Targets = []Target{}
			return s.array(func() bool {
				t, ok := p.target()
				cfg.Targets = append(cfg.Targets, t)
				return ok
			})
		case "fabric_modules":
			return s.decode(&cfg.FabricModules)
		}
		return s.extra(&cfg.Extra, key)
	})
	if !ok || !s.end() {
		return nil, false
	}
	return cfg, true
}

func (p *fastParser) target() (Target, bool) {
	s := &p.s
	var t Target
	ok := s.object(func(key string) bool {
		switch key {
		case "fabric":
			return s.decode(&t.Fabric)
		case "wwn":
			return s.decode(&t.WWN)
		case "tpgs":
			t.TPGs = []TPG{}
			return s.array(func() bool {
				tpg, ok := p.tpg()
				t.TPGs = append(t.TPGs, tpg)
				return ok
			})
		}
		return s.extra(&t.Extra, key)
	})
	return t, ok
}

func (p *fastParser) tpg() (TPG, bool) {
	s := &p.s
	var t TPG
	ok := s.object(func(key string) bool {
		switch key {
		case "tag":
			return s.decode(&t.Tag)
		case "enable":
			return s.decode(&t.Enable)
		case "attributes":
			return s.decode(&t.Attributes)
		case "parameters":
			return s.decode(&t.Parameters)
		case "portals":
			return s.decode(&t.Portals)
		case "luns":
			t.LUNs = make([]LUN, 0, len(p.c.cur.luns))
			return s.array(func() bool {
				l, ok := cached(p, p.c.cur.luns, p.next.luns)
				t.LUNs = append(t.LUNs, l)
				return ok
			})
		case "node_acls":
			t.NodeACLs = []NodeACL{}
			return s.array(func() bool {
				a, ok := cached(p, p.c.cur.acls, p.next.acls)
				t.NodeACLs = append(t.NodeACLs, a)
				return ok
			})
		}
		return s.extra(&t.Extra, key)
	})
	return t, ok
}

func (p *fastParser) storageObject() (StorageObject, bool) {
	decoded := p.c.decoded
	so, ok := cached(p, p.c.cur.objects, p.next.objects)
	if ok && p.c.decoded != decoded { // new: share its blobs with the others
		stored := p.next.objects[p.lastKey]
		stored.Attributes = p.c.intern(stored.Attributes)
		stored.ALUATPGs = p.c.intern(stored.ALUATPGs)
		so = *stored
	}
	return so, ok
}

// intern returns the kept copy of blob, keeping blob if it is new. The set
// starts again when it holds far more blobs than the file has objects.
func (c *parseCache) intern(blob json.RawMessage) json.RawMessage {
	if blob == nil {
		return nil
	}
	if kept, ok := c.blobs[string(blob)]; ok {
		return kept
	}
	if c.blobs == nil || len(c.blobs) > 2*len(c.cur.objects)+64 {
		c.blobs = map[string]json.RawMessage{}
	}
	c.blobs[string(blob)] = blob
	return blob
}

// cached reads the next array element and returns the value decoded from
// the same bytes by an earlier parse, or decodes it now. Values are shared
// between parses: like every Config from SavedFile, treat them as read-only.
func cached[T any, PT interface {
	*T
	json.Unmarshaler
}](p *fastParser, cur, next map[elemKey]*T) (T, bool) {
	var zero T
	raw, ok := p.s.element()
	if !ok {
		return zero, false
	}
	k := p.c.key(raw)
	p.lastKey = k
	v, hit := cur[k]
	if !hit {
		if v, hit = next[k]; !hit {
			v = new(T)
			if PT(v).UnmarshalJSON(raw) != nil {
				return zero, false
			}
			p.c.decoded++
		}
	}
	next[k] = v
	return *v, true
}

// scanner walks a JSON document. It checks the structure it walks (braces,
// colons, commas, keys); every value it returns is checked by the decoder
// it is handed to.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next byte after white space, 0 at the end.
func (s *scanner) peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) eat(c byte) bool {
	if s.peek() == c {
		s.i++
		return true
	}
	return false
}

// end reports whether nothing but white space is left.
func (s *scanner) end() bool { return s.peek() == 0 && s.i == len(s.b) }

// object walks the members of an object, calling member with s positioned
// on each value; member must consume it. A key seen twice gives up:
// Parse keeps the last, which the walk cannot undo.
func (s *scanner) object(member func(key string) bool) bool {
	if !s.eat('{') {
		return false
	}
	if s.eat('}') {
		return true
	}
	seen := make(map[string]bool, 8)
	for {
		key, ok := s.key()
		if !ok || seen[key] || !s.eat(':') {
			return false
		}
		seen[key] = true
		if !member(key) {
			return false
		}
		switch {
		case s.eat(','):
		case s.eat('}'):
			return true
		default:
			return false
		}
	}
}

// array walks the elements of an array (a null is not one: Parse gives a
// nil slice, the walk gives up).
func (s *scanner) array(elem func() bool) bool {
	if !s.eat('[') {
		return false
	}
	if s.eat(']') {
		return true
	}
	for {
		if !elem() {
			return false
		}
		switch {
		case s.eat(','):
		case s.eat(']'):
			return true
		default:
			return false
		}
	}
}

// key reads an object key. Keys of plain printable ASCII are taken as they
// are; any other is unquoted by encoding/json, as Parse does.
func (s *scanner) key() (string, bool) {
	raw, ok := s.str()
	if !ok {
		return "", false
	}
	inner := raw[1 : len(raw)-1]
	plain := true
	for _, c := range inner {
		if c < 0x20 || c >= 0x7f || c == '\\' {
			plain = false
			break
		}
	}
	if plain {
		return string(inner), true
	}
	var k string
	if json.Unmarshal(raw, &k) != nil {
		return "", false
	}
	return k, true
}

// str returns the bytes of the string token at s, quotes included.
func (s *scanner) str() ([]byte, bool) {
	if s.peek() != '"' {
		return nil, false
	}
	start := s.i
	j := start + 1
	for {
		k := bytes.IndexByte(s.b[j:], '"')
		if k < 0 {
			return nil, false
		}
		j += k
		backslashes := 0
		for q := j - 1; q > start && s.b[q] == '\\'; q-- {
			backslashes++
		}
		if backslashes%2 == 0 {
			break
		}
		j++
	}
	s.i = j + 1
	return s.b[start:s.i], true
}

// value returns the bytes of the next value, found by its extent only.
func (s *scanner) value() ([]byte, bool) {
	switch c := s.peek(); c {
	case 0:
		return nil, false
	case '"':
		return s.str()
	case '{', '[':
		start, depth := s.i, 0
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case '"':
				if _, ok := s.str(); !ok {
					return nil, false
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					s.i++
					return s.b[start:s.i], true
				}
			}
			s.i++
		}
		return nil, false
	default:
		start := s.i
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return s.b[start:s.i], s.i > start
			}
			s.i++
		}
		return s.b[start:s.i], true
	}
}

// element returns the next array element. rtslib writes the file indented
// by two spaces a level, so an object that opens a line with its brace
// alone ends at the first line holding only its closing brace at the same
// indentation: found with a byte search instead of a walk through every
// byte. If the layout is different, the bytes found are not one object and
// their decoder rejects them; a cache hit means the same bytes decoded
// before, so they are the whole object.
func (s *scanner) element() ([]byte, bool) {
	if s.peek() != '{' {
		return s.value()
	}
	start := s.i
	lineStart := bytes.LastIndexByte(s.b[:start], '\n') + 1
	indent := s.b[lineStart:start]
	if !spaces(indent) || start+1 >= len(s.b) || s.b[start+1] != '\n' {
		return s.value()
	}
	for j := start + 1; ; j++ {
		k := bytes.IndexByte(s.b[j:], '}')
		if k < 0 {
			return nil, false
		}
		j += k
		ls := j - len(indent) - 1
		if ls > start && s.b[ls] == '\n' && spaces(s.b[ls+1:j]) {
			s.i = j + 1
			return s.b[start:s.i], true
		}
	}
}

func spaces(b []byte) bool {
	for _, c := range b {
		if c != ' ' {
			return false
		}
	}
	return true
}

// decode reads the next value into v with encoding/json, as Parse would.
func (s *scanner) decode(v any) bool {
	raw, ok := s.value()
	return ok && json.Unmarshal(raw, v) == nil
}

// extra keeps the next value, checked and copied, under key in *m.
func (s *scanner) extra(m *map[string]json.RawMessage, key string) bool {
	raw, ok := s.value()
	if !ok || !json.Valid(raw) {
		return false
	}
	if *m == nil {
		*m = map[string]json.RawMessage{}
	}
	(*m)[key] = bytes.Clone(raw)
	return true
}
