package bucket

import (
	"strings"
	"testing"
)

// FuzzParseCredentials feeds arbitrary S3_CREDENTIAL_FILE contents through
// the parser: it never panics, accepts only one KEYID:SECRET line, and its
// errors never quote the secret.
func FuzzParseCredentials(f *testing.F) {
	f.Add([]byte("AKIAEXAMPLE:s3cr3tSECRETvalue\n"))
	f.Add([]byte("# comment\n\nid:secret\n"))
	f.Add([]byte("id:secret\nid2:secret2\n"))
	f.Add([]byte("id:sec:ret\n"))
	f.Add([]byte("id : secret"))
	f.Add([]byte("\xff\xfe:\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		creds, err := parseCredentials("/fuzz/cred", data)
		if err != nil {
			for _, line := range strings.Split(string(data), "\n") {
				if _, secret, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && len(secret) >= 8 && !strings.Contains("/fuzz/cred", secret) && strings.Contains(err.Error(), secret) {
					t.Fatalf("error quotes the secret %q: %v", secret, err)
				}
			}
			return
		}
		if creds.AccessKeyID == "" || creds.SecretAccessKey == "" || strings.ContainsAny(creds.AccessKeyID+creds.SecretAccessKey, ": \t\n") {
			t.Fatalf("accepted malformed credentials %q:%q", creds.AccessKeyID, creds.SecretAccessKey)
		}
	})
}
