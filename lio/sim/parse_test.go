package sim

import (
	"reflect"
	"testing"
)

func TestParseLine(t *testing.T) {
	tests := []struct {
		name string
		line string
		want cmdline
	}{
		{"path command positional and keyword",
			"/backstores/fileio create img /var/lib/x.img write_back=false",
			cmdline{Path: "/backstores/fileio", Command: "create", PParams: []string{"img", "/var/lib/x.img"},
				KParams: map[string]string{"write_back": "false"}, KOrder: []string{"write_back"}}},
		{"iqn path",
			"/iscsi/iqn.2023-06.csm.iscsi:ncn-w001/tpg1/luns create /backstores/fileio/a",
			cmdline{Path: "/iscsi/iqn.2023-06.csm.iscsi:ncn-w001/tpg1/luns", Command: "create", PParams: []string{"/backstores/fileio/a"}}},
		{"command only", "saveconfig", cmdline{Command: "saveconfig"}},
		{"space splits a value",
			"/backstores/fileio create img /s3/my image.sq",
			cmdline{Path: "/backstores/fileio", Command: "create", PParams: []string{"img", "/s3/my", "image.sq"}}},
		{"illegal character drops the rest",
			"/backstores/fileio create img /s3/it's.img wwn=x",
			cmdline{Path: "/backstores/fileio", Command: "create", PParams: []string{"img", "/s3/it"}}},
		{"quote at the start leaves nothing", `"/backstores/fileio" create`, cmdline{}},
		{"comma and equals are value characters",
			"/backstores/fileio create a /x,y=z",
			cmdline{Path: "/backstores/fileio", Command: "create", PParams: []string{"a", "/x,y=z"}}},
		{"spaces around equals",
			"luns create so lun = 3",
			cmdline{Path: "", Command: "luns", PParams: []string{"create", "so"},
				KParams: map[string]string{"lun": "3"}, KOrder: []string{"lun"}}},
		{"empty value swallows nothing when line ends", "create a= ",
			cmdline{Command: "create", KParams: map[string]string{"a": ""}, KOrder: []string{"a"}}},
		{"empty value takes the next token", "create a= b=c",
			cmdline{Command: "create", KParams: map[string]string{"a": "b=c"}, KOrder: []string{"a"}}},
		{"dot dot path", ".. ls", cmdline{Path: "..", Command: "ls"}},
		{"newline is whitespace", "saveconfig\n", cmdline{Command: "saveconfig"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseLine(tt.line)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseLine(%q) = %+v, want %+v", tt.line, got, tt.want)
			}
		})
	}
}

func TestHumanToBytes(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want int64
		bad  bool
	}{
		{"bytes", "4096", 4096, false},
		{"kilo", "4k", 4096, false},
		{"mebi", "1MiB", 1 << 20, false},
		{"giga upper", "2G", 2 << 30, false},
		{"garbage", "big", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := humanToBytes(tt.in)
			if (err != nil) != tt.bad || got != tt.want {
				t.Errorf("humanToBytes(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.bad)
			}
		})
	}
}
