package bucket_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/bucket"
)

func TestLoadCredentialFile(t *testing.T) {
	const secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
	tests := []struct {
		name       string
		content    string
		mode       os.FileMode
		wantID     string
		wantErr    string
		secretSafe bool // the error must not contain the secret
	}{
		{name: "one line", content: "AKIDEXAMPLE:" + secret + "\n", mode: 0o600, wantID: "AKIDEXAMPLE"},
		{name: "no trailing newline", content: "AKIDEXAMPLE:" + secret, mode: 0o600, wantID: "AKIDEXAMPLE"},
		{name: "CRLF and comment", content: "# rgw keys\r\n\r\nAKIDEXAMPLE:" + secret + "\r\n", mode: 0o600, wantID: "AKIDEXAMPLE"},
		{name: "owner read only", content: "AKIDEXAMPLE:" + secret, mode: 0o400, wantID: "AKIDEXAMPLE"},
		{name: "group readable", content: "AKIDEXAMPLE:" + secret, mode: 0o640, wantErr: "chmod 600"},
		{name: "world readable", content: "AKIDEXAMPLE:" + secret, mode: 0o644, wantErr: "chmod 600"},
		{name: "group writable", content: "AKIDEXAMPLE:" + secret, mode: 0o620, wantErr: "chmod 600"},
		{name: "no colon", content: secret + "\n", mode: 0o600, wantErr: "line 1 is not of the form KEYID:SECRET", secretSafe: true},
		{name: "empty secret", content: "AKIDEXAMPLE:\n", mode: 0o600, wantErr: "KEYID:SECRET"},
		{name: "empty key", content: ":" + secret, mode: 0o600, wantErr: "KEYID:SECRET", secretSafe: true},
		{name: "bucket:key:secret form", content: "boot-images:AKIDEXAMPLE:" + secret, mode: 0o600, wantErr: "one colon", secretSafe: true},
		{name: "space inside", content: "AKIDEXAMPLE: " + secret + " x", mode: 0o600, wantErr: "no spaces", secretSafe: true},
		{name: "two credential lines", content: "A:" + secret + "\nB:" + secret + "\n", mode: 0o600, wantErr: "more than one credential line (line 2)", secretSafe: true},
		{name: "empty file", content: "", mode: 0o600, wantErr: "no credential line"},
		{name: "too big", content: strings.Repeat("#", 5000), mode: 0o600, wantErr: "over 4096 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ims.s3fs")
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil { // umask-independent
				t.Fatal(err)
			}
			got, err := bucket.LoadCredentialFile(path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("LoadCredentialFile = %q, %v; want error containing %q", got.AccessKeyID, err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), path) {
					t.Errorf("error %v does not name the file", err)
				}
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error leaks the secret: %v", err)
				}
				if tc.wantErr == "chmod 600" && !strings.Contains(err.Error(), "chmod 600 "+path) {
					t.Errorf("error %v does not give the exact chmod command", err)
				}
				return
			}
			if err != nil || got.AccessKeyID != tc.wantID || got.SecretAccessKey != secret {
				t.Fatalf("LoadCredentialFile = (%q, secret ok %v), %v; want (%q, secret ok true)", got.AccessKeyID, got.SecretAccessKey == secret, err, tc.wantID)
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "absent")
		if _, err := bucket.LoadCredentialFile(path); err == nil || !strings.Contains(err.Error(), path) {
			t.Fatalf("LoadCredentialFile(absent) error = %v, want one naming %s", err, path)
		}
	})
	t.Run("directory", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := bucket.LoadCredentialFile(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("LoadCredentialFile(dir) error = %v, want not a regular file", err)
		}
	})
}

// TestCredentialFileAgainstVersityGW loads keys from a file and uses them
// against the real server.
func TestCredentialFileAgainstVersityGW(t *testing.T) {
	s := startS3(t)
	upload(t, s, map[string][]byte{"PE/a": []byte("a")})
	c := s.Credentials()
	path := filepath.Join(t.TempDir(), "ims.s3fs")
	if err := os.WriteFile(path, []byte(c.AccessKeyID+":"+c.SecretAccessKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	creds, err := bucket.LoadCredentialFile(path)
	if err != nil {
		t.Fatal(err)
	}
	client := newClient(t, bucket.Config{Endpoint: s.Endpoint(), Credentials: &creds})
	got, err := client.List(t.Context(), "")
	if err != nil || len(got) != 1 || got[0].Key != "PE/a" {
		t.Fatalf("List with file credentials = %v, %v; want [PE/a]", keysOf(got), err)
	}
}
