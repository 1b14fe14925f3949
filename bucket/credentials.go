package bucket

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// maxCredentialFile bounds how much of a credential file is read.
const maxCredentialFile = 4096

// LoadCredentialFile reads S3 keys from a file of one line KEYID:SECRET
// (the old agent's S3_CREDENTIAL_FILE, s3fs's passwd format). Blank lines and
// lines starting with # are ignored. It refuses a file that group or others
// may read or write, and never puts the secret in an error.
func LoadCredentialFile(path string) (aws.Credentials, error) {
	f, err := os.Open(path)
	if err != nil {
		return aws.Credentials{}, fmt.Errorf("bucket: open S3 credential file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return aws.Credentials{}, fmt.Errorf("bucket: stat S3 credential file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return aws.Credentials{}, fmt.Errorf("bucket: S3 credential file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return aws.Credentials{}, fmt.Errorf("bucket: S3 credential file %s is open to group or others (mode %04o); run `chmod 600 %s`", path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxCredentialFile+1))
	if err != nil {
		return aws.Credentials{}, fmt.Errorf("bucket: read S3 credential file %s: %w", path, err)
	}
	if len(data) > maxCredentialFile {
		return aws.Credentials{}, fmt.Errorf("bucket: S3 credential file %s is over %d bytes; expected one line KEYID:SECRET", path, maxCredentialFile)
	}
	return parseCredentials(path, data)
}

// parseCredentials parses the file content. Errors name the line number and
// the expected shape but never quote the content.
func parseCredentials(path string, data []byte) (aws.Credentials, error) {
	var creds aws.Credentials
	found := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		found++
		if found > 1 {
			return aws.Credentials{}, fmt.Errorf("bucket: S3 credential file %s has more than one credential line (line %d); expected exactly one line KEYID:SECRET", path, n)
		}
		id, secret, ok := strings.Cut(line, ":")
		if !ok || id == "" || secret == "" || strings.Contains(secret, ":") || strings.ContainsAny(line, " \t") {
			return aws.Credentials{}, fmt.Errorf("bucket: S3 credential file %s line %d is not of the form KEYID:SECRET (one colon, both parts non-empty, no spaces)", path, n)
		}
		creds = aws.Credentials{AccessKeyID: id, SecretAccessKey: secret, Source: "S3_CREDENTIAL_FILE " + path}
	}
	if err := sc.Err(); err != nil {
		return aws.Credentials{}, fmt.Errorf("bucket: read S3 credential file %s: %w", path, err)
	}
	if found == 0 {
		return aws.Credentials{}, fmt.Errorf("bucket: S3 credential file %s has no credential line; expected one line KEYID:SECRET", path)
	}
	return creds, nil
}
