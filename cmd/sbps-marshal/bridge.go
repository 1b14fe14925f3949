package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sbps-marshal/sbps-marshal/agent"
	"github.com/sbps-marshal/sbps-marshal/bridge"
	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/events"
	"github.com/sbps-marshal/sbps-marshal/natsauth"
)

// bridgeMain runs `sbps-marshal bridge webhook|ims` until ctx ends.
func bridgeMain(ctx context.Context, sub string, cfg *config.Config, log *slog.Logger, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintf(stderr, "sbps-marshal bridge %s: %v\n", sub, err)
		return 1
	}
	if sub != "webhook" && sub != "ims" {
		return fail(errors.New("unknown bridge; want webhook (Ceph RGW HTTP push -> NATS) or ims (IMS changes -> NATS)"))
	}
	if len(cfg.NATSURL) == 0 {
		return fail(errors.New("NATS_URL is empty: a bridge publishes to NATS; set SBPS_MARSHAL_NATS_URL (or --nats-url)"))
	}
	log = log.With("bridge", sub)
	auth, err := natsauth.New(ctx, cfg, log)
	if err != nil {
		return fail(err)
	}
	defer auth.Close()
	nc, err := bridgeConnect(cfg, auth, sub, log)
	if err != nil {
		return fail(err)
	}
	defer nc.Drain()
	if cfg.NATSStream != "" {
		ensureStream(ctx, nc, cfg, log)
	}
	if sub == "webhook" {
		err = runWebhook(ctx, nc, cfg, log)
	} else {
		err = runIMS(ctx, nc, cfg, log)
	}
	if err != nil {
		return fail(err)
	}
	log.Info("stopped")
	return 0
}

// bridgeConnect connects to NATS, retrying in the background when no server
// answers yet, or no X.509-SVID has arrived with NATS_SPIFFE=true (the
// bridge then answers 503 / skips polls until it does).
func bridgeConnect(cfg *config.Config, auth *natsauth.Auth, sub string, log *slog.Logger) (*nats.Conn, error) {
	host, _ := os.Hostname()
	var lastErr atomic.Pointer[string] // the failed attempt's error logged last
	opts, err := auth.Options()
	if err != nil {
		return nil, err
	}
	opts = append(opts,
		nats.Name("sbps-marshal bridge "+sub+"@"+host),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(2*time.Second),
		nats.ReconnectBufSize(-1), // publish fails while disconnected: RGW gets 503 and retries
		nats.ConnectHandler(func(c *nats.Conn) {
			lastErr.Store(nil)
			log.Info("NATS connected", "server", c.ConnectedUrlRedacted())
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			msg := err.Error()
			if prev := lastErr.Swap(&msg); prev == nil || *prev != msg {
				log.Warn("NATS connection attempt failed; retrying", "err", err)
			}
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn("NATS disconnected", "err", err) }),
		nats.ReconnectHandler(func(c *nats.Conn) {
			lastErr.Store(nil)
			log.Info("NATS reconnected", "server", c.ConnectedUrlRedacted())
		}),
	)
	nc, err := nats.Connect(strings.Join(cfg.NATSURL, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS (check NATS_URL, NATS_CREDS and the NATS_TLS_* files): %w", err)
	}
	return nc, nil
}

// ensureStream creates NATS_STREAM when missing. Failing is not fatal: the
// publishes fail (503, retried) until an operator creates it.
func ensureStream(ctx context.Context, nc *nats.Conn, cfg *config.Config, log *slog.Logger) {
	js, err := jetstream.New(nc)
	if err == nil {
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = events.EnsureStream(tctx, js, cfg.NATSStream, []string{cfg.NATSS3Subject, cfg.NATSIMSSubject})
		cancel()
	}
	if err != nil {
		log.Warn("JetStream stream not ready; publishing fails until it exists", "stream", cfg.NATSStream, "err", err,
			"fix", events.StreamHelp(cfg.NATSStream, cfg.NATSS3Subject, cfg.NATSIMSSubject))
	}
}

func runWebhook(ctx context.Context, nc *nats.Conn, cfg *config.Config, log *slog.Logger) error {
	token := ""
	if cfg.BridgeTokenFile != "" {
		var err error
		if token, err = bridge.ReadTokenFile(cfg.BridgeTokenFile); err != nil {
			return err
		}
	}
	wh, err := bridge.NewWebhook(nc, bridge.WebhookConfig{Subject: cfg.NATSS3Subject, Stream: cfg.NATSStream, Token: token}, log)
	if err != nil {
		return err
	}
	ln, err := webhookListener(cfg, token, log)
	if err != nil {
		return err
	}
	log.Info("webhook bridge listening", "addr", ln.Addr().String(), "tls", cfg.BridgeTLSCert != "", "subject", cfg.NATSS3Subject,
		"stream", cfg.NATSStream, "token", token != "", "nats", strings.Join(config.RedactURLs(cfg.NATSURL), ","))
	err = bridge.Serve(ctx, ln, wh)
	st := wh.Stats()
	log.Info("webhook bridge stopping", "received", st.Received, "published", st.Published, "duplicates", st.Duplicates,
		"unauthorized", st.Unauthorized, "unavailable", st.Unavailable, "rejected", st.Rejected)
	return err
}

// webhookListener listens on BRIDGE_LISTEN, with HTTPS when BRIDGE_TLS_CERT
// is set, and warns about what a listener beyond loopback exposes.
func webhookListener(cfg *config.Config, token string, log *slog.Logger) (net.Listener, error) {
	ln, err := bridge.Listen(cfg.BridgeListen)
	if err != nil {
		return nil, err
	}
	if cfg.BridgeTLSCert != "" {
		if ln, err = bridge.TLSListener(ln, cfg.BridgeTLSCert, cfg.BridgeTLSKey); err != nil {
			return nil, err
		}
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && !tcp.IP.IsLoopback() {
		switch {
		case token == "":
			log.Warn("listening beyond loopback without a token: anyone who reaches this port can publish notifications; set BRIDGE_TOKEN_FILE")
		case cfg.BridgeTLSCert == "":
			log.Warn("listening beyond loopback without TLS: the token crosses the network in clear text; set BRIDGE_TLS_CERT and BRIDGE_TLS_KEY")
		}
	}
	return ln, nil
}

func runIMS(ctx context.Context, nc *nats.Conn, cfg *config.Config, log *slog.Logger) error {
	client, err := agent.NewIMSClient(cfg, log)
	if err != nil {
		return err
	}
	store, where, err := imsStore(ctx, nc, cfg, log)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	host, _ := os.Hostname()
	p, err := bridge.NewIMSPoller(nc, client, store, bridge.IMSConfig{
		Interval: cfg.BridgePoll, Subject: cfg.NATSIMSSubject, Stream: cfg.NATSStream,
		Source: "sbps-marshal bridge ims@" + host,
	}, log)
	if err != nil {
		return err
	}
	log.Info("IMS bridge polling", "ims", cfg.APIGateway+"/"+cfg.IMSURI, "interval", cfg.BridgePoll, "subject", cfg.NATSIMSSubject,
		"stream", cfg.NATSStream, "snapshot", where, "nats", strings.Join(config.RedactURLs(cfg.NATSURL), ","))
	err = p.Start(ctx)
	st := p.Stats()
	log.Info("IMS bridge stopping", "polls", st.Polls, "created", st.Created, "changed", st.Changed, "deleted", st.Deleted,
		"duplicates", st.Duplicates, "list_errors", st.ListErrors, "deferred_deletes", st.DeletesDeferred)
	return err
}

// imsStore keeps the snapshot in the JetStream KV bucket when a stream is
// configured (shared by every bridge), else in STATE_DIR. Opening the bucket
// is retried until NATS answers or ctx ends.
func imsStore(ctx context.Context, nc *nats.Conn, cfg *config.Config, log *slog.Logger) (bridge.Store, string, error) {
	if cfg.NATSStream == "" {
		path := filepath.Join(cfg.StateDir, "ims-bridge.json")
		return bridge.NewFileStore(path), path, nil
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, "", err
	}
	for {
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		kv, err := bridge.NewKVStore(tctx, js, bridge.DefaultKVBucket)
		cancel()
		if err == nil {
			return kv, "JetStream KV " + bridge.DefaultKVBucket, nil
		}
		log.Warn("cannot open the snapshot bucket yet; retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil, "", ctx.Err()
		case <-time.After(5 * time.Second):
		}
	}
}
