package doctor

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/sbps-marshal/sbps-marshal/agent"
	"github.com/sbps-marshal/sbps-marshal/bucket"
	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/internal/tlsconf"
)

// probePrefix is listed to prove S3 answers with the credentials: a
// prefix no image has, so the answer is one short page.
const probePrefix = ".sbps-marshal-doctor/"

// checkS3 is the S3 row: the bucket client the agent builds (credentials
// from S3_CREDENTIAL_FILE, TLS as configured) lists the bucket once.
func checkS3(ctx context.Context, cfg *config.Config, o Options) Result {
	r := Result{Name: RowS3}
	endpoint := cfg.S3Proto + "://" + cfg.S3Host
	where := fmt.Sprintf("s3://%s at %s", cfg.S3Bucket, endpoint)
	var creds *aws.Credentials
	credsFrom := "the AWS SDK's default chain (S3_CREDENTIAL_FILE is empty)"
	if cfg.S3CredentialFile != "" {
		c, err := bucket.LoadCredentialFile(cfg.S3CredentialFile)
		if err != nil {
			r.Status, r.Detail = Fail, "S3_CREDENTIAL_FILE: "+errText(err)
			r.Fix = fmt.Sprintf("write the bucket's key as one line KEYID:SECRET into %s, mode 0600 (the s3fs mount's passwd_file holds the same), or %s", cfg.S3CredentialFile, setKey(cfg, "S3_CREDENTIAL_FILE", "<that file>"))
			return r
		}
		creds = &c
		credsFrom = cfg.S3CredentialFile
	}
	tlsNote, insecure := "plain HTTP (S3_PROTO=http)", false
	if cfg.S3Proto == "https" {
		switch {
		case cfg.TLSInsecure:
			tlsNote, insecure = "TLS certificate NOT verified (TLS_INSECURE_SKIP_VERIFY=true)", true
		case cfg.CAFile != "":
			tlsNote = "TLS verified against the system pool and CA_FILE " + cfg.CAFile
		default:
			tlsNote = "TLS verified against the system pool"
		}
	}
	hc, err := tlsconf.Client(agent.TLSOptions(cfg, "S3"))
	if err != nil {
		r.Status, r.Detail, r.Fix = Fail, errText(err), setKey(cfg, "CA_FILE", "<a readable PEM bundle>")
		return r
	}
	client, err := bucket.New(ctx, bucket.Config{Endpoint: endpoint, Bucket: cfg.S3Bucket, Credentials: creds, HTTPClient: hc, Timeout: min(cfg.S3Timeout, o.Timeout)})
	if err != nil {
		r.Status, r.Detail, r.Fix = Fail, errText(err), "check SBPS_MARSHAL_S3_PROTO and SBPS_MARSHAL_S3_HOST in "+envFile(cfg)
		return r
	}
	if _, err := client.List(ctx, probePrefix); err != nil {
		r.Status, r.Detail = Fail, fmt.Sprintf("listing %s with the key from %s failed: %s", where, credsFrom, errText(err))
		var ve *tlsconf.VerifyError
		switch {
		case errors.As(err, &ve):
			r.Fix = ve.Fix
		case errors.Is(err, bucket.ErrAccessDenied):
			r.Fix = fmt.Sprintf("S3 refused the key: put the right KEYID:SECRET for %s into %s (the s3fs mount's passwd_file holds the same), or %s", cfg.S3Bucket, credsFrom, setKey(cfg, "S3_CREDENTIAL_FILE", "<that file>"))
		case strings.Contains(err.Error(), "NoSuchBucket"):
			r.Fix = setKey(cfg, "S3_BUCKET", "<the bucket the images are in, boot-images on CSM>")
		default:
			r.Fix = fmt.Sprintf("check that S3 answers at %s (SBPS_MARSHAL_S3_PROTO, SBPS_MARSHAL_S3_HOST in %s; on CSM Ceph RGW at rgw-vip.nmn): DNS, routing, the server", endpoint, envFile(cfg))
		}
		return r
	}
	r.Status, r.Detail = OK, fmt.Sprintf("listed %s with the key from %s; %s", where, credsFrom, tlsNote)
	if insecure {
		r.Status = Warn
		r.Fix = "trust S3's certificate issuer instead: " + setKey(cfg, "CA_FILE", "<PEM bundle of the platform CA>") + " and remove SBPS_MARSHAL_TLS_INSECURE_SKIP_VERIFY (or use S3_PROTO=http, as the s3fs mount does)"
	}
	return r
}
