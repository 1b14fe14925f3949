package svid_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/svid"
)

func TestReadXName(t *testing.T) {
	tests := []struct {
		name    string
		content *string // nil: no file
		want    string
		wantErr string
	}{
		{name: "plain", content: ptr("x3000c0s1b0n0"), want: "x3000c0s1b0n0"},
		{name: "trailing newline", content: ptr("x3000c0s1b0n0\n"), want: "x3000c0s1b0n0"},
		{name: "cabinet only", content: ptr("x1000"), want: "x1000"},
		{name: "empty file", content: ptr(""), wantErr: "is not an xname"},
		{name: "upper case", content: ptr("X3000C0S1B0N0"), wantErr: "is not an xname"},
		{name: "slash would change the SPIFFE path", content: ptr("x3000/workload"), wantErr: "is not an xname"},
		{name: "hostname", content: ptr("ncn-w001"), wantErr: "is not an xname"},
		{name: "missing file", wantErr: "read node xname"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "xname")
			if tt.content != nil {
				if err := os.WriteFile(path, []byte(*tt.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := svid.ReadXName(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ReadXName() = (%q, %v), want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ReadXName() = (%q, %v), want (%q, nil)", got, err, tt.want)
			}
		})
	}
}

func ptr(s string) *string { return &s }
