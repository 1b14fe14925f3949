package lio

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseLine(t *testing.T) {
	// Expected tokens follow configshell's pyparsing grammar (see grammar.go).
	tests := []struct {
		name string
		in   string
		want line
		rest string
	}{
		{name: "fileio create",
			in:   "/backstores/fileio create disk1 /var/lib/img.squashfs write_back=false wwn=abc-1",
			want: line{Path: "/backstores/fileio", Command: "create", PParams: []string{"disk1", "/var/lib/img.squashfs"}, KParams: []kparam{{"write_back", "false"}, {"wwn", "abc-1"}}}},
		{name: "iqn in the path",
			in:   "/iscsi/iqn.2023-06.csm.iscsi:ncn-w001/tpg1 enable",
			want: line{Path: "/iscsi/iqn.2023-06.csm.iscsi:ncn-w001/tpg1", Command: "enable"}},
		{name: "no path", in: "saveconfig /etc/target/saveconfig.json",
			want: line{Command: "saveconfig", PParams: []string{"/etc/target/saveconfig.json"}}},
		{name: "space splits a value", in: "/backstores/fileio create d /mnt/a b.squashfs",
			want: line{Path: "/backstores/fileio", Command: "create", PParams: []string{"d", "/mnt/a", "b.squashfs"}}},
		{name: "quote cuts the line", in: `/backstores/fileio create d /mnt/a"b size=1`,
			want: line{Path: "/backstores/fileio", Command: "create", PParams: []string{"d", "/mnt/a"}}, rest: `"b size=1`},
		{name: "equals makes a key", in: "/backstores/fileio delete a=b",
			want: line{Path: "/backstores/fileio", Command: "delete", KParams: []kparam{{"a", "b"}}}},
		{name: "spaces around equals", in: "/x create lun = 3",
			want: line{Path: "/x", Command: "create", KParams: []kparam{{"lun", "3"}}}},
		{name: "empty value", in: "/x create wwn=",
			want: line{Path: "/x", Command: "create", KParams: []kparam{{"wwn", ""}}}},
		{name: "newline is whitespace", in: "/x delete a\nb",
			want: line{Path: "/x", Command: "delete", PParams: []string{"a", "b"}}},
		{name: "non-ASCII cuts", in: "/x delete caf\u00e9 y",
			want: line{Path: "/x", Command: "delete", PParams: []string{"caf"}}, rest: "\u00e9 y"},
		{name: "dotdot is a path", in: ".. ls", want: line{Path: "..", Command: "ls"}},
		{name: "bookmark", in: "@mark ls", want: line{Path: "@mark", Command: "ls"}},
		{name: "percent is a value char", in: "/x delete a%b",
			want: line{Path: "/x", Command: "delete", PParams: []string{"a%b"}}},
		{name: "brace is dropped", in: "/x delete a{b}",
			want: line{Path: "/x", Command: "delete", PParams: []string{"a"}}, rest: "{b}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, rest := parseLine(tt.in)
			if !got.equal(tt.want) || rest != tt.rest {
				t.Errorf("parseLine(%q) = %+v, rest %q; want %+v, rest %q", tt.in, got, rest, tt.want, tt.rest)
			}
		})
	}
}

func TestCommandFor(t *testing.T) {
	const iqn = "iqn.2023-06.csm.iscsi:ncn-w001"
	tests := []struct {
		name string
		op   Op
		want string
	}{
		{"create backstore", Op{Kind: CreateBackstore, Backstore: "de4cc04e7dacfb9", File: "/var/lib/cps-local/boot-images/PE/CPE-base.x86_64-24.11.squashfs", WWN: "de4cc04e7dacfb9ada0a6b4ccdae676"},
			"/backstores/fileio create de4cc04e7dacfb9 /var/lib/cps-local/boot-images/PE/CPE-base.x86_64-24.11.squashfs write_back=false wwn=de4cc04e7dacfb9ada0a6b4ccdae676"},
		{"delete backstore", Op{Kind: DeleteBackstore, Backstore: "iscsi_file1"}, "/backstores/fileio delete iscsi_file1"},
		{"create LUN zero value is index 0", Op{Kind: CreateLUN, Backstore: "b1", Target: iqn},
			"/iscsi/" + iqn + "/tpg1/luns create /backstores/fileio/b1 lun=0 add_mapped_luns=false"},
		{"create LUN auto index", Op{Kind: CreateLUN, Backstore: "b1", Target: iqn, LUN: AutoLUN},
			"/iscsi/" + iqn + "/tpg1/luns create /backstores/fileio/b1 add_mapped_luns=false"},
		{"create LUN explicit", Op{Kind: CreateLUN, Backstore: "b1", Target: iqn, TPG: 2, LUN: 7},
			"/iscsi/" + iqn + "/tpg2/luns create /backstores/fileio/b1 lun=7 add_mapped_luns=false"},
		{"delete LUN", Op{Kind: DeleteLUN, Target: iqn, LUN: 0}, "/iscsi/" + iqn + "/tpg1/luns delete lun=0"},
		{"enable", Op{Kind: EnableTPG, Target: iqn}, "/iscsi/" + iqn + "/tpg1 enable"},
		{"disable", Op{Kind: DisableTPG, Target: iqn, TPG: 3}, "/iscsi/" + iqn + "/tpg3 disable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := commandFor(tt.op)
			if err != nil {
				t.Fatalf("commandFor(%v): %v", tt.op, err)
			}
			if got := l.String(); got != tt.want {
				t.Errorf("commandFor(%v) = %q, want %q", tt.op, got, tt.want)
			}
		})
	}
}

// TestS3KeysNeverReachACommand: S3 keys become paths under the s3fs mount;
// none of these may produce a command, and the error names the character.
func TestS3KeysNeverReachACommand(t *testing.T) {
	const mount = "/var/lib/cps-local/boot-images/"
	tests := []struct {
		name string
		key  string
		char rune // 0: refused for a reason other than a character
	}{
		{"space", "PE/my image.squashfs", ' '},
		{"newline", "PE/a\n/backstores/fileio delete x", '\n'},
		{"carriage return", "PE/a\r.squashfs", '\r'},
		{"equals", "PE/size=1G.squashfs", '='},
		{"comma", "PE/a,b.squashfs", ','},
		{"double quote", `PE/"a".squashfs`, '"'},
		{"single quote", "PE/a'b", '\''},
		{"percent", "PE/a%b", '%'},
		{"tab", "PE/a\tb", '\t'},
		{"non-ASCII", "PE/\u00e9.squashfs", '\u00e9'},
		{"invalid UTF-8", "PE/\xff", '\uFFFD'},
		{"NUL", "PE/a\x00b", '\x00'},
		{"dot dot", "../../etc/shadow", 0},
		{"inner dot dot", "PE/../x.squashfs", 0},
		{"double slash", "PE//x", 0},
		{"trailing slash", "PE/", 0},
		{"too long", strings.Repeat("a", MaxPathLen), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op := Op{Kind: CreateBackstore, Backstore: "abc", File: mount + tt.key, WWN: "abc"}
			l, err := commandFor(op)
			if err == nil {
				t.Fatalf("commandFor(%q) built %q; want a refusal", op.File, l.String())
			}
			var ae *ArgError
			if !errors.As(err, &ae) || !errors.Is(err, ErrUnsafeArgument) {
				t.Fatalf("commandFor(%q) error %v (%T); want an *ArgError wrapping ErrUnsafeArgument", op.File, err, err)
			}
			if ae.Char != tt.char {
				t.Errorf("refused character = %q, want %q (error: %v)", ae.Char, tt.char, err)
			}
			if !reflect.DeepEqual(l, line{}) {
				t.Errorf("commandFor returned tokens %+v alongside its error", l)
			}
		})
	}
}

func TestChecks(t *testing.T) {
	tests := []struct {
		name  string
		check func(string) error
		in    string
		ok    bool
	}{
		{"name hex", CheckName, "de4cc04e7dacfb9", true},
		{"name underscore", CheckName, "iscsi_file1", true},
		{"name dot inside", CheckName, "a.b", true},
		{"name dot", CheckName, ".", false},
		{"name dotdot", CheckName, "..", false},
		{"name dash first", CheckName, "-x", false},
		{"name slash", CheckName, "a/b", false},
		{"name empty", CheckName, "", false},
		{"name long", CheckName, strings.Repeat("n", MaxNameLen+1), false},
		{"name max", CheckName, strings.Repeat("n", MaxNameLen), true},
		{"path plus", CheckPath, "/mnt/a+b-c_d.e", true},
		{"path relative", CheckPath, "mnt/a", false},
		{"path dot", CheckPath, "/mnt/./a", false},
		{"path root", CheckPath, "/", false},
		{"path tilde", CheckPath, "/~root", false},
		{"path colon", CheckPath, "/a:b", false},
		{"path max", CheckPath, "/" + strings.Repeat("p", MaxPathLen-1), true},
		{"wwn ours", CheckWWN, "de4cc04e7dacfb9ada0a6b4ccdae676", true},
		{"wwn uuid", CheckWWN, "04930d85-9eca-49d1-8a5d-1780f5544df8", true},
		{"wwn upper", CheckWWN, "ABC", false},
		{"wwn space", CheckWWN, "a b", false},
		{"iqn csm", CheckIQN, "iqn.2023-06.csm.iscsi:ncn-w001", true},
		{"iqn no unique part", CheckIQN, "iqn.2016-12.suse.com.target1", true},
		{"iqn upper", CheckIQN, "iqn.2023-06.csm.iscsi:NCN-W001", false},
		{"iqn eui", CheckIQN, "eui.02004567a425678d", false},
		{"iqn bad date", CheckIQN, "iqn.20a3-06.x", false},
		{"iqn slash", CheckIQN, "iqn.2023-06.x/tpg1", false},
		{"iqn long", CheckIQN, "iqn.2023-06.x:" + strings.Repeat("h", MaxIQNLen), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.check(tt.in)
			if (err == nil) != tt.ok {
				t.Errorf("check(%q) = %v, want ok=%v", tt.in, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrUnsafeArgument) {
				t.Errorf("check(%q) = %v, does not wrap ErrUnsafeArgument", tt.in, err)
			}
		})
	}
}

func TestValidateNumbers(t *testing.T) {
	const iqn = "iqn.2023-06.csm.iscsi:w1"
	tests := []struct {
		name string
		op   Op
		ok   bool
	}{
		{"lun max", Op{Kind: CreateLUN, Backstore: "b", Target: iqn, LUN: MaxLUN}, true},
		{"lun too big", Op{Kind: CreateLUN, Backstore: "b", Target: iqn, LUN: MaxLUN + 1}, false},
		{"lun negative", Op{Kind: CreateLUN, Backstore: "b", Target: iqn, LUN: -2}, false},
		{"delete auto", Op{Kind: DeleteLUN, Target: iqn, LUN: AutoLUN}, false},
		{"tpg too big", Op{Kind: EnableTPG, Target: iqn, TPG: MaxTPGTag + 1}, false},
		{"tpg negative", Op{Kind: EnableTPG, Target: iqn, TPG: -1}, false},
		{"unknown kind", Op{Kind: "rename", Backstore: "b"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Validate(tt.op); (err == nil) != tt.ok {
				t.Errorf("Validate(%v) = %v, want ok=%v", tt.op, err, tt.ok)
			}
		})
	}
}
