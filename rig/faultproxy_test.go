package rig

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// proxiedClient is an S3 client for s's bucket through p, with one attempt
// per request so each fault shows unretried.
func proxiedClient(s *S3, p *FaultProxy) *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint:     aws.String(p.URL()),
		Region:           "us-east-1",
		UsePathStyle:     true,
		Credentials:      aws.NewCredentialsCache(staticCreds(s.Credentials())),
		RetryMaxAttempts: 1,
	})
}

type staticCreds aws.Credentials

func (c staticCreds) Retrieve(context.Context) (aws.Credentials, error) {
	return aws.Credentials(c), nil
}

// TestFaultProxy switches each fault on in front of a real versitygw and
// checks what an S3 client sees: the object through a passing proxy (so
// signatures made for the proxy's host verify), S3's XML errors for 500
// and 503, a timeout for a slow answer, a transport error for a reset, and
// the object again once the fault is cleared.
func TestFaultProxy(t *testing.T) {
	s := startS3(t, "")
	if _, err := s.Put(t.Context(), "PE/a.squashfs", []byte("image")); err != nil {
		t.Fatal(err)
	}
	p, err := StartFaultProxy(s.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	c := proxiedClient(s, p)
	list := func(timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		defer cancel()
		out, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(s.Bucket())})
		if err != nil {
			return err
		}
		if len(out.Contents) != 1 || aws.ToString(out.Contents[0].Key) != "PE/a.squashfs" {
			return errors.New("listing through the proxy does not hold PE/a.squashfs")
		}
		return nil
	}
	status := func(err error) int {
		var re *awshttp.ResponseError
		if errors.As(err, &re) {
			return re.HTTPStatusCode()
		}
		return 0
	}
	code := func(err error) string {
		var ae smithy.APIError
		if errors.As(err, &ae) {
			return ae.ErrorCode()
		}
		return ""
	}
	tests := []struct {
		name  string
		set   func()
		check func(err error) string // "" when err is what the fault must cause
	}{
		{"pass through", func() { p.Set(FaultNone) }, func(err error) string {
			if err != nil {
				return "want the listing, got " + err.Error()
			}
			return ""
		}},
		{"500", func() { p.Set(Fault500) }, func(err error) string {
			if status(err) != 500 || code(err) != "InternalError" {
				return "want HTTP 500 InternalError"
			}
			return ""
		}},
		{"503", func() { p.Set(Fault503) }, func(err error) string {
			if status(err) != 503 || code(err) != "ServiceUnavailable" {
				return "want HTTP 503 ServiceUnavailable"
			}
			return ""
		}},
		{"slow", func() { p.SetSlow(time.Minute) }, func(err error) string {
			if !errors.Is(err, context.DeadlineExceeded) {
				return "want the client's deadline exceeded"
			}
			return ""
		}},
		{"reset", func() { p.Set(FaultReset) }, func(err error) string {
			if err == nil || status(err) != 0 || !strings.Contains(err.Error(), "reset") && !strings.Contains(err.Error(), "EOF") {
				return "want a connection reset (a transport error, no HTTP status)"
			}
			return ""
		}},
		{"cleared", func() { p.Set(FaultNone) }, func(err error) string {
			if err != nil {
				return "want the listing again, got " + err.Error()
			}
			return ""
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := p.Stats()
			tc.set()
			err := list(2 * time.Second)
			if why := tc.check(err); why != "" {
				t.Errorf("ListObjectsV2 through the proxy with fault %s: error %v (HTTP %d, code %q): %s", p.Fault(), err, status(err), code(err), why)
			}
			after := p.Stats()
			if after.Requests <= before.Requests {
				t.Errorf("proxy counted no request for fault %s", p.Fault())
			}
			if faulted := after.Faulted > before.Faulted; faulted != (p.Fault() != FaultNone) {
				t.Errorf("fault %s: Faulted went %d -> %d", p.Fault(), before.Faulted, after.Faulted)
			}
		})
	}
}
