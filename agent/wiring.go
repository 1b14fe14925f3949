package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/sbps-marshal/sbps-marshal/bucket"
	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/events"
	"github.com/sbps-marshal/sbps-marshal/gate"
	"github.com/sbps-marshal/sbps-marshal/ims"
	"github.com/sbps-marshal/sbps-marshal/internal/tlsconf"
	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/metrics"
	"github.com/sbps-marshal/sbps-marshal/natsauth"
	"github.com/sbps-marshal/sbps-marshal/projector"
	"github.com/sbps-marshal/sbps-marshal/sdnotify"
	"github.com/sbps-marshal/sbps-marshal/svid"
)

// New builds the agent from a validated configuration: the S3 and IMS
// clients, the targetcli driver behind the save guard, the event sources,
// the node gate, the metrics, the LUN registry and the reconciler.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger, o Options) (*Agent, error) {
	s3, imsClient, err := clients(ctx, cfg, log, o.Token)
	if err != nil {
		return nil, err
	}
	driver, guard, err := lioDriver(cfg, log, o)
	if err != nil {
		return nil, err
	}
	auth, err := natsauth.New(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	built := false
	defer func() {
		if !built {
			auth.Close()
		}
	}()
	sources, err := eventSources(cfg, log, guard.Saved(), auth)
	if err != nil {
		return nil, err
	}
	g, err := gate.Parse(cfg.Gate, cfg.NodeName, cfg.KubectlBin, cfg.Kubeconfig, log)
	if err != nil {
		return nil, fmt.Errorf("GATE: %w", err)
	}
	m := newMetrics(driver, sources)
	reg, fallback, closeReg, choice, err := lunRegistry(ctx, cfg, log, m, auth)
	if err != nil {
		return nil, err
	}
	a := &Agent{
		cfg: cfg, log: log, driver: driver, guard: guard, target: targetService(cfg), s3: s3, ims: imsClient,
		resync: make(chan string, 1), sources: sources,
		metrics: m, notifier: sdnotify.New(getenvOr(o.Getenv)), gate: g, fallback: fallback, regChoice: choice,
		closers: []func(){closeReg, auth.Close}, onPass: o.OnPass, onBatch: o.OnBatch,
		Reconciler: newReconciler(cfg, log, o, s3, imsClient, m.InstrumentApplier(guard), guard.Saved(), reg),
	}
	a.sessions = newSessionGuard(a)
	notReady := "first full reconcile not done"
	a.ready.Store(&notReady)
	m.CollectReady(a.Ready)
	m.SetResyncInterval(cfg.ResyncInterval)
	built = true
	return a, nil
}

// clients builds the S3 and IMS clients, with their TLS settings.
func clients(ctx context.Context, cfg *config.Config, log *slog.Logger, token ims.TokenSource) (*bucket.Client, *ims.Client, error) {
	s3HTTP, err := httpClientFor(cfg, "S3")
	if err != nil {
		return nil, nil, err
	}
	imsHTTP, err := httpClientFor(cfg, "IMS")
	if err != nil {
		return nil, nil, err
	}
	var creds *aws.Credentials
	if cfg.S3CredentialFile != "" {
		c, err := bucket.LoadCredentialFile(cfg.S3CredentialFile)
		if err != nil {
			return nil, nil, fmt.Errorf("S3_CREDENTIAL_FILE: %w", err)
		}
		creds = &c
	}
	s3, err := bucket.New(ctx, bucket.Config{
		Endpoint:    cfg.S3Proto + "://" + cfg.S3Host,
		Bucket:      cfg.S3Bucket,
		Credentials: creds,
		HTTPClient:  s3HTTP,
		Timeout:     cfg.S3Timeout,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("S3 client: %w", err)
	}
	imsClient, err := newIMSClient(cfg, log, imsHTTP, token)
	if err != nil {
		return nil, nil, err
	}
	return s3, imsClient, nil
}

// lioDriver builds the targetcli driver, saving to the guard's staging
// file, and the guard: the one writer of saveconfig.json.
func lioDriver(cfg *config.Config, log *slog.Logger, o Options) (*lio.Driver, *lio.Guard, error) {
	dc, err := DriverConfig(cfg, o.TargetcliEnv)
	if err != nil {
		return nil, nil, err
	}
	dc.Home = filepath.Join(cfg.StateDir, "targetcli-home")
	if err := os.MkdirAll(dc.Home, 0o700); err != nil {
		return nil, nil, fmt.Errorf("creating the private TARGETCLI_HOME: %w", err)
	}
	dc.OnCall = o.OnTargetcli
	driver, err := lio.New(dc, log)
	if err != nil {
		return nil, nil, err
	}
	guard, err := lio.NewGuard(driver, cfg.LIOSaveFile, cfg.TargetIQN)
	if err != nil {
		return nil, nil, err
	}
	return driver, guard, nil
}

// DriverConfig is how the configuration drives targetcli (TARGETCLI_MODE,
// TARGETCLI_BIN, TARGETCLID_SOCKET, TARGETCLI_TIMEOUT), saving to the save
// guard's staging file; env is added to targetcli's environment.
func DriverConfig(cfg *config.Config, env []string) (lio.DriverConfig, error) {
	mode, err := lio.ParseMode(cfg.TargetcliMode)
	if err != nil {
		return lio.DriverConfig{}, err
	}
	return lio.DriverConfig{
		Mode:     mode,
		Binary:   cfg.TargetcliBin,
		Socket:   cfg.TargetclidSocket,
		SaveFile: lio.StagingFile(cfg.LIOSaveFile),
		Env:      env,
		Timeout:  cfg.TargetcliTimeout,
	}, nil
}

// newMetrics is the agent's registry, collecting the driver's counters
// and those of every event source that keeps some.
func newMetrics(driver *lio.Driver, sources []events.Source) *metrics.Metrics {
	m := metrics.New()
	m.CollectLIOStats(driver.Stats)
	for _, src := range sources {
		if s, ok := src.(events.StatsSource); ok {
			m.CollectEventStats(s.Stats)
		}
		if c, ok := src.(events.ConnectedSource); ok {
			m.CollectNATSConnected(c.Connected)
		}
	}
	return m
}

// newReconciler is the projector of this node's configuration.
func newReconciler(cfg *config.Config, log *slog.Logger, o Options, s3 *bucket.Client, imsClient *ims.Client, applier lio.Applier, saved *lio.SavedFile, reg projector.LUNRegistry) *projector.Reconciler {
	layout := projector.Layout{Bucket: cfg.S3Bucket, Mount: cfg.Mount, PEPrefix: cfg.PEPrefix}
	return &projector.Reconciler{
		Inventory: &projector.Inventory{Objects: s3, Images: imsClient, Layout: layout, Tagging: cfg.IMSTagging, Lstat: o.Lstat},
		LIO:       applier,
		SaveFile:  cfg.LIOSaveFile,
		Saved:     saved,
		Plan: projector.PlanOptions{
			Target:            cfg.TargetIQN,
			TPG:               1,
			MaxDeleteFraction: cfg.MaxDeleteFraction,
			AllowWritableTPG:  cfg.AllowWritableTPG,
		},
		Logger:   log,
		Registry: reg,
	}
}

func getenvOr(getenv func(string) string) func(string) string {
	if getenv == nil {
		return os.Getenv
	}
	return getenv
}

func eventSources(cfg *config.Config, log *slog.Logger, saved *lio.SavedFile, auth *natsauth.Auth) ([]events.Source, error) {
	w, err := events.NewWatcher(events.WatcherConfig{Path: cfg.LIOSaveFile, Saved: saved}, log)
	if err != nil {
		return nil, fmt.Errorf("saveconfig.json watcher: %w", err)
	}
	sources := []events.Source{w}
	if len(cfg.NATSURL) == 0 {
		return sources, nil
	}
	n, err := natsSource(cfg, log, auth)
	if err != nil {
		return nil, err
	}
	return append(sources, n), nil
}

// natsSource is the NATS event source of the configuration.
func natsSource(cfg *config.Config, log *slog.Logger, auth *natsauth.Auth) (*events.NATSSource, error) {
	nc := events.NATSConfig{
		URLs:      cfg.NATSURL,
		S3Subject: cfg.NATSS3Subject, IMSSubject: cfg.NATSIMSSubject, ResyncSubject: cfg.NATSResyncSubject, Stream: cfg.NATSStream,
		NodeName: cfg.NodeName, Bucket: cfg.S3Bucket, Auth: auth.Auth(),
	}
	n, err := events.NewNATS(nc, log)
	if err != nil {
		return nil, fmt.Errorf("NATS: %w", err)
	}
	return n, nil
}

// NewIMSClient builds the IMS client the configuration describes
// (API_GATEWAY, IMS_URI, IMS_AUTH, CA_FILE, IMS_TIMEOUT), as the agent uses it.
func NewIMSClient(cfg *config.Config, log *slog.Logger) (*ims.Client, error) {
	httpClient, err := httpClientFor(cfg, "IMS")
	if err != nil {
		return nil, err
	}
	return newIMSClient(cfg, log, httpClient, nil)
}

func newIMSClient(cfg *config.Config, log *slog.Logger, hc *http.Client, token ims.TokenSource) (*ims.Client, error) {
	if token == nil {
		var err error
		if token, err = tokenSource(cfg, log); err != nil {
			return nil, err
		}
	}
	c, err := ims.New(ims.Config{BaseURL: cfg.APIGateway + "/" + cfg.IMSURI, HTTPClient: hc, Token: token, Timeout: cfg.IMSTimeout})
	if err != nil {
		return nil, fmt.Errorf("IMS client: %w", err)
	}
	return c, nil
}

func tokenSource(cfg *config.Config, log *slog.Logger) (ims.TokenSource, error) {
	switch cfg.IMSAuth {
	case "none":
		return ims.NoToken{}, nil
	case "token-file":
		return ims.TokenFile(cfg.IMSTokenFile), nil
	}
	jc, err := JWTConfig(cfg, log)
	if err != nil {
		return nil, err
	}
	return svid.NewJWTSource(jc), nil
}

// JWTConfig is how the agent gets its JWT-SVID for IMS (IMS_AUTH=spiffe):
// the SPIFFE source SPIFFE_SOURCE chooses, the audience, and the node's
// xname when it has one.
func JWTConfig(cfg *config.Config, log *slog.Logger) (svid.JWTConfig, error) {
	xname, err := svid.ReadXName(cfg.XNameFile)
	if err != nil {
		log.Warn("no xname; only the node-independent SPIFFE ID is accepted", "err", err)
		xname = ""
	}
	cli, err := svid.ChooseCLI(cfg.SPIFFESource, cfg.SpireAgentPath, cfg.SpireAgentSock, log, "IMS")
	if err != nil {
		return svid.JWTConfig{}, err
	}
	return svid.JWTConfig{Socket: cfg.SpireAgentSock, Audience: cfg.SpireJWTAudience, XName: xname, Logger: log, CLI: cli}, nil
}

// httpClientFor returns the HTTP client for IMS or S3 (TLSOptions).
func httpClientFor(cfg *config.Config, service string) (*http.Client, error) {
	return tlsconf.Client(TLSOptions(cfg, service))
}

// TLSOptions is how the agent verifies IMS or S3 (service): certificates
// verified against the system pool plus CA_FILE, unless
// TLS_INSECURE_SKIP_VERIFY=true; a verification failure names the host,
// the certificate's issuer and the fix.
func TLSOptions(cfg *config.Config, service string) tlsconf.Options {
	o := tlsconf.Options{Service: service, CAFile: cfg.CAFile, InsecureSkipVerify: cfg.TLSInsecure}
	if service == "S3" {
		o.Alternative = "S3_PROTO=http, as the s3fs mount of " + cfg.S3Bucket + " itself uses (url=http://" + cfg.S3Host + ")"
	}
	return o
}
