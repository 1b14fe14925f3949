package config

import "testing"

func TestLayersValue(t *testing.T) {
	k := key{name: "S3_HOST", def: "rgw-vip.nmn"}
	flagValue := "from-flag"
	tests := []struct {
		name       string
		l          layers
		wantV      string
		wantSource string
	}{
		{"default", layers{}, "rgw-vip.nmn", "default"},
		{"env file over default", layers{file: map[string]string{"S3_HOST": "from-file"}, filePath: "/etc/f"}, "from-file", "env file /etc/f"},
		{"environment over env file", layers{file: map[string]string{"S3_HOST": "from-file"}, env: map[string]string{"S3_HOST": "from-env"}}, "from-env", "environment"},
		{"flag over environment", layers{env: map[string]string{"S3_HOST": "from-env"}, set: map[string]bool{"s3-host": true},
			flags: map[string]*string{"S3_HOST": &flagValue}}, "from-flag", "flag --s3-host"},
		{"empty env value counts", layers{env: map[string]string{"S3_HOST": ""}}, "", "environment"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, source := tt.l.value(k)
			if v != tt.wantV || source != tt.wantSource {
				t.Errorf("value(%q) = %q, %q; want %q, %q", k.name, v, source, tt.wantV, tt.wantSource)
			}
		})
	}
}
