package lio

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"sync"
)

// ErrIncomplete means saveconfig.json was empty or ended early. rtslib 2.1.75
// rewrites the file in place, so a reader can catch it half-written; retry
// after a short wait. It never means "no LUNs".
var ErrIncomplete = errors.New("saveconfig.json is empty or half-written (rtslib rewrites it in place); retry shortly")

// Config is the content of saveconfig.json as rtslib writes it.
// Fields this model does not name are kept in Extra and written back unchanged.
//
// The fields of every type here are in the order of their JSON names, the
// order rtslib writes them: Marshal then encodes a value without Extra
// directly, without sorting through a map.
type Config struct {
	FabricModules  []json.RawMessage `json:"fabric_modules"`
	StorageObjects []StorageObject   `json:"storage_objects"`
	Targets        []Target          `json:"targets"`

	Extra map[string]json.RawMessage `json:"-"`
}

// StorageObject is one backstore. Optional scalars are pointers so that a
// field absent from the file stays absent when the file is written again.
type StorageObject struct {
	AIO *bool `json:"aio,omitempty"`
	// ALUATPGs and Attributes are kept as raw JSON: the agent rarely reads
	// them, and decoding ~40 attributes per object dominated the cost of
	// reading a large saveconfig.json. Attr decodes one on demand.
	ALUATPGs   json.RawMessage `json:"alua_tpgs"`
	Attributes json.RawMessage `json:"attributes"`
	Dev        string          `json:"dev,omitempty"`
	Name       string          `json:"name"`
	Plugin     string          `json:"plugin"`
	Readonly   *bool           `json:"readonly,omitempty"`
	Size       *int64          `json:"size,omitempty"`
	WriteBack  *bool           `json:"write_back,omitempty"`
	WWN        string          `json:"wwn"`

	Extra map[string]json.RawMessage `json:"-"`
}

// Target is one fabric target, for iSCSI an IQN.
type Target struct {
	Fabric string `json:"fabric"`
	TPGs   []TPG  `json:"tpgs"`
	WWN    string `json:"wwn"`

	Extra map[string]json.RawMessage `json:"-"`
}

// TPG is a target portal group.
type TPG struct {
	Attributes map[string]json.RawMessage `json:"attributes"`
	Enable     Flag                       `json:"enable"`
	LUNs       []LUN                      `json:"luns"`
	NodeACLs   []NodeACL                  `json:"node_acls"`
	Parameters map[string]string          `json:"parameters"`
	Portals    []json.RawMessage          `json:"portals"`
	Tag        int                        `json:"tag"`

	Extra map[string]json.RawMessage `json:"-"`
}

// LUN is one logical unit of a TPG.
type LUN struct {
	Alias         string `json:"alias,omitempty"`
	ALUAGroup     string `json:"alua_tg_pt_gp_name,omitempty"`
	Index         int    `json:"index"`
	StorageObject string `json:"storage_object"` // "/backstores/<plugin>/<name>"

	Extra map[string]json.RawMessage `json:"-"`
}

// NodeACL is an initiator's ACL in a TPG.
type NodeACL struct {
	MappedLUNs []MappedLUN `json:"mapped_luns"`
	NodeWWN    string      `json:"node_wwn"`

	Extra map[string]json.RawMessage `json:"-"`
}

// MappedLUN maps a TPG LUN into a node ACL.
type MappedLUN struct {
	Index        int  `json:"index"`
	TPGLUN       int  `json:"tpg_lun"`
	WriteProtect bool `json:"write_protect"`

	Extra map[string]json.RawMessage `json:"-"`
}

// Flag is a boolean that old rtslib releases wrote as 0/1 and newer ones as
// false/true. It is written back as a JSON boolean.
type Flag bool

func (f *Flag) UnmarshalJSON(b []byte) error {
	switch string(bytes.TrimSpace(b)) {
	case "true", "1":
		*f = true
	case "false", "0", "null":
		*f = false
	default:
		return fmt.Errorf("want a boolean or 0/1, got %s", b)
	}
	return nil
}

// Parse decodes saveconfig.json. Empty or truncated input yields an error
// wrapping ErrIncomplete; any other malformation yields a descriptive error.
func Parse(data []byte) (*Config, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, ErrIncomplete
	}
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) && syn.Offset >= int64(len(bytes.TrimRight(data, " \t\r\n"))) {
			return nil, fmt.Errorf("%w (%v)", ErrIncomplete, err)
		}
		if strings.Contains(err.Error(), "unexpected end of JSON input") {
			return nil, fmt.Errorf("%w (%v)", ErrIncomplete, err)
		}
		return nil, fmt.Errorf("saveconfig.json is not valid rtslib JSON: %w", err)
	}
	return &c, nil
}

// Load reads and parses the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read LIO saved state: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Marshal encodes c the way rtslib does: keys sorted, two-space indent,
// trailing newline.
func Marshal(c *Config) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(c); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// FileIO returns the fileio storage object with the given name. A nil
// Config has none.
func (c *Config) FileIO(name string) (*StorageObject, bool) {
	if c == nil {
		return nil, false
	}
	for i := range c.StorageObjects {
		so := &c.StorageObjects[i]
		if so.Plugin == "fileio" && so.Name == name {
			return so, true
		}
	}
	return nil, false
}

// Target returns the target with the given WWN (IQN for iSCSI). A nil
// Config has none.
func (c *Config) Target(wwn string) (*Target, bool) {
	if c == nil {
		return nil, false
	}
	for i := range c.Targets {
		if c.Targets[i].WWN == wwn {
			return &c.Targets[i], true
		}
	}
	return nil, false
}

// TPG returns TPG tag of the target with the given WWN, if both exist.
func (c *Config) TPG(wwn string, tag int) (*TPG, bool) {
	t, ok := c.Target(wwn)
	if !ok {
		return nil, false
	}
	return t.TPG(tag)
}

// TPG returns the TPG with the given tag.
func (t *Target) TPG(tag int) (*TPG, bool) {
	for i := range t.TPGs {
		if t.TPGs[i].Tag == tag {
			return &t.TPGs[i], true
		}
	}
	return nil, false
}

// Attr returns an integer attribute of the TPG.
func (t *TPG) Attr(name string) (int64, bool) { return intAttr(t.Attributes, name) }

// Attr returns an integer attribute of the storage object.
func (so *StorageObject) Attr(name string) (int64, bool) {
	var m map[string]json.RawMessage
	if json.Unmarshal(so.Attributes, &m) != nil {
		return 0, false
	}
	return intAttr(m, name)
}

// SizeBytes returns the size, or -1 when the object has none.
func (so *StorageObject) SizeBytes() int64 {
	if so.Size == nil {
		return -1
	}
	return *so.Size
}

// Path returns the configfs-style path targetcli uses for the object.
func (so *StorageObject) Path() string { return "/backstores/" + so.Plugin + "/" + so.Name }

// LUNFor returns the LUN of the TPG backed by the storage object at soPath.
func (t *TPG) LUNFor(soPath string) (*LUN, bool) {
	for i := range t.LUNs {
		if t.LUNs[i].StorageObject == soPath {
			return &t.LUNs[i], true
		}
	}
	return nil, false
}

// LUNsByObject indexes the TPG's LUNs by storage object path, for callers
// that look up many.
func (t *TPG) LUNsByObject() map[string]*LUN {
	m := make(map[string]*LUN, len(t.LUNs))
	for i := range t.LUNs {
		m[t.LUNs[i].StorageObject] = &t.LUNs[i]
	}
	return m
}

func intAttr(m map[string]json.RawMessage, name string) (int64, bool) {
	raw, ok := m[name]
	if !ok {
		return 0, false
	}
	var v int64
	if err := json.Unmarshal(raw, &v); err != nil {
		var b bool
		if json.Unmarshal(raw, &b) == nil {
			if b {
				return 1, true
			}
			return 0, true
		}
		return 0, false
	}
	return v, true
}

// The methods below keep unknown fields: each type decodes its known fields
// through an alias type and stores the remaining keys in Extra.

func (c *Config) UnmarshalJSON(b []byte) error {
	type plain Config
	return unmarshalKeeping(b, (*plain)(c), &c.Extra)
}
func (c Config) MarshalJSON() ([]byte, error) {
	type plain Config
	return marshalKeeping(plain(c), c.Extra)
}

// UnmarshalJSON decodes each field once: a saveconfig.json holds one
// storage object per image, and the generic keeping decoder was the cost
// of reading a large file.
func (so *StorageObject) UnmarshalJSON(b []byte) error {
	*so = StorageObject{}
	extra, err := decodeFields(b, "storage object", func(k string, raw json.RawMessage) (bool, error) {
		switch k {
		case "plugin":
			return true, json.Unmarshal(raw, &so.Plugin)
		case "name":
			return true, json.Unmarshal(raw, &so.Name)
		case "dev":
			return true, json.Unmarshal(raw, &so.Dev)
		case "wwn":
			return true, json.Unmarshal(raw, &so.WWN)
		case "size":
			return true, json.Unmarshal(raw, &so.Size)
		case "write_back":
			return true, json.Unmarshal(raw, &so.WriteBack)
		case "aio":
			return true, json.Unmarshal(raw, &so.AIO)
		case "readonly":
			return true, json.Unmarshal(raw, &so.Readonly)
		case "attributes":
			so.Attributes = raw
			return true, nil
		case "alua_tpgs":
			so.ALUATPGs = raw
			return true, nil
		}
		return false, nil
	})
	so.Extra = extra
	return err
}

// decodeFields splits a JSON object into its members and hands each to
// field, which decodes the ones it knows; the others are returned.
func decodeFields(b []byte, what string, field func(key string, raw json.RawMessage) (known bool, err error)) (map[string]json.RawMessage, error) {
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return nil, err
	}
	if all == nil {
		return nil, fmt.Errorf("%s: want a JSON object, got %s", what, truncate(b))
	}
	for k, raw := range all {
		known, err := field(k, raw)
		if err != nil {
			return nil, fmt.Errorf("%s field %q: %w", what, k, err)
		}
		if known {
			delete(all, k)
		}
	}
	if len(all) == 0 {
		return nil, nil
	}
	return all, nil
}

func (so StorageObject) MarshalJSON() ([]byte, error) {
	type plain StorageObject
	return marshalKeeping(plain(so), so.Extra)
}
func (t *Target) UnmarshalJSON(b []byte) error {
	type plain Target
	return unmarshalKeeping(b, (*plain)(t), &t.Extra)
}
func (t Target) MarshalJSON() ([]byte, error) {
	type plain Target
	return marshalKeeping(plain(t), t.Extra)
}
func (t *TPG) UnmarshalJSON(b []byte) error {
	type plain TPG
	return unmarshalKeeping(b, (*plain)(t), &t.Extra)
}
func (t TPG) MarshalJSON() ([]byte, error) {
	type plain TPG
	return marshalKeeping(plain(t), t.Extra)
}

// UnmarshalJSON decodes each field once, like StorageObject's: one LUN per image.
func (l *LUN) UnmarshalJSON(b []byte) error {
	*l = LUN{}
	extra, err := decodeFields(b, "LUN", func(k string, raw json.RawMessage) (bool, error) {
		switch k {
		case "index":
			return true, json.Unmarshal(raw, &l.Index)
		case "storage_object":
			return true, json.Unmarshal(raw, &l.StorageObject)
		case "alias":
			return true, json.Unmarshal(raw, &l.Alias)
		case "alua_tg_pt_gp_name":
			return true, json.Unmarshal(raw, &l.ALUAGroup)
		}
		return false, nil
	})
	l.Extra = extra
	return err
}

func (l LUN) MarshalJSON() ([]byte, error) {
	type plain LUN
	return marshalKeeping(plain(l), l.Extra)
}
func (a *NodeACL) UnmarshalJSON(b []byte) error {
	type plain NodeACL
	return unmarshalKeeping(b, (*plain)(a), &a.Extra)
}
func (a NodeACL) MarshalJSON() ([]byte, error) {
	type plain NodeACL
	return marshalKeeping(plain(a), a.Extra)
}
func (m *MappedLUN) UnmarshalJSON(b []byte) error {
	type plain MappedLUN
	return unmarshalKeeping(b, (*plain)(m), &m.Extra)
}
func (m MappedLUN) MarshalJSON() ([]byte, error) {
	type plain MappedLUN
	return marshalKeeping(plain(m), m.Extra)
}

func unmarshalKeeping(b []byte, known any, extra *map[string]json.RawMessage) error {
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return err
	}
	if all == nil {
		return fmt.Errorf("want a JSON object, got %s", truncate(b))
	}
	// Decode each known field from its own bytes, so that nested content is
	// parsed once per level rather than twice.
	v := reflect.ValueOf(known).Elem()
	for _, f := range fieldsOf(v.Type()) {
		raw, ok := all[f.name]
		if !ok {
			continue
		}
		delete(all, f.name)
		if err := json.Unmarshal(raw, v.Field(f.index).Addr().Interface()); err != nil {
			return fmt.Errorf("field %q: %w", f.name, err)
		}
	}
	if len(all) > 0 {
		*extra = all
	} else {
		*extra = nil
	}
	return nil
}

func marshalKeeping(known any, extra map[string]json.RawMessage) ([]byte, error) {
	b, err := json.Marshal(known)
	if err != nil || len(extra) == 0 {
		return b, err // fields in JSON-name order: sorted as they are
	}
	// Through a map, so that keys come out sorted as rtslib writes them.
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return nil, err
	}
	for k, v := range extra {
		if _, dup := all[k]; !dup {
			all[k] = v
		}
	}
	return json.Marshal(all)
}

type field struct {
	name  string
	index int
}

var fieldCache sync.Map // reflect.Type -> []field

// fieldsOf lists the JSON-named fields of struct type t.
func fieldsOf(t reflect.Type) []field {
	if v, ok := fieldCache.Load(t); ok {
		return v.([]field)
	}
	var fields []field
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name == "-" || name == "" {
			continue
		}
		fields = append(fields, field{name: name, index: i})
	}
	fieldCache.Store(t, fields)
	return fields
}

func truncate(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "…"
	}
	return string(b)
}
