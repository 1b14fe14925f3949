package bucket

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// Defaults for the Config fields.
const (
	DefaultBucket      = "boot-images"
	DefaultRegion      = "us-east-1"
	DefaultTimeout     = 30 * time.Second
	DefaultPageSize    = 1000
	DefaultMaxAttempts = 3
)

// ErrNotFound means the object does not exist (HTTP 404). Test with
// errors.Is.
var ErrNotFound = errors.New("object not found")

// ErrTooLarge means Get refused an object bigger than the caller's limit.
var ErrTooLarge = errors.New("object larger than the allowed limit")

// ErrIncompleteListing means the server's listing could not be proved
// complete (a truncated page without a usable continuation token). The S3
// server is at fault; no objects are returned, so nothing is taken as gone.
var ErrIncompleteListing = errors.New("S3 listing cannot be proved complete")

// ErrAccessDenied means the server refused the credentials or the request
// (unknown access key, bad signature, access denied). Retrying will not help;
// the credentials need fixing.
var ErrAccessDenied = errors.New("access denied")

// Object is one object of the bucket as S3 reports it.
type Object struct {
	Key  string
	Size int64
	// ETag with the surrounding quotes removed; an opaque string. Multipart
	// objects keep their "<hex>-<parts>" form.
	ETag         string
	LastModified time.Time
}

// Config says which bucket to read and how. Only Endpoint is required.
type Config struct {
	// Endpoint is the S3 base URL, S3_PROTO + "://" + S3_HOST, for example
	// https://rgw-vip.nmn. Required. Requests use path-style addressing
	// (https://host/bucket/key), as Ceph RGW expects.
	Endpoint string
	// Bucket defaults to DefaultBucket ("boot-images").
	Bucket string
	// Region is used only for request signing (RGW ignores it). Defaults to
	// DefaultRegion ("us-east-1").
	Region string
	// Credentials are static keys, typically from LoadCredentialFile
	// (S3_CREDENTIAL_FILE). Nil means the SDK's default chain (environment,
	// shared config files, instance roles).
	Credentials *aws.Credentials
	// HTTPClient, when set, is used as is (its transport decides TLS). It
	// cannot be combined with CAFile.
	HTTPClient *http.Client
	// CAFile is a PEM bundle trusted in addition to the system roots. TLS
	// certificates are always verified; there is no switch to turn that off.
	CAFile string
	// Timeout bounds each Head and Get, and each page of List, including
	// retries. Defaults to DefaultTimeout (30s).
	Timeout time.Duration
	// PageSize is the number of keys asked for per ListObjectsV2 page.
	// Defaults to DefaultPageSize (1000, the S3 maximum).
	PageSize int32
	// MaxAttempts is the number of tries per request, including the first
	// (transient errors only: 5xx, throttling, connection failures).
	// Defaults to DefaultMaxAttempts (3).
	MaxAttempts int
}

// Stats counts requests sent by a Client since it was made.
type Stats struct {
	ListPages int64 // ListObjectsV2 calls
	Heads     int64 // HeadObject calls
	Gets      int64 // GetObject calls
}

// Client reads one bucket. It is safe for concurrent use.
type Client struct {
	s3       *s3.Client
	bucket   string
	endpoint string
	timeout  time.Duration
	pageSize int32

	listPages atomic.Int64
	heads     atomic.Int64
	gets      atomic.Int64
}

// New checks cfg and builds a Client. It sends no request: a wrong endpoint
// or credentials show up on the first call.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if err := checkEndpoint(cfg.Endpoint); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	if cfg.HTTPClient != nil && cfg.CAFile != "" {
		return nil, errors.New("bucket: both HTTPClient and CAFile are set: configure the CA in the HTTP client's transport, or pass only CAFile")
	}
	httpClient, err := httpClientFor(cfg)
	if err != nil {
		return nil, err
	}
	creds, err := credentialsFor(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &Client{
		s3:       newS3(cfg, httpClient, creds),
		bucket:   cfg.Bucket,
		endpoint: cfg.Endpoint,
		timeout:  cfg.Timeout,
		pageSize: cfg.PageSize,
	}, nil
}

func checkEndpoint(endpoint string) error {
	if endpoint == "" {
		return errors.New("bucket: no S3 endpoint configured: set it to S3_PROTO://S3_HOST, e.g. https://rgw-vip.nmn")
	}
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("bucket: S3 endpoint %q is not an http:// or https:// URL with a host (expected S3_PROTO://S3_HOST, e.g. https://rgw-vip.nmn)", endpoint)
	}
	return nil
}

func (cfg *Config) setDefaults() {
	if cfg.Bucket == "" {
		cfg.Bucket = DefaultBucket
	}
	if cfg.Region == "" {
		cfg.Region = DefaultRegion
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = DefaultPageSize
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
}

// httpClientFor is cfg.HTTPClient, else the SDK's client trusting cfg.CAFile
// (or the system roots).
func httpClientFor(cfg Config) (aws.HTTPClient, error) {
	if cfg.HTTPClient != nil {
		return cfg.HTTPClient, nil
	}
	tlsConfig, err := tlsConfig(cfg.CAFile)
	if err != nil {
		return nil, err
	}
	return awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		tr.TLSClientConfig = tlsConfig
	}), nil
}

// credentialsFor: with explicit keys nothing is read from the environment
// or shared config files; otherwise only the credential chain is taken
// from there.
func credentialsFor(ctx context.Context, cfg Config) (aws.CredentialsProvider, error) {
	if cfg.Credentials != nil {
		c := *cfg.Credentials
		return credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken), nil
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, config.WithRegion(cfg.Region))
	if err != nil {
		return nil, fmt.Errorf("bucket: load the AWS SDK's default credential chain (environment, shared config files); or set S3_CREDENTIAL_FILE: %w", err)
	}
	return awsCfg.Credentials, nil
}

// newS3 builds the SDK client: path-style requests to the endpoint, and
// retries without the SDK's retry quota.
func newS3(cfg Config, httpClient aws.HTTPClient, creds aws.CredentialsProvider) *s3.Client {
	maxAttempts := cfg.MaxAttempts
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(strings.TrimSuffix(cfg.Endpoint, "/")),
		Region:       cfg.Region,
		UsePathStyle: true,
		Credentials:  creds,
		HTTPClient:   httpClient,
		Retryer: retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = maxAttempts
			o.MaxBackoff = time.Second
			o.RateLimiter = ratelimit.None
		}),
		// Ceph RGW releases before Squid reject the flexible checksums
		// newer SDKs send by default; send and check them only when an
		// operation requires it.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

func tlsConfig(caFile string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile == "" {
		return c, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("bucket: read S3 CA file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("bucket: S3 CA file %s holds no PEM certificate; point it at the CA bundle that signed the S3 endpoint's certificate", caFile)
	}
	c.RootCAs = pool
	return c, nil
}

// Bucket is the bucket this client reads.
func (c *Client) Bucket() string { return c.bucket }

// Stats returns the request counts so far.
func (c *Client) Stats() Stats {
	return Stats{ListPages: c.listPages.Load(), Heads: c.heads.Load(), Gets: c.gets.Load()}
}

// List returns every object whose key starts with prefix ("" for the whole
// bucket), reading all pages. If any page fails, or the listing cannot be
// proved complete, it returns an error and no objects at all: a caller must
// never act (delete) on a partial listing. A listing is complete when its
// last page says IsTruncated=false; a page that says it is truncated but
// gives no continuation token, hands back a token the listing already
// followed (a loop), or does not say whether it is truncated ends the
// listing with an error, never with fewer objects. Objects come in S3's
// order (ascending UTF-8 key order).
func (c *Client) List(ctx context.Context, prefix string) ([]Object, error) {
	in := &s3.ListObjectsV2Input{
		Bucket:  aws.String(c.bucket),
		Prefix:  aws.String(prefix),
		MaxKeys: aws.Int32(c.pageSize),
	}
	fail := func(page, n int, err error) error {
		return fmt.Errorf("bucket: list s3://%s/%s* at %s failed on page %d after %d objects (no partial listing returned): %w",
			c.bucket, prefix, c.endpoint, page, n, err)
	}
	var objects []Object
	followed := map[string]bool{}
	for page := 1; ; page++ {
		out, err := c.listPage(ctx, in)
		if err != nil {
			return nil, fail(page, len(objects), classify(err, false))
		}
		for _, o := range out.Contents {
			objects = append(objects, Object{
				Key:          aws.ToString(o.Key),
				Size:         aws.ToInt64(o.Size),
				ETag:         unquote(aws.ToString(o.ETag)),
				LastModified: aws.ToTime(o.LastModified),
			})
		}
		if out.IsTruncated == nil {
			return nil, fail(page, len(objects), fmt.Errorf("%w: the page has no IsTruncated element, so the server does not say whether more objects follow", ErrIncompleteListing))
		}
		if !*out.IsTruncated {
			return objects, nil
		}
		next := aws.ToString(out.NextContinuationToken)
		switch {
		case next == "":
			return nil, fail(page, len(objects), fmt.Errorf("%w: the page says IsTruncated=true but gives no continuation token, so the rest cannot be read", ErrIncompleteListing))
		case followed[next]:
			return nil, fail(page, len(objects), fmt.Errorf("%w: the page hands back continuation token %q, which the listing already followed (the server is looping)", ErrIncompleteListing, excerpt(next)))
		}
		followed[next] = true
		in.ContinuationToken = aws.String(next)
	}
}

func (c *Client) listPage(ctx context.Context, in *s3.ListObjectsV2Input) (*s3.ListObjectsV2Output, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	c.listPages.Add(1)
	return c.s3.ListObjectsV2(ctx, in)
}

// excerpt shortens an opaque server token for a message.
func excerpt(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// Head returns the object's metadata, or an error matching ErrNotFound if
// there is no such key.
func (c *Client) Head(ctx context.Context, key string) (Object, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	c.heads.Add(1)
	out, err := c.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(c.bucket), Key: aws.String(key)})
	if err != nil {
		return Object{}, fmt.Errorf("bucket: head s3://%s/%s at %s: %w", c.bucket, key, c.endpoint, classify(err, true))
	}
	return Object{
		Key:          key,
		Size:         aws.ToInt64(out.ContentLength),
		ETag:         unquote(aws.ToString(out.ETag)),
		LastModified: aws.ToTime(out.LastModified),
	}, nil
}

// Get returns the object's content. It refuses (ErrTooLarge) an object of
// more than limit bytes without reading it all; limit must be positive.
func (c *Client) Get(ctx context.Context, key string, limit int64) ([]byte, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("bucket: get s3://%s/%s: limit %d must be positive", c.bucket, key, limit)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	c.gets.Add(1)
	out, err := c.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(c.bucket), Key: aws.String(key)})
	if err != nil {
		return nil, fmt.Errorf("bucket: get s3://%s/%s at %s: %w", c.bucket, key, c.endpoint, classify(err, true))
	}
	defer out.Body.Close()
	if n := aws.ToInt64(out.ContentLength); n > limit {
		return nil, fmt.Errorf("bucket: get s3://%s/%s: %d bytes, over the %d-byte limit: %w", c.bucket, key, n, limit, ErrTooLarge)
	}
	data, err := io.ReadAll(io.LimitReader(out.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("bucket: read body of s3://%s/%s: %w", c.bucket, key, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("bucket: get s3://%s/%s: body over the %d-byte limit: %w", c.bucket, key, limit, ErrTooLarge)
	}
	return data, nil
}

// unquote strips one pair of surrounding double quotes from an ETag.
func unquote(etag string) string {
	if len(etag) >= 2 && etag[0] == '"' && etag[len(etag)-1] == '"' {
		return etag[1 : len(etag)-1]
	}
	return etag
}

// classify adds a sentinel and a hint to errors a caller or operator can act
// on, keeping the original error in the chain. objectOp says whether a 404
// means the object is missing (Head, Get) rather than the bucket.
func classify(err error, objectOp bool) error {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "Forbidden",
			"InvalidToken", "ExpiredToken",
			"XAdminUserNotFound": // versitygw answers an unknown key with 404 and this code
			return fmt.Errorf("%w (%s): check the S3 access key and secret (S3_CREDENTIAL_FILE): %w", ErrAccessDenied, ae.ErrorCode(), err)
		case "NoSuchBucket":
			return fmt.Errorf("the bucket does not exist; check S3_BUCKET: %w", err)
		}
	}
	var ue *url.Error
	if errors.As(err, &ue) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("S3 endpoint unreachable; check S3_PROTO/S3_HOST, DNS and that the server is up: %w", err)
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		switch re.HTTPStatusCode() {
		case http.StatusNotFound:
			if objectOp {
				return fmt.Errorf("%w: %w", ErrNotFound, err)
			}
		case http.StatusForbidden:
			return fmt.Errorf("%w: check the S3 access key and secret (S3_CREDENTIAL_FILE): %w", ErrAccessDenied, err)
		}
		return err
	}
	return err
}
