package mountinfo

import (
	"reflect"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name, in string
		want     []Entry
	}{
		{"s3fs", "36 35 0:31 / /var/lib/cps-local/boot-images rw,nosuid,nodev,relatime shared:20 - fuse.s3fs s3fs rw,user_id=0,group_id=0\n",
			[]Entry{{MountPoint: "/var/lib/cps-local/boot-images", FSType: "fuse.s3fs", Source: "s3fs"}}},
		{"no optional fields", "22 1 8:1 / /mnt rw - ext4 /dev/sda1 rw\n",
			[]Entry{{MountPoint: "/mnt", FSType: "ext4", Source: "/dev/sda1"}}},
		{"escaped space", `40 35 0:33 / /mnt/boot\040images rw - fuse.s3fs s3fs rw` + "\n",
			[]Entry{{MountPoint: "/mnt/boot images", FSType: "fuse.s3fs", Source: "s3fs"}}},
		{"torn and short lines skipped", "garbage\n1 2 3\n22 1 8:1 / /mnt rw -\n", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Parse(tc.in); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Parse(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

func TestUnescape(t *testing.T) {
	tests := []struct{ in, want string }{
		{in: "/plain/path", want: "/plain/path"},
		{in: `/boot\040images`, want: "/boot images"},
		{in: `/tab\011x\134y`, want: "/tab\tx\\y"},
		{in: `/trailing\04`, want: `/trailing\04`},
		{in: `/bad\09x`, want: `/bad\09x`},
		{in: `/a\x41`, want: `/a\x41`},
	}
	for _, tc := range tests {
		if got := Unescape(tc.in); got != tc.want {
			t.Errorf("Unescape(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestFindLastMountWins(t *testing.T) {
	e := Parse("1 0 0:1 / /m rw - tmpfs tmpfs rw\n2 1 0:2 / /m rw - fuse.s3fs s3fs rw\n")
	if got, ok := Find(e, "/m"); !ok || got.FSType != "fuse.s3fs" {
		t.Errorf("Find = %+v, %v; want the later fuse.s3fs mount", got, ok)
	}
	if _, ok := Find(e, "/other"); ok {
		t.Error("Find of an unmounted path = true")
	}
}
