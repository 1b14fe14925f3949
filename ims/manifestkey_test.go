package ims

import "testing"

func TestManifestKeyID(t *testing.T) {
	const id = "5d6e3a8c-2f1b-4c7e-9a0d-1b2c3d4e5f60"
	tests := []struct {
		name, key string
		want      string
		ok        bool
	}{
		{"IMS manifest", id + "/manifest.json", id, true},
		{"rootfs of the image", id + "/rootfs", "", false},
		{"manifest under a prefix", "deleted/" + id + "/manifest.json", "", false},
		{"manifest one level deeper", id + "/x/manifest.json", "", false},
		{"leading slash", "/" + id + "/manifest.json", "", false},
		{"trailing slash", id + "/manifest.json/", "", false},
		{"PE image", "PE/" + id + "/manifest.json", "", false},
		{"id upper case", "5D6E3A8C-2F1B-4C7E-9A0D-1B2C3D4E5F60/manifest.json", "", false},
		{"id without dashes", "5d6e3a8c2f1b4c7e9a0d1b2c3d4e5f60/manifest.json", "", false},
		{"id one digit short", id[:35] + "/manifest.json", "", false},
		{"id with a shell metacharacter", "5d6e3a8c-2f1b-4c7e-9a0d-1b2c3d4e5f6;/manifest.json", "", false},
		{"id with a space", " " + id[1:] + "/manifest.json", "", false},
		{"manifest name in another case", id + "/Manifest.json", "", false},
		{"manifest name with a suffix", id + "/manifest.json.bak", "", false},
		{"no slash", id + "manifest.json", "", false},
		{"empty", "", "", false},
		{"just the name", "manifest.json", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ManifestKeyID(tt.key)
			if got != tt.want || ok != tt.ok {
				t.Errorf("ManifestKeyID(%q) = %q, %v, want %q, %v", tt.key, got, ok, tt.want, tt.ok)
			}
		})
	}
}
