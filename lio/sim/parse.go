package sim

import "strings"

// cmdline is one parsed targetcli command line, as configshell's pyparsing
// grammar yields it:
//
//	[path] [command] [pparam | keyword=value]...
//
// There is no quoting or escaping. Parsing stops silently at the first
// character no rule accepts, and everything from there on is dropped.
type cmdline struct {
	Path    string
	Command string
	PParams []string
	KParams map[string]string
	KOrder  []string // keywords in order of first appearance
}

const (
	// valueChars are configshell's value characters besides letters and
	// digits (`alphanums + '?;&*$!#,=_\+/.<>()~@:-%[]'`).
	valueChars = `?;&*$!#,=_\+/.<>()~@:-%[]`
	// keywordChars are a keyword's characters besides letters and digits
	// (`alphanums + r'_\-'`, which includes the backslash).
	keywordChars = `_\-`
	// pathChars are the characters of configshell's path regex besides
	// letters and digits.
	pathChars = `:_.[]-`
)

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func isValueChar(c byte) bool   { return isAlnum(c) || strings.IndexByte(valueChars, c) >= 0 }
func isKeywordChar(c byte) bool { return isAlnum(c) || strings.IndexByte(keywordChars, c) >= 0 }
func isPathChar(c byte) bool    { return isAlnum(c) || strings.IndexByte(pathChars, c) >= 0 }
func isCommandChar(c byte) bool { return isAlnum(c) || c == '_' }
func isSpace(c byte) bool       { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func run(s string, i int, ok func(byte) bool) int {
	for i < len(s) && ok(s[i]) {
		i++
	}
	return i
}

func skipSpace(s string, i int) int { return run(s, i, isSpace) }

// parseLine parses line with configshell's grammar.
func parseLine(line string) cmdline {
	var c cmdline
	i := skipSpace(line, 0)

	// Path: bookmark | path regex | '..' | '.' | '*'.
	switch {
	case i < len(line) && line[i] == '@' && i+1 < len(line) && isBookmarkChar(line[i+1]):
		j := run(line, i+1, isBookmarkChar)
		c.Path, i = line[i:j], j
	default:
		j := run(line, i, isPathChar)
		if j < len(line) && line[j] == '/' {
			j = run(line, j+1, func(b byte) bool { return isPathChar(b) || b == '/' })
			c.Path, i = line[i:j], j
		} else if strings.HasPrefix(line[i:], "..") {
			c.Path, i = "..", i+2
		} else if strings.HasPrefix(line[i:], ".") {
			c.Path, i = ".", i+1
		} else if strings.HasPrefix(line[i:], "*") {
			c.Path, i = "*", i+1
		}
	}

	// Command.
	i = skipSpace(line, i)
	if j := run(line, i, isCommandChar); j > i {
		c.Command, i = line[i:j], j
	}

	// Parameters: keyword=value is tried first, then a positional value.
	for {
		i = skipSpace(line, i)
		if i >= len(line) {
			break
		}
		if k, v, j, ok := parseKParam(line, i); ok {
			if c.KParams == nil {
				c.KParams = map[string]string{}
			}
			if _, dup := c.KParams[k]; !dup {
				c.KOrder = append(c.KOrder, k)
			}
			c.KParams[k] = v
			i = j
			continue
		}
		j := run(line, i, isValueChar)
		if j == i {
			break // illegal character: the rest of the line is dropped
		}
		c.PParams = append(c.PParams, line[i:j])
		i = j
	}
	return c
}

func isBookmarkChar(c byte) bool { return isAlnum(c) || strings.IndexByte(":_.-", c) >= 0 }

// parseKParam matches `keyword = [value]`; pyparsing skips whitespace
// between the three parts, so "a = b" is a=b and "a= b=c" is a="b=c".
func parseKParam(s string, i int) (key, val string, next int, ok bool) {
	j := run(s, i, isKeywordChar)
	if j == i {
		return "", "", i, false
	}
	key = s[i:j]
	j = skipSpace(s, j)
	if j >= len(s) || s[j] != '=' {
		return "", "", i, false
	}
	j = skipSpace(s, j+1)
	k := run(s, j, isValueChar)
	if k == j {
		// Optional(value, default=''): no value; pyparsing leaves the
		// position before the skipped whitespace, which is harmless.
		return key, "", j, true
	}
	return key, s[j:k], k, true
}
