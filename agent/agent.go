// Package agent wires the configuration to the clients (S3, IMS, SPIFFE,
// targetcli) and runs the reconcile loop: a full pass at start, then on a
// resync timer, on request (SIGHUP), and sooner while images are pending.
//
// Only one pass runs at a time; a request that arrives during a pass is
// remembered and served by one more pass afterwards.
package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/sbps-marshal/sbps-marshal/bucket"
	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/ims"
	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/projector"
	"github.com/sbps-marshal/sbps-marshal/svid"
)

// Agent is one node's projector with its clients.
type Agent struct {
	cfg        *config.Config
	log        *slog.Logger
	driver     *lio.Driver
	s3         *bucket.Client
	ims        *ims.Client
	Reconciler *projector.Reconciler

	lastReport atomic.Pointer[projector.Report]
	resync     chan string
}

// Options are dependencies tests and the demo may replace.
type Options struct {
	// TargetcliEnv is added to targetcli's environment (the simulator's node).
	TargetcliEnv []string
	// Token overrides the IMS token source chosen by IMS_AUTH.
	Token ims.TokenSource
	// Lstat overrides how files under the mount are examined (tests model
	// s3fs showing a fresh upload at 0 bytes with it).
	Lstat func(string) (fs.FileInfo, error)
}

// New builds the agent from a validated configuration.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger, o Options) (*Agent, error) {
	httpClient, err := httpClientFor(cfg.CAFile)
	if err != nil {
		return nil, err
	}
	var creds *aws.Credentials
	if cfg.S3CredentialFile != "" {
		c, err := bucket.LoadCredentialFile(cfg.S3CredentialFile)
		if err != nil {
			return nil, fmt.Errorf("S3_CREDENTIAL_FILE: %w", err)
		}
		creds = &c
	}
	s3, err := bucket.New(ctx, bucket.Config{
		Endpoint:    cfg.S3Proto + "://" + cfg.S3Host,
		Bucket:      cfg.S3Bucket,
		Credentials: creds,
		HTTPClient:  httpClient,
	})
	if err != nil {
		return nil, fmt.Errorf("S3 client: %w", err)
	}
	token := o.Token
	if token == nil {
		token, err = tokenSource(cfg, log)
		if err != nil {
			return nil, err
		}
	}
	imsClient, err := ims.New(ims.Config{
		BaseURL:    cfg.APIGateway + "/" + cfg.IMSURI,
		HTTPClient: httpClient,
		Token:      token,
		Timeout:    cfg.IMSTimeout,
	})
	if err != nil {
		return nil, fmt.Errorf("IMS client: %w", err)
	}
	mode, err := lio.ParseMode(cfg.TargetcliMode)
	if err != nil {
		return nil, err
	}
	home := filepath.Join(cfg.StateDir, "targetcli-home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, fmt.Errorf("creating the private TARGETCLI_HOME: %w", err)
	}
	driver, err := lio.New(lio.DriverConfig{
		Mode:     mode,
		Binary:   cfg.TargetcliBin,
		Socket:   cfg.TargetclidSocket,
		SaveFile: cfg.LIOSaveFile,
		Home:     home,
		Env:      o.TargetcliEnv,
		Timeout:  cfg.TargetcliTimeout,
	}, log)
	if err != nil {
		return nil, err
	}
	layout := projector.Layout{Bucket: cfg.S3Bucket, Mount: cfg.Mount, PEPrefix: cfg.PEPrefix}
	a := &Agent{
		cfg: cfg, log: log, driver: driver, s3: s3, ims: imsClient,
		resync: make(chan string, 1),
		Reconciler: &projector.Reconciler{
			Inventory: &projector.Inventory{Objects: s3, Images: imsClient, Layout: layout, Tagging: cfg.IMSTagging, Lstat: o.Lstat},
			LIO:       driver,
			SaveFile:  cfg.LIOSaveFile,
			Plan: projector.PlanOptions{
				Target:            cfg.TargetIQN,
				TPG:               1,
				MaxDeleteFraction: cfg.MaxDeleteFraction,
				AllowWritableTPG:  cfg.AllowWritableTPG,
			},
			Logger: log,
		},
	}
	return a, nil
}

// Close releases the agent's resources.
func (a *Agent) Close() error { return a.driver.Close() }

// Driver exposes the targetcli driver (for its counters).
func (a *Agent) Driver() *lio.Driver { return a.driver }

// LastReport returns the outcome of the latest pass, or nil.
func (a *Agent) LastReport() *projector.Report { return a.lastReport.Load() }

// Resync asks the running loop for a full pass now. It never blocks.
func (a *Agent) Resync(trigger string) {
	select {
	case a.resync <- trigger:
	default: // one is already queued; it will see the latest state
	}
}

// Status runs a dry pass and returns the status view.
func (a *Agent) Status(ctx context.Context) ([]projector.Entry, *projector.Report, error) {
	rep, err := a.Reconciler.Sync(ctx, projector.SyncOptions{DryRun: true, Trigger: "status"})
	if err != nil {
		return nil, nil, err
	}
	return a.statusOf(rep), rep, nil
}

func (a *Agent) statusOf(rep *projector.Report) []projector.Entry {
	return projector.StatusOf(rep.Desired, rep.Plan, rep.After, a.Reconciler.Inventory.Layout, a.cfg.TargetIQN, 1)
}

// SyncOnce runs one full pass.
func (a *Agent) SyncOnce(ctx context.Context, o projector.SyncOptions) (*projector.Report, error) {
	rep, err := a.Reconciler.Sync(ctx, o)
	if rep != nil {
		a.lastReport.Store(rep)
	}
	return rep, err
}

// Run is the daemon: it saves LIO's live state so saveconfig.json is
// current, reconciles, and keeps reconciling until ctx ends. Errors of a
// pass are logged and retried with backoff; they never stop the loop.
func (a *Agent) Run(ctx context.Context, ready func()) error {
	if err := a.driver.Save(ctx); err != nil {
		return fmt.Errorf("saving LIO's live state before the first pass: %w", err)
	}
	backoff := newBackoff(time.Second, a.cfg.ResyncInterval)
	trigger := "start"
	first := true
	for {
		rep, err := a.SyncOnce(ctx, projector.SyncOptions{Trigger: trigger})
		next := a.cfg.ResyncInterval
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			next = backoff.next()
			a.log.Error("pass failed; projections are left as they are", "err", err, "retry_in", next)
		default:
			backoff.reset()
			a.logPass(rep)
			if len(rep.Desired.Pending) > 0 || !rep.Desired.RootfsComplete {
				next = min(next, backoff.next())
			}
		}
		if first && err == nil {
			first = false
			if ready != nil {
				ready()
			}
		}
		timer := time.NewTimer(next)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case trigger = <-a.resync:
			timer.Stop()
		case <-timer.C:
			trigger = "resync timer"
		}
	}
}

func (a *Agent) logPass(rep *projector.Report) {
	counts := map[projector.State]int{}
	for _, e := range a.statusOf(rep) {
		counts[e.State]++
	}
	a.log.Info("pass done", "duration", rep.Duration.Round(time.Millisecond), "changes", len(rep.Plan.Changes),
		"projected", counts[projector.Projected], "pending", counts[projector.Pending], "rejected", counts[projector.Rejected],
		"held", counts[projector.Held], "foreign", counts[projector.Foreign])
}

func tokenSource(cfg *config.Config, log *slog.Logger) (ims.TokenSource, error) {
	switch cfg.IMSAuth {
	case "none":
		return ims.NoToken{}, nil
	case "token-file":
		return ims.TokenFile(cfg.IMSTokenFile), nil
	}
	xname, err := svid.ReadXName(cfg.XNameFile)
	if err != nil {
		log.Warn("no xname; only the node-independent SPIFFE ID is accepted", "err", err)
		xname = ""
	}
	return svid.NewJWTSource(svid.JWTConfig{Socket: cfg.SpireAgentSock, Audience: cfg.SpireJWTAudience, XName: xname, Logger: log}), nil
}

// httpClientFor returns a client that verifies TLS against the system roots
// plus caFile, if given.
func httpClientFor(caFile string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("CA_FILE: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("CA_FILE: no PEM certificate found in " + caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr}, nil
}

// backoff doubles from min to max.
type backoff struct{ min, max, cur time.Duration }

func newBackoff(min, max time.Duration) *backoff { return &backoff{min: min, max: max} }

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return b.cur
}

func (b *backoff) reset() { b.cur = 0 }
