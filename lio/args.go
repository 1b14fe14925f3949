package lio

import (
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ErrUnsafeArgument is wrapped by every ArgError: a name, path, IQN or wwn
// that could not be put on a targetcli command line exactly as it is.
var ErrUnsafeArgument = errors.New("argument is not safe for a targetcli command line")

// Length limits. targetcli itself checks none of them; the kernel cuts or
// refuses longer values, so a longer value would not mean what it says.
const (
	// MaxNameLen: a backstore name is a configfs directory name (NAME_MAX).
	MaxNameLen = 255
	// MaxPathLen: the kernel keeps a fileio path in fd_dev_name[256]
	// (FD_MAX_DEV_NAME, NUL included) and silently truncates a longer one.
	MaxPathLen = 255
	// MaxWWNLen: the kernel refuses a vpd_unit_serial of
	// INQUIRY_VPD_SERIAL_LEN (254) bytes or more.
	MaxWWNLen = 253
	// MaxIQNLen: RFC 3720 §3.2.6.1 limits an iSCSI name to 223 bytes.
	MaxIQNLen = 223
	// MaxTPGTag and MaxLUN: a TPG tag is a 16-bit number from 1; LUN
	// indexes are 0–65535.
	MaxTPGTag = 65535
	MaxLUN    = 65535
)

// ArgError says which value was refused and why. When a character is at
// fault, Char and Offset name it.
type ArgError struct {
	What   string // "backstore name", "image path", "target IQN", "wwn", ...
	Value  string
	Char   rune // the first refused character, or 0 when the reason is not a character
	Offset int  // byte offset of Char in Value
	Reason string
}

func (e *ArgError) Error() string {
	if e.Char != 0 {
		return fmt.Sprintf("refusing %s %q: character %q (%U) at byte %d is not allowed (%s); "+
			"targetcli has no quoting and would cut or split the command there, so rename the object",
			e.What, e.Value, e.Char, e.Char, e.Offset, e.Reason)
	}
	return fmt.Sprintf("refusing %s %q: %s", e.What, e.Value, e.Reason)
}

// Unwrap makes errors.Is(err, ErrUnsafeArgument) true.
func (e *ArgError) Unwrap() error { return ErrUnsafeArgument }

// charset is an allowlist of ASCII bytes.
type charset struct {
	desc string
	ok   [128]bool
}

func newCharset(desc, extra string, letters, upper, digits bool) *charset {
	cs := &charset{desc: "allowed: " + desc}
	for c := 0; c < 128; c++ {
		switch {
		case letters && c >= 'a' && c <= 'z',
			upper && c >= 'A' && c <= 'Z',
			digits && c >= '0' && c <= '9':
			cs.ok[c] = true
		}
	}
	for _, c := range extra {
		cs.ok[c] = true
	}
	return cs
}

// The allowlists. Each is a strict subset of what configshell accepts in the
// position the value takes (see grammar.go), without '%' (targetclid's
// command separator), '=' (would turn a value into key=value) and ',' (a
// common separator in other tools).
var (
	nameChars = newCharset("A-Z a-z 0-9 . _ -", "._-", true, true, true)
	pathChars = newCharset("A-Z a-z 0-9 . _ / + -", "._/+-", true, true, true)
	wwnChars  = newCharset("a-f 0-9 -", "abcdef-", false, false, true)
	iqnChars  = newCharset("a-z 0-9 . : -", ".:-", true, false, true)
)

func checkChars(what, v string, cs *charset) error {
	for i, r := range v {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(v[i:]); size == 1 {
				return &ArgError{What: what, Value: v, Char: utf8.RuneError, Offset: i, Reason: "invalid UTF-8; " + cs.desc}
			}
		}
		if r >= 128 || !cs.ok[r] {
			return &ArgError{What: what, Value: v, Char: r, Offset: i, Reason: cs.desc}
		}
	}
	return nil
}

func checkLen(what, v string, max int) error {
	if v == "" {
		return &ArgError{What: what, Value: v, Reason: "it is empty"}
	}
	if len(v) > max {
		return &ArgError{What: what, Value: v, Reason: fmt.Sprintf("it is %d bytes long, the limit is %d", len(v), max)}
	}
	return nil
}

// CheckName reports whether name can be a fileio backstore name on a
// targetcli command line: 1–255 characters from A-Z a-z 0-9 . _ -, not
// starting with '.' or '-'.
func CheckName(name string) error {
	const what = "backstore name"
	if err := checkLen(what, name, MaxNameLen); err != nil {
		return err
	}
	if err := checkChars(what, name, nameChars); err != nil {
		return err
	}
	if name[0] == '.' || name[0] == '-' {
		return &ArgError{What: what, Value: name, Reason: "it starts with '" + name[:1] + "' (\".\" and \"..\" are tree navigation in targetcli)"}
	}
	return nil
}

// CheckPath reports whether p can be a fileio backing file on a targetcli
// command line: absolute, already clean (no "..", ".", "//" or trailing
// "/"), at most 255 bytes, characters from A-Z a-z 0-9 . _ / + - only.
func CheckPath(p string) error {
	const what = "image path"
	if err := checkLen(what, p, MaxPathLen); err != nil {
		return err
	}
	if err := checkChars(what, p, pathChars); err != nil {
		return err
	}
	if p[0] != '/' {
		return &ArgError{What: what, Value: p, Reason: "it is not absolute"}
	}
	if c := path.Clean(p); c != p {
		return &ArgError{What: what, Value: p, Reason: fmt.Sprintf("it is not clean (it would mean %q); \"..\", \".\", \"//\" and a trailing \"/\" are refused", c)}
	}
	if p == "/" {
		return &ArgError{What: what, Value: p, Reason: "it is the root directory"}
	}
	return nil
}

// CheckWWN reports whether wwn can be a backstore's unit serial on a
// targetcli command line: 1–253 characters from a-f 0-9 -.
func CheckWWN(wwn string) error {
	const what = "wwn"
	if err := checkLen(what, wwn, MaxWWNLen); err != nil {
		return err
	}
	return checkChars(what, wwn, wwnChars)
}

// CheckIQN reports whether iqn can name an iSCSI target on a targetcli
// command line: "iqn.YYYY-MM.<naming authority>[:<unique part>]", at most 223
// characters from a-z 0-9 . : - (lower case: rtslib lowers IQNs, so an
// upper-case one would name a different target path).
func CheckIQN(iqn string) error {
	const what = "target IQN"
	if err := checkLen(what, iqn, MaxIQNLen); err != nil {
		return err
	}
	if err := checkChars(what, iqn, iqnChars); err != nil {
		return err
	}
	// iqn.YYYY-MM.x
	ok := len(iqn) > len("iqn.2000-01.") && strings.HasPrefix(iqn, "iqn.") && iqn[8] == '-' && iqn[11] == '.'
	if ok {
		for _, i := range []int{4, 5, 6, 7, 9, 10} {
			ok = ok && iqn[i] >= '0' && iqn[i] <= '9'
		}
	}
	if !ok {
		return &ArgError{What: what, Value: iqn, Reason: `it is not of the form "iqn.YYYY-MM.<naming authority>[:<unique part>]"`}
	}
	return nil
}

// Validate checks every field of op that would reach a targetcli command
// line. It returns an *ArgError (wrapping ErrUnsafeArgument) for the first
// refused value, or a plain error for an unknown kind or a number out of
// range.
func Validate(op Op) error {
	_, err := commandFor(op)
	return err
}

// line is a targetcli command line as configshell tokenizes it:
// [PATH] [COMMAND] [pparam]... [key=value]...
type line struct {
	Path    string
	Command string
	PParams []string
	KParams []kparam
}

type kparam struct{ Key, Value string }

// String renders the line for targetcli: tokens joined by single spaces.
func (l line) String() string {
	tokens := make([]string, 0, 2+len(l.PParams)+len(l.KParams))
	for _, t := range []string{l.Path, l.Command} {
		if t != "" {
			tokens = append(tokens, t)
		}
	}
	tokens = append(tokens, l.PParams...)
	for _, kv := range l.KParams {
		tokens = append(tokens, kv.Key+"="+kv.Value)
	}
	return strings.Join(tokens, " ")
}

func checkTPG(op Op) error {
	if err := CheckIQN(op.Target); err != nil {
		return err
	}
	if tag := op.TPGTag(); tag < 1 || tag > MaxTPGTag {
		return fmt.Errorf("refusing TPG tag %d for %s: want 1–%d", tag, op.Target, MaxTPGTag)
	}
	return nil
}

func tpgPath(op Op) string { return "/iscsi/" + op.Target + "/tpg" + strconv.Itoa(op.TPGTag()) }

// commandFor checks op and builds its targetcli command. Nothing is built
// from a value that failed its check.
func commandFor(op Op) (line, error) {
	var l line
	var err error
	switch op.Kind {
	case CreateBackstore:
		l, err = createBackstoreLine(op)
	case DeleteBackstore:
		l, err = deleteBackstoreLine(op)
	case CreateLUN:
		l, err = createLUNLine(op)
	case DeleteLUN:
		l, err = deleteLUNLine(op)
	case EnableTPG, DisableTPG:
		l, err = tpgEnableLine(op)
	default:
		return line{}, fmt.Errorf("unknown LIO operation kind %q", op.Kind)
	}
	if err != nil {
		return line{}, err
	}
	// Defence in depth: targetcli must read back exactly these tokens.
	if err := l.verify(); err != nil {
		return line{}, err
	}
	return l, nil
}

func createBackstoreLine(op Op) (line, error) {
	if err := CheckName(op.Backstore); err != nil {
		return line{}, err
	}
	if err := CheckPath(op.File); err != nil {
		return line{}, err
	}
	if err := CheckWWN(op.WWN); err != nil {
		return line{}, err
	}
	// No size: an existing file's real size is used, and a missing
	// file fails instead of being created.
	return line{Path: "/backstores/fileio", Command: "create",
		PParams: []string{op.Backstore, op.File},
		KParams: []kparam{{"write_back", "false"}, {"wwn", op.WWN}}}, nil
}

func deleteBackstoreLine(op Op) (line, error) {
	if err := CheckName(op.Backstore); err != nil {
		return line{}, err
	}
	return line{Path: "/backstores/fileio", Command: "delete", PParams: []string{op.Backstore}}, nil
}

func createLUNLine(op Op) (line, error) {
	if err := CheckName(op.Backstore); err != nil {
		return line{}, err
	}
	if err := checkTPG(op); err != nil {
		return line{}, err
	}
	l := line{Path: tpgPath(op) + "/luns", Command: "create", PParams: []string{"/backstores/fileio/" + op.Backstore}}
	switch {
	case op.LUN == AutoLUN:
	case op.LUN >= 0 && op.LUN <= MaxLUN:
		l.KParams = append(l.KParams, kparam{"lun", strconv.Itoa(op.LUN)})
	default:
		return line{}, fmt.Errorf("refusing LUN index %d for %s: want 0–%d or AutoLUN", op.LUN, op.Backstore, MaxLUN)
	}
	l.KParams = append(l.KParams, kparam{"add_mapped_luns", "false"})
	return l, nil
}

func deleteLUNLine(op Op) (line, error) {
	if err := checkTPG(op); err != nil {
		return line{}, err
	}
	if op.LUN < 0 || op.LUN > MaxLUN {
		return line{}, fmt.Errorf("refusing LUN index %d to delete in %s: want 0–%d", op.LUN, op.Target, MaxLUN)
	}
	return line{Path: tpgPath(op) + "/luns", Command: "delete", KParams: []kparam{{"lun", strconv.Itoa(op.LUN)}}}, nil
}

// tpgEnableLine builds "enable" or "disable" on the TPG, by op.Kind.
func tpgEnableLine(op Op) (line, error) {
	if err := checkTPG(op); err != nil {
		return line{}, err
	}
	cmd := "enable"
	if op.Kind == DisableTPG {
		cmd = "disable"
	}
	return line{Path: tpgPath(op), Command: cmd}, nil
}

// saveCommand builds "saveconfig <file>".
func saveCommand(file string) (line, error) {
	if err := CheckPath(file); err != nil {
		return line{}, fmt.Errorf("saveconfig file: %w", err)
	}
	l := line{Command: "saveconfig", PParams: []string{file}}
	if err := l.verify(); err != nil {
		return line{}, err
	}
	return l, nil
}

// verify parses the rendered line with the model of configshell's grammar
// and fails unless it yields exactly l's tokens and consumes the whole line.
func (l line) verify() error {
	s := l.String()
	if strings.ContainsAny(s, "\n\r%") {
		return fmt.Errorf("%w: command %q contains a line or request separator", ErrUnsafeArgument, s)
	}
	got, rest := parseLine(s)
	if rest != "" {
		return fmt.Errorf("%w: targetcli would silently drop %q from %q", ErrUnsafeArgument, rest, s)
	}
	if !got.equal(l) {
		return fmt.Errorf("%w: targetcli would read %q as %+v, not %+v", ErrUnsafeArgument, s, got, l)
	}
	return nil
}

func (l line) equal(o line) bool {
	if l.Path != o.Path || l.Command != o.Command || len(l.PParams) != len(o.PParams) || len(l.KParams) != len(o.KParams) {
		return false
	}
	for i := range l.PParams {
		if l.PParams[i] != o.PParams[i] {
			return false
		}
	}
	for i := range l.KParams {
		if l.KParams[i] != o.KParams[i] {
			return false
		}
	}
	return true
}
