package lio

import "strings"

// This file models how configshell (the shell under targetcli) tokenizes a
// command line, so that the checks in args.go can be tested against it and
// every built command is read back before it is sent. configshell builds
// this pyparsing grammar (configshell/shell.py, ConfigShell.__init__):
//
//	command  = Word(alphanums + '_')
//	var      = Word(alphanums + r'?;&*$!#,=_\+/.<>()~@:-%[]')
//	keyword  = Word(alphanums + r'_\-')
//	kparam   = keyword + Suppress('=') + Optional(var, default='')
//	pparam   = var
//	bookmark = Regex('@([A-Za-z0-9:_.]|-)+')
//	pathstd  = Regex(r'([A-Za-z0-9:_.\[\]]|-)*/([A-Za-z0-9:_.\[\]/]|-)*') | '..' | '.'
//	path     = bookmark | pathstd | '*'
//	line     = Optional(path) + Optional(command) + Optional(OneOrMore(kparam | pparam))
//
// parsed with parseString and no parseAll: whitespace (" \t\n\r") is skipped
// before every element, and whatever does not parse is silently dropped.

const (
	alnum        = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	commandSet   = alnum + "_"
	varSet       = alnum + `?;&*$!#,=_\+/.<>()~@:-%[]`
	keywordSet   = alnum + `_\-`
	bookmarkSet  = alnum + ":_.-"
	pathHeadSet  = alnum + ":_.[]-"
	pathTailSet  = pathHeadSet + "/"
	pyWhitespace = " \t\n\r"
)

// span returns the length of the longest prefix of s made of bytes in set.
func span(s, set string) int {
	i := 0
	for i < len(s) && strings.IndexByte(set, s[i]) >= 0 {
		i++
	}
	return i
}

func skipWS(s string, i int) int { return i + span(s[i:], pyWhitespace) }

// matchPath matches the path alternatives at s[i:] and returns the match
// length, 0 for none.
func matchPath(s string, i int) int {
	rest := s[i:]
	if strings.HasPrefix(rest, "@") {
		if n := span(rest[1:], bookmarkSet); n > 0 {
			return 1 + n
		}
	}
	// pathstd's regex: the head class excludes '/', so the greedy match
	// never needs to backtrack.
	if h := span(rest, pathHeadSet); h < len(rest) && rest[h] == '/' {
		return h + 1 + span(rest[h+1:], pathTailSet)
	}
	switch {
	case strings.HasPrefix(rest, ".."):
		return 2
	case strings.HasPrefix(rest, "."), strings.HasPrefix(rest, "*"):
		return 1
	}
	return 0
}

// parseLine tokenizes s the way configshell does and returns the tokens
// and the text it would silently drop (empty when all of s was read).
func parseLine(s string) (line, string) {
	var l line
	i := skipWS(s, 0)
	if n := matchPath(s, i); n > 0 {
		l.Path = s[i : i+n]
		i += n
	}
	j := skipWS(s, i)
	if n := span(s[j:], commandSet); n > 0 {
		l.Command = s[j : j+n]
		i = j + n
	}
	for {
		j := skipWS(s, i)
		// kparam first: keyword, then '=' (whitespace allowed before and
		// after it), then an optional value.
		if n := span(s[j:], keywordSet); n > 0 {
			k := skipWS(s, j+n)
			if k < len(s) && s[k] == '=' {
				v := skipWS(s, k+1)
				m := span(s[v:], varSet)
				kv := kparam{Key: s[j : j+n]}
				end := k + 1
				if m > 0 {
					kv.Value = s[v : v+m]
					end = v + m
				}
				l.KParams = append(l.KParams, kv)
				i = end
				continue
			}
		}
		if n := span(s[j:], varSet); n > 0 {
			l.PParams = append(l.PParams, s[j:j+n])
			i = j + n
			continue
		}
		break
	}
	return l, strings.TrimLeft(s[i:], pyWhitespace)
}
