package deploy_test

// Tests of deploy/monitoring: the alerts (promtool check rules and promtool
// test rules), the Grafana dashboard, the scrape objects, and that every
// metric they use exists in the agent's /metrics.

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v4"

	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/events"
	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/metrics"
	"github.com/sbps-marshal/sbps-marshal/projector"
)

const monitoringDir = "monitoring"

// promtool finds promtool or fails the test saying how to get it: the
// alerts are not tested without it, and a skip would hide that.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found (%v): the alert rules cannot be checked without it; install Debian's prometheus package (apt-get install prometheus, as scripts/test-deps does) or put promtool on PATH", err)
	}
	return p
}

func runPromtool(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

type ruleFile struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"metadata"`
	Spec struct {
		Groups []ruleGroup `yaml:"groups"`
	} `yaml:"spec"`
}

type ruleGroup struct {
	Name  string `yaml:"name"`
	Rules []rule `yaml:"rules"`
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for,omitempty"`
	Labels      map[string]string `yaml:"labels,omitempty"`
	Annotations map[string]string `yaml:"annotations,omitempty"`
}

func readRules(t *testing.T) ruleFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(monitoringDir, "prometheusrule.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatalf("prometheusrule.yaml: %v", err)
	}
	if rf.APIVersion != "monitoring.coreos.com/v1" || rf.Kind != "PrometheusRule" {
		t.Fatalf("prometheusrule.yaml is %s %s, want monitoring.coreos.com/v1 PrometheusRule", rf.APIVersion, rf.Kind)
	}
	if len(rf.Spec.Groups) == 0 {
		t.Fatal("prometheusrule.yaml has no rule groups")
	}
	return rf
}

func alerts(rf ruleFile) []rule {
	var out []rule
	for _, g := range rf.Spec.Groups {
		out = append(out, g.Rules...)
	}
	return out
}

func writeYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestAlertRules runs `promtool check rules` on the PrometheusRule's groups
// and `promtool test rules` on alerts_test.yaml, whose cases must see every
// alert both fire and stay quiet.
func TestAlertRules(t *testing.T) {
	rf := readRules(t)
	dir := t.TempDir()
	groups := map[string]any{"groups": rf.Spec.Groups}
	writeYAML(t, filepath.Join(dir, "full.yaml"), groups)
	out := runPromtool(t, dir, "check", "rules", "full.yaml")
	t.Logf("promtool check rules: %s", strings.TrimSpace(out))

	// The unit tests check what fires when; the annotations' text is
	// checked by TestAlertAnnotations (promtool would compare it whole).
	var logic []ruleGroup
	for _, g := range rf.Spec.Groups {
		g.Rules = slices.Clone(g.Rules)
		for i := range g.Rules {
			g.Rules[i].Annotations = nil
		}
		logic = append(logic, g)
	}
	writeYAML(t, filepath.Join(dir, "rules.yaml"), map[string]any{"groups": logic})
	tests, err := os.ReadFile(filepath.Join(monitoringDir, "alerts_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts_test.yaml"), tests, 0o644); err != nil {
		t.Fatal(err)
	}
	out = runPromtool(t, dir, "test", "rules", "alerts_test.yaml")
	t.Logf("promtool test rules: %s", strings.TrimSpace(out))

	var ut struct {
		Tests []struct {
			Name  string `yaml:"name"`
			Cases []struct {
				Alert string `yaml:"alertname"`
				Exp   []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(tests, &ut); err != nil {
		t.Fatal(err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range ut.Tests {
		for _, c := range tc.Cases {
			if len(c.Exp) > 0 {
				fires[c.Alert] = true
			} else {
				quiet[c.Alert] = true
			}
		}
	}
	for _, a := range alerts(rf) {
		if !fires[a.Alert] || !quiet[a.Alert] {
			t.Errorf("alerts_test.yaml: alert %s has a firing case %v and a quiet case %v, want both", a.Alert, fires[a.Alert], quiet[a.Alert])
		}
	}
}

// TestAlertAnnotations: every alert says what happened, where the runbook
// is, and that `sbps-marshal doctor` on the node is the first step.
func TestAlertAnnotations(t *testing.T) {
	seen := map[string]bool{}
	for _, a := range alerts(readRules(t)) {
		if a.Alert == "" {
			t.Errorf("rule %q is not an alert (recording rules belong elsewhere)", a.Expr)
			continue
		}
		if seen[a.Alert] {
			t.Errorf("alert %s defined twice", a.Alert)
		}
		seen[a.Alert] = true
		if s := a.Labels["severity"]; s != "warning" && s != "critical" {
			t.Errorf("alert %s: severity %q, want warning or critical", a.Alert, s)
		}
		if a.For == "" {
			t.Errorf("alert %s has no for: a single scrape would page", a.Alert)
		}
		if !strings.Contains(a.Annotations["summary"], "{{ $labels.instance }}") {
			t.Errorf("alert %s: summary %q does not name the node ({{ $labels.instance }})", a.Alert, a.Annotations["summary"])
		}
		d := a.Annotations["description"]
		for _, want := range []string{"docs/OPERATIONS.md", `"Alerts: ` + a.Alert + `"`, "sbps-marshal doctor"} {
			if !strings.Contains(d, want) {
				t.Errorf("alert %s: description lacks %q: %s", a.Alert, want, d)
			}
		}
	}
	want := []string{"SbpsMarshalDown", "SbpsMarshalResyncStale", "SbpsMarshalPassesFailing", "SbpsMarshalMassDeleteHeld",
		"SbpsMarshalDeletesHeld", "SbpsMarshalNATSDisconnected", "SbpsMarshalNotReady"}
	for _, w := range want {
		if !seen[w] {
			t.Errorf("alert %s is missing", w)
		}
	}
	runbook, err := os.ReadFile("../docs/OPERATIONS.md")
	if err != nil {
		t.Fatal(err)
	}
	for name := range seen {
		if !strings.Contains(string(runbook), "\n### Alerts: "+name+"\n") {
			t.Errorf("docs/OPERATIONS.md has no section \"### Alerts: %s\" for the alert's description to point at", name)
		}
	}
}

type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	GridPos *struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(monitoringDir, "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	var d dashboard
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("dashboard.json is not valid JSON: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		t.Fatalf("dashboard.json has content after its object")
	}
	return d
}

func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// TestDashboard: valid JSON, unique panel ids, every panel placed and
// titled, every query panel with a query per target.
func TestDashboard(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard uid %q, title %q: want both", d.UID, d.Title)
	}
	ids := map[int]string{}
	for _, p := range allPanels(d.Panels) {
		if p.ID <= 0 {
			t.Errorf("panel %q has id %d, want a positive id", p.Title, p.ID)
		}
		if other, dup := ids[p.ID]; dup {
			t.Errorf("panel id %d used by %q and %q", p.ID, other, p.Title)
		}
		ids[p.ID] = p.Title
		if p.Title == "" || p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
			t.Errorf("panel %d (%q): want a title and a gridPos", p.ID, p.Title)
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no targets", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q has a target without expr", p.Title)
			}
			if refs[tg.RefID] {
				t.Errorf("panel %q: refId %q twice", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
		}
	}
	if len(ids) < 10 {
		t.Errorf("dashboard has %d panels, want the health, passes, projections and LIO views", len(ids))
	}
}

// metricName matches what may be a metric name in PromQL; the candidates
// are then kept by prefix.
var metricName = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)

func usedMetrics(exprs ...string) []string {
	set := map[string]bool{}
	for _, e := range exprs {
		for _, n := range metricName.FindAllString(e, -1) {
			if strings.HasPrefix(n, "sbps_marshal_") || strings.HasPrefix(n, "process_") || strings.HasPrefix(n, "go_") {
				set[n] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// agentMetrics is wired as agent.New wires it: ready, NATS, the resync
// interval. active makes one pass, one applied batch, one event and one
// status view, so that the series created on first use (histograms by
// outcome, projections by state) exist too.
func agentMetrics(t *testing.T, active bool) *metrics.Metrics {
	t.Helper()
	m := metrics.New()
	m.CollectReady(func() error { return errors.New("first full reconcile not done") })
	m.CollectNATSConnected(func() bool { return true })
	m.CollectLIOStats(func() lio.Stats { return lio.Stats{} })
	m.SetResyncInterval(180 * time.Second)
	if !active {
		return m
	}
	ap := m.InstrumentApplier(okApplier{})
	res, err := ap.Apply(t.Context(), []lio.Op{{Kind: lio.CreateBackstore, Backstore: "b"}})
	if err != nil {
		t.Fatal(err)
	}
	rep := &projector.Report{Desired: &projector.Desired{RootfsComplete: true}, Plan: &projector.Plan{}, Results: res, Duration: time.Second}
	m.ObservePass(metrics.FullPass, rep, nil, nil)
	m.ObserveEvents([]events.Event{{Kind: events.S3Object, Received: time.Now()}}, nil)
	m.SetStatus([]projector.Entry{{State: projector.Projected, Kind: projector.PE}})
	m.SetGate(true, nil)
	return m
}

type okApplier struct{}

func (okApplier) Apply(_ context.Context, ops []lio.Op) ([]lio.Result, error) {
	out := make([]lio.Result, len(ops))
	for i, op := range ops {
		out[i] = lio.Result{Op: op, Outcome: lio.Applied}
	}
	return out, nil
}

func (okApplier) Save(context.Context) error { return nil }

// exposed scrapes GET /metrics of m's real handler and returns the names
// of the series it shows (a histogram's _bucket, _sum and _count).
func exposed(t *testing.T, m *metrics.Metrics) map[string]bool {
	t.Helper()
	srv := httptest.NewServer(m.Handler(nil))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics = %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	names := map[string]bool{}
	for n, f := range fams {
		if len(f.GetMetric()) == 0 {
			continue
		}
		names[n] = true
		switch f.GetType().String() {
		case "HISTOGRAM":
			names[n+"_bucket"], names[n+"_sum"], names[n+"_count"] = true, true, true
		case "SUMMARY":
			names[n+"_sum"], names[n+"_count"] = true, true
		}
	}
	return names
}

// TestMonitoringMetricsExist: every metric the alerts read is in /metrics
// of an agent before its first pass (an alert on a series that appears only
// later cannot tell "fine" from "no data"); every metric the dashboard
// reads is there once the agent has worked.
func TestMonitoringMetricsExist(t *testing.T) {
	var ruleExprs []string
	for _, a := range alerts(readRules(t)) {
		ruleExprs = append(ruleExprs, a.Expr)
	}
	d := readDashboard(t)
	var dashExprs []string
	for _, p := range allPanels(d.Panels) {
		for _, tg := range p.Targets {
			dashExprs = append(dashExprs, tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if q, err := json.Marshal(v.Query); err == nil {
			dashExprs = append(dashExprs, string(q))
		}
	}
	fresh := exposed(t, agentMetrics(t, false))
	worked := exposed(t, agentMetrics(t, true))
	used := usedMetrics(ruleExprs...)
	if len(used) < 5 {
		t.Fatalf("found only %v in the rules: is the name pattern right?", used)
	}
	for _, n := range used {
		if !fresh[n] {
			t.Errorf("alert rules use %s, which the agent's /metrics does not show before its first pass", n)
		}
	}
	for _, n := range usedMetrics(dashExprs...) {
		if !worked[n] {
			t.Errorf("dashboard uses %s, which the agent's /metrics does not show", n)
		}
	}
}

// TestScrapeObjects: the Service, its Endpoints, the ServiceMonitor and
// the VMServiceScrape fit together (names, labels, port, namespace), on
// METRICS_ADDR's default port, and the job they give is the one
// SbpsMarshalDown reads.
func TestScrapeObjects(t *testing.T) {
	docs := map[string]map[string]any{} // kind -> object
	for _, f := range []string{"scrape.yaml", "servicemonitor.yaml", "vmservicescrape.yaml"} {
		b, err := os.ReadFile(filepath.Join(monitoringDir, f))
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(strings.NewReader(string(b)))
		for {
			var o map[string]any
			if err := dec.Decode(&o); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			docs[str(o, "kind")] = o
		}
	}
	for _, k := range []string{"Service", "Endpoints", "ServiceMonitor", "VMServiceScrape"} {
		if docs[k] == nil {
			t.Fatalf("no %s in deploy/monitoring", k)
		}
	}
	svc, ep := docs["Service"], docs["Endpoints"]
	ns := str(svc, "metadata", "namespace")
	if str(ep, "metadata", "name") != str(svc, "metadata", "name") || str(ep, "metadata", "namespace") != ns {
		t.Errorf("Endpoints %s/%s must have the Service's name and namespace %s/%s",
			str(ep, "metadata", "namespace"), str(ep, "metadata", "name"), ns, str(svc, "metadata", "name"))
	}
	if str(svc, "spec", "clusterIP") != "None" {
		t.Errorf("Service clusterIP %q, want None (headless)", str(svc, "spec", "clusterIP"))
	}
	if _, ok := get(svc, "spec", "selector").(map[string]any); ok {
		t.Error("Service has a selector: its Endpoints would be managed by Kubernetes and replaced")
	}
	_, defPort, err := net.SplitHostPort(metricsAddrDefault(t))
	if err != nil {
		t.Fatal(err)
	}
	svcPorts := get(svc, "spec", "ports").([]any)
	port := svcPorts[0].(map[string]any)
	if str(port, "name") != "metrics" || num(port, "port") != defPort {
		t.Errorf("Service port %v, want metrics on %s (METRICS_ADDR's default port)", port, defPort)
	}
	subsets := get(ep, "subsets").([]any)
	for _, s := range subsets {
		ss := s.(map[string]any)
		for _, p := range ss["ports"].([]any) {
			if pp := p.(map[string]any); str(pp, "name") != "metrics" || num(pp, "port") != defPort {
				t.Errorf("Endpoints port %v, want metrics on %s", pp, defPort)
			}
		}
		for _, a := range ss["addresses"].([]any) {
			aa := a.(map[string]any)
			if net.ParseIP(str(aa, "ip")) == nil || str(aa, "nodeName") == "" {
				t.Errorf("Endpoints address %v: want an IP and the nodeName (the instance label)", aa)
			}
		}
	}
	svcLabels := get(svc, "metadata", "labels").(map[string]any)
	var job string
	for _, kind := range []string{"ServiceMonitor", "VMServiceScrape"} {
		o := docs[kind]
		if str(o, "metadata", "namespace") != ns {
			t.Errorf("%s in namespace %q, want the Service's %q", kind, str(o, "metadata", "namespace"), ns)
		}
		for k, v := range get(o, "spec", "selector", "matchLabels").(map[string]any) {
			if svcLabels[k] != v {
				t.Errorf("%s selects %s=%v, which the Service does not have", kind, k, v)
			}
		}
		if nss := get(o, "spec", "namespaceSelector", "matchNames").([]any); !slices.Contains(nss, any(ns)) {
			t.Errorf("%s namespaceSelector %v lacks %s", kind, nss, ns)
		}
		jl := str(o, "spec", "jobLabel")
		j, _ := svcLabels[jl].(string)
		if j == "" {
			t.Errorf("%s jobLabel %q is not a label of the Service", kind, jl)
		}
		job = j
		eps := get(o, "spec", "endpoints").([]any)
		e := eps[0].(map[string]any)
		if str(e, "port") != "metrics" || str(e, "path") != "/metrics" {
			t.Errorf("%s endpoint %v, want port metrics, path /metrics", kind, e)
		}
		relabel := "relabelings"
		if kind == "VMServiceScrape" {
			relabel = "relabelConfigs"
		}
		if rl, _ := e[relabel].([]any); len(rl) == 0 || str(rl[0].(map[string]any), "targetLabel") != "instance" {
			t.Errorf("%s: want %s setting instance to the node name", kind, relabel)
		}
	}
	for _, a := range alerts(readRules(t)) {
		if a.Alert == "SbpsMarshalDown" && !strings.Contains(a.Expr, `job="`+job+`"`) {
			t.Errorf("SbpsMarshalDown reads %q, but the scrape objects give job %q", a.Expr, job)
		}
	}
}

func metricsAddrDefault(t *testing.T) string {
	t.Helper()
	for _, k := range config.Keys() {
		if k.Env == config.EnvPrefix+"METRICS_ADDR" {
			return k.Default
		}
	}
	t.Fatal("config has no METRICS_ADDR key")
	return ""
}

func get(o any, path ...string) any {
	for _, p := range path {
		m, ok := o.(map[string]any)
		if !ok {
			return nil
		}
		o = m[p]
	}
	return o
}

func str(o any, path ...string) string {
	s, _ := get(o, path...).(string)
	return s
}

// num is a YAML number as text.
func num(o any, path ...string) string {
	switch v := get(o, path...).(type) {
	case int:
		return strconv.Itoa(v)
	case string:
		return v
	}
	return ""
}
