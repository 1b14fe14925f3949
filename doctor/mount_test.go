package doctor

import (
	"reflect"
	"testing"
)

func TestParseMountinfo(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []MountEntry
	}{
		{name: "s3fs", in: "36 25 0:32 / /var/lib/cps-local/boot-images ro,nosuid,nodev,relatime shared:1 - fuse.s3fs s3fs ro,user_id=0,group_id=0\n",
			want: []MountEntry{{MountPoint: "/var/lib/cps-local/boot-images", FSType: "fuse.s3fs", Source: "s3fs"}}},
		{name: "optional fields", in: "36 25 0:32 / /mnt rw shared:1 master:2 - ext4 /dev/sda1 rw",
			want: []MountEntry{{MountPoint: "/mnt", FSType: "ext4", Source: "/dev/sda1"}}},
		{name: "escaped space", in: `36 25 0:32 / /mnt/boot\040images ro - fuse.s3fs s3fs ro`,
			want: []MountEntry{{MountPoint: "/mnt/boot images", FSType: "fuse.s3fs", Source: "s3fs"}}},
		{name: "not octal", in: `36 25 0:32 / /mnt/a\x41 ro - tmpfs tmpfs rw`,
			want: []MountEntry{{MountPoint: `/mnt/a\x41`, FSType: "tmpfs", Source: "tmpfs"}}},
		{name: "no separator", in: "36 25 0:32 / /mnt ro fuse.s3fs s3fs ro\n\n", want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ParseMountinfo(tc.in); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParseMountinfo(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}
