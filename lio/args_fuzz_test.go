package lio

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// intended lists, independently of commandFor, the tokens targetcli must
// read for op: path, command, positional parameters, key=value parameters.
func intended(op Op) line {
	tpg := "/iscsi/" + op.Target + "/tpg" + strconv.Itoa(op.TPGTag())
	switch op.Kind {
	case CreateBackstore:
		return line{"/backstores/fileio", "create", []string{op.Backstore, op.File}, []kparam{{"write_back", "false"}, {"wwn", op.WWN}}}
	case DeleteBackstore:
		return line{"/backstores/fileio", "delete", []string{op.Backstore}, nil}
	case CreateLUN:
		l := line{tpg + "/luns", "create", []string{"/backstores/fileio/" + op.Backstore}, nil}
		if op.LUN != AutoLUN {
			l.KParams = append(l.KParams, kparam{"lun", strconv.Itoa(op.LUN)})
		}
		l.KParams = append(l.KParams, kparam{"add_mapped_luns", "false"})
		return l
	case DeleteLUN:
		return line{tpg + "/luns", "delete", nil, []kparam{{"lun", strconv.Itoa(op.LUN)}}}
	case EnableTPG:
		return line{tpg, "enable", nil, nil}
	case DisableTPG:
		return line{tpg, "disable", nil, nil}
	}
	return line{}
}

var fuzzKinds = []OpKind{CreateBackstore, DeleteBackstore, CreateLUN, DeleteLUN, EnableTPG, DisableTPG}

// FuzzCommandLine: any op the checks accept yields a command that
// configshell's grammar reads as exactly the intended tokens, with nothing
// dropped and no line or request separator; any op they refuse yields no
// command at all.
//
//	go test ./lio -run '^$' -fuzz '^FuzzCommandLine$' -fuzztime 60s
func FuzzCommandLine(f *testing.F) {
	f.Add(uint8(0), "de4cc04e7dacfb9", "/var/lib/cps-local/boot-images/PE/CPE-base.x86_64-24.11.squashfs", "de4cc04e7dacfb9ada0a6b4ccdae676", "iqn.2023-06.csm.iscsi:ncn-w001", 1, 0)
	f.Add(uint8(2), "b1", "/x", "a", "iqn.2023-06.csm.iscsi:ncn-w001", 0, -1)
	f.Add(uint8(3), "b1", "/x", "a", "iqn.2016-12.suse.com.target1", 2, 65535)
	f.Add(uint8(0), "a b", "/mnt/a b", "x=y", "iqn.2023-06.x:y", 1, 0)
	f.Add(uint8(0), "n", "/mnt/../etc/shadow", "a", "iqn.2023-06.x", 1, 0)
	f.Add(uint8(0), "n", "/mnt/a\nsaveconfig", "a%b", "iqn.2023-06.x:y z", 1, 0)
	f.Add(uint8(1), "..", "/", "", "IQN.2023-06.X", -1, -5)
	f.Add(uint8(0), "n", `/mnt/a"b,c=d`, "a", "iqn.2023-06.x", 1, 0)
	f.Fuzz(func(t *testing.T, kind uint8, name, file, wwn, iqn string, tpg, lun int) {
		op := Op{Kind: fuzzKinds[int(kind)%len(fuzzKinds)], Backstore: name, File: file, WWN: wwn, Target: iqn, TPG: tpg, LUN: lun}
		l, err := commandFor(op)
		if err != nil {
			if !l.equal(line{}) {
				t.Fatalf("commandFor(%+v) returned tokens %+v with error %v", op, l, err)
			}
			var ae *ArgError
			if errors.As(err, &ae) && ae.Char != 0 && !strings.ContainsRune(ae.Value, ae.Char) && ae.Char != '\uFFFD' {
				t.Fatalf("error names character %q that is not in %q", ae.Char, ae.Value)
			}
			return
		}
		s := l.String()
		want := intended(op)
		got, rest := parseLine(s)
		if rest != "" {
			t.Fatalf("accepted %+v but targetcli would drop %q from %q", op, rest, s)
		}
		if !got.equal(want) {
			t.Fatalf("accepted %+v; targetcli reads %q as %+v, want %+v", op, s, got, want)
		}
		// Independent of the grammar model: the line is printable ASCII with
		// no separator, and splitting it on spaces gives the intended tokens.
		for i := 0; i < len(s); i++ {
			if c := s[i]; c <= ' ' && c != ' ' || c >= 0x7f || c == '%' || c == '"' || c == '\'' {
				t.Fatalf("command %q has byte %q at %d", s, c, i)
			}
		}
		var fields []string
		if want.Path != "" {
			fields = append(fields, want.Path)
		}
		fields = append(fields, want.Command)
		fields = append(fields, want.PParams...)
		for _, kv := range want.KParams {
			fields = append(fields, kv.Key+"="+kv.Value)
		}
		if !slices.Equal(strings.Split(s, " "), fields) {
			t.Fatalf("command %q splits into %q, want %q", s, strings.Split(s, " "), fields)
		}
		// Values that carry names must not contain '=' (would become key=value).
		for _, p := range want.PParams {
			if strings.Contains(p, "=") {
				t.Fatalf("positional parameter %q contains '='", p)
			}
		}
	})
}
