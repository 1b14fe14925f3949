package bridge

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sbps-marshal/sbps-marshal/events/s3event"
	"github.com/sbps-marshal/sbps-marshal/internal/testutil"
	"github.com/sbps-marshal/sbps-marshal/rig"
)

func reference(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "reference", "s3events", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// startWebhook serves a Webhook over real HTTP.
func startWebhook(t *testing.T, cfg WebhookConfig, nats string) (*Webhook, *httptest.Server) {
	t.Helper()
	wh, err := NewWebhook(connect(t, nats), cfg, testutil.Logger(t))
	if err != nil {
		t.Fatalf("NewWebhook: %v", err)
	}
	srv := httptest.NewServer(wh)
	t.Cleanup(srv.Close)
	return wh, srv
}

func post(t *testing.T, url, contentType, auth string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestWebhookPublishesByteIdentical(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stream bool
		file   string
	}{
		{"core rgw-put-real", false, "rgw-put-real.json"},
		{"core rgw-put", false, "rgw-put.json"},
		{"jetstream rgw-put-real", true, "rgw-put-real.json"},
		{"jetstream rgw-put", true, "rgw-put.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := rig.NATSForTest(t, rig.NATSOptions{})
			obs := connect(t, n.ClientURL())
			var st jetstream.Stream
			cfg := WebhookConfig{}
			if tc.stream {
				st = ensureStream(t, obs)
				cfg.Stream = testStream
			}
			msgs := subscribe(t, obs, s3Subject)
			wh, srv := startWebhook(t, cfg, n.ClientURL())
			body := reference(t, tc.file)
			if code, text := post(t, srv.URL, "application/json", "", body); code != http.StatusOK {
				t.Fatalf("POST = %d %q, want 200", code, text)
			}
			if tc.stream {
				// The 200 came after the stream's ack: the message is stored now.
				if got := streamMsgs(t, st); got != 1 {
					t.Fatalf("stream holds %d messages right after 200, want 1", got)
				}
			}
			select {
			case m := <-msgs:
				if !bytes.Equal(m.Data, body) {
					t.Errorf("published body differs from the POSTed one:\n got %q\nwant %q", m.Data, body)
				}
				n, _ := s3event.Decode(body)
				if got, want := m.Header.Get(jetstream.MsgIDHeader), NotificationID(n); got != want {
					t.Errorf("Nats-Msg-Id = %q, want %q", got, want)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no message reached the subscriber")
			}
			if s := wh.Stats(); s.Received != 1 || s.Published != 1 {
				t.Errorf("Stats = %+v, want received 1, published 1", s)
			}
		})
	}
}

func TestWebhookDuplicateDedupedByStream(t *testing.T) {
	n := rig.NATSForTest(t, rig.NATSOptions{})
	obs := connect(t, n.ClientURL())
	st := ensureStream(t, obs)
	wh, srv := startWebhook(t, WebhookConfig{Stream: testStream}, n.ClientURL())
	body := reference(t, "rgw-put-real.json")
	// RGW redelivers the same event, possibly formatted differently.
	reformatted := bytes.ReplaceAll(body, []byte(`,"`), []byte(`, "`))
	other := bytes.ReplaceAll(body, []byte(`66E42466712CA919`), []byte(`66E42466712CA920`))
	for i, b := range [][]byte{body, body, reformatted, other} {
		if code, text := post(t, srv.URL, "application/json", "", b); code != http.StatusOK {
			t.Fatalf("POST %d = %d %q, want 200", i, code, text)
		}
	}
	if got := streamMsgs(t, st); got != 2 {
		t.Errorf("stream holds %d messages, want 2 (one event, its two redeliveries dropped, one other event)", got)
	}
	if s := wh.Stats(); s.Published != 4 || s.Duplicates != 2 {
		t.Errorf("Stats = %+v, want published 4, duplicates 2", s)
	}
}

func TestWebhookNATSDownThenBack(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stream bool
	}{{"core", false}, {"jetstream", true}} {
		t.Run(tc.name, func(t *testing.T) {
			n := rig.NATSForTest(t, rig.NATSOptions{})
			cfg := WebhookConfig{PublishTimeout: 2 * time.Second}
			if tc.stream {
				ensureStream(t, connect(t, n.ClientURL()))
				cfg.Stream = testStream
			}
			wh, srv := startWebhook(t, cfg, n.ClientURL())
			body := reference(t, "rgw-put.json")
			if code, _ := post(t, srv.URL, "application/json", "", body); code != http.StatusOK {
				t.Fatalf("POST before the outage = %d, want 200", code)
			}
			n.Shutdown()
			if code, _ := post(t, srv.URL, "application/json", "", body); code != http.StatusServiceUnavailable {
				t.Fatalf("POST with NATS down = %d, want 503", code)
			}
			if s := wh.Stats(); s.Unavailable != 1 || s.Published != 1 {
				t.Errorf("Stats = %+v, want unavailable 1, published 1", s)
			}
			if err := n.Restart(); err != nil {
				t.Fatal(err)
			}
			// RGW retries until it gets 200.
			testutil.WaitFor(t, 15*time.Second, "the webhook answering 200 after the restart", func() error {
				if code, text := post(t, srv.URL, "application/json", "", body); code != http.StatusOK {
					return fmt.Errorf("POST after restart = %d %q", code, text)
				}
				return nil
			})
		})
	}
}

func TestWebhookRequests(t *testing.T) {
	const token = "s3cr3t-token"
	valid := reference(t, "rgw-put-real.json")
	rejected := func(reason string) func(WebhookStats) uint64 {
		return func(s WebhookStats) uint64 { return s.Rejected[reason] }
	}
	for _, tc := range []struct {
		name        string
		token       string
		method      string
		contentType string
		auth        string
		body        []byte
		want        int
		published   bool
		counter     func(WebhookStats) uint64
	}{
		{"no token configured", "", "", "application/json", "", valid, 200, true, func(s WebhookStats) uint64 { return s.Published }},
		{"token right", token, "", "application/json", "Bearer " + token, valid, 200, true, func(s WebhookStats) uint64 { return s.Published }},
		{"token right, lower-case scheme", token, "", "application/json", "bearer " + token, valid, 200, true, func(s WebhookStats) uint64 { return s.Published }},
		{"token as basic password", token, "", "application/json", "Basic " + basic("rgw", token), valid, 200, true, func(s WebhookStats) uint64 { return s.Published }},
		{"token missing", token, "", "application/json", "", valid, 401, false, func(s WebhookStats) uint64 { return s.Unauthorized }},
		{"token wrong", token, "", "application/json", "Bearer s3cr3t-tokem", valid, 401, false, func(s WebhookStats) uint64 { return s.Unauthorized }},
		{"token prefix only", token, "", "application/json", "Bearer s3cr3t", valid, 401, false, func(s WebhookStats) uint64 { return s.Unauthorized }},
		{"GET", "", http.MethodGet, "application/json", "", nil, 405, false, rejected(RejectMethod)},
		{"content type text/plain", "", "", "text/plain", "", valid, 415, false, rejected(RejectContentType)},
		{"content type missing", "", "", "", "", valid, 415, false, rejected(RejectContentType)},
		{"content type with charset", "", "", "application/json; charset=utf-8", "", valid, 200, true, func(s WebhookStats) uint64 { return s.Published }},
		{"cloudevents json", "", "", "application/cloudevents+json", "", valid, 200, true, func(s WebhookStats) uint64 { return s.Published }},
		{"oversized", "", "", "application/json", "", oversized(), 413, false, rejected(RejectOversized)},
		{"garbage", "", "", "application/json", "", []byte("garbage{"), 400, false, rejected(RejectUndecodable)},
		{"json but not a notification", "", "", "application/json", "", []byte(`{"foo":1}`), 400, false, rejected(RejectUndecodable)},
		{"no usable record", "", "", "application/json", "", []byte(`{"Records":[{"eventSource":"ceph:s3","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":""}}}]}`), 400, false, rejected(RejectBadRecords)},
		{"test event", "", "", "application/json", "", reference(t, "aws-testevent.json"), 200, false, func(s WebhookStats) uint64 { return s.Tests }},
		{"no records", "", "", "application/json", "", []byte(`{"Records":[]}`), 200, false, func(s WebhookStats) uint64 { return s.Empty }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := rig.NATSForTest(t, rig.NATSOptions{})
			msgs := subscribe(t, connect(t, n.ClientURL()), s3Subject)
			wh, srv := startWebhook(t, WebhookConfig{Token: tc.token}, n.ClientURL())
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			req, _ := http.NewRequestWithContext(t.Context(), method, srv.URL, bytes.NewReader(tc.body))
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("status = %d, want %d", resp.StatusCode, tc.want)
			}
			if got := tc.counter(wh.Stats()); got != 1 {
				t.Errorf("counter = %d, want 1 (stats %+v)", got, wh.Stats())
			}
			if tc.published {
				select {
				case <-msgs:
				case <-time.After(5 * time.Second):
					t.Fatal("nothing published, want the notification")
				}
			} else {
				if s := wh.Stats(); s.Published != 0 {
					t.Errorf("published = %d, want 0", s.Published)
				}
				select {
				case m := <-msgs:
					t.Errorf("published %q, want nothing", m.Data)
				case <-time.After(100 * time.Millisecond):
				}
			}
		})
	}
}

func basic(user, pw string) string {
	r, _ := http.NewRequest(http.MethodGet, "http://x", nil)
	r.SetBasicAuth(user, pw)
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Basic ")
}

func oversized() []byte {
	b := []byte(`{"Records":[],"pad":"`)
	b = append(b, bytes.Repeat([]byte("x"), DefaultMaxBody)...)
	return append(b, `"}`...)
}

func TestWebhookTokenNeverInLogs(t *testing.T) {
	const token = "very-secret-value"
	n := rig.NATSForTest(t, rig.NATSOptions{})
	var logs bytes.Buffer
	wh, err := NewWebhook(connect(t, n.ClientURL()), WebhookConfig{Token: token}, slogTo(&logs))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(wh)
	t.Cleanup(srv.Close)
	post(t, srv.URL, "application/json", "Bearer wrong-"+token, reference(t, "rgw-put.json"))
	post(t, srv.URL, "application/json", "Bearer "+token, []byte("garbage"))
	if strings.Contains(logs.String(), token) {
		t.Errorf("logs contain the token:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "unauthorized") {
		t.Errorf("logs do not mention the unauthorized request:\n%s", logs.String())
	}
}

func TestListenAndServe(t *testing.T) {
	for _, tc := range []struct {
		addr     string
		loopback bool
		wantErr  bool
	}{
		{":0", true, false},
		{"127.0.0.1:0", true, false},
		{"no-port", false, true},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			ln, err := Listen(tc.addr)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Listen(%q) error = %v, want error %v", tc.addr, err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if ip := ln.Addr().(*net.TCPAddr).IP; ip.IsLoopback() != tc.loopback {
				t.Errorf("Listen(%q) bound %s, loopback = %v, want %v", tc.addr, ip, ip.IsLoopback(), tc.loopback)
			}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() {
				done <- Serve(ctx, ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) }))
			}()
			resp, err := http.Get("http://" + ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusTeapot {
				t.Errorf("status = %d, want 418", resp.StatusCode)
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve after cancel = %v, want nil", err)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("Serve did not return after cancel")
			}
		})
	}
}

func TestReadTokenFile(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content string
		mode    os.FileMode
		want    string
		wantErr string
	}{
		{"ok", "tok3n\n", 0o600, "tok3n", ""},
		{"ok owner read only", "  tok3n  ", 0o400, "tok3n", ""},
		{"group readable", "tok3n", 0o640, "", "chmod 600"},
		{"world readable", "tok3n", 0o644, "", "chmod 600"},
		{"empty", " \n", 0o600, "", "empty"},
		{"two words", "a b", 0o600, "", "one token"},
		{"missing", "", 0, "", "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "token")
			if tc.mode != 0 {
				if err := os.WriteFile(path, []byte(tc.content), tc.mode); err != nil {
					t.Fatal(err)
				}
				os.Chmod(path, tc.mode)
			}
			got, err := ReadTokenFile(path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ReadTokenFile error = %v, want one containing %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "tok3n") {
					t.Errorf("error %q contains the token", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ReadTokenFile = %q, %v, want %q", got, err, tc.want)
			}
		})
	}
}

func TestNewWebhookNeedsNATS(t *testing.T) {
	if _, err := NewWebhook(nil, WebhookConfig{}, nil); err == nil || !strings.Contains(err.Error(), "NATS_URL") {
		t.Errorf("NewWebhook(nil) error = %v, want one naming NATS_URL", err)
	}
}
