package main

// The deployment files in deploy/ (compose, Kubernetes, NapCat) against the
// code: every OBMUX_* variable they set exists, their obmux configuration
// loads, and their ports, URLs, tokens and probe paths agree with obmux's
// defaults and with each other. Every test of deploy/ is in a
// deploy_*_test.go here or a script beside the files (docs/deploy.md,
// "Tests of these files").

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/obmux/obmux/config"
	"gopkg.in/yaml.v3"
)

const deployDir = "../../deploy"

// knownVarsOf returns every variable of config, as config.Load knows them.
func knownVarsOf(t *testing.T) map[string]bool {
	t.Helper()
	vars := config.Known()
	if len(vars) < 20 {
		t.Fatalf("config has only %d env tags: %v", len(vars), vars)
	}
	return vars
}

var obmuxVarUse = regexp.MustCompile(`^(OBMUX_[A-Za-z0-9_]*)`)

// obmuxVars walks a decoded YAML document and returns every OBMUX_* name
// used in it: map keys (compose's environment map), "OBMUX_X=v" list items
// (compose's environment list) and name: values (Kubernetes env lists).
func obmuxVars(v any) []string {
	var out []string
	add := func(s string) {
		if m := obmuxVarUse.FindStringSubmatch(s); m != nil {
			out = append(out, m[1])
		}
	}
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			add(k)
			if s, ok := e.(string); ok && k == "name" {
				add(s)
			}
			out = append(out, obmuxVars(e)...)
		}
	case []any:
		for _, e := range v {
			if s, ok := e.(string); ok && strings.Contains(s, "=") {
				add(s)
			}
			out = append(out, obmuxVars(e)...)
		}
	}
	return out
}

// decodeAll reads every YAML document of path.
func decodeAll(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var docs []map[string]any
	dec := yaml.NewDecoder(f)
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
	if len(docs) == 0 {
		t.Fatalf("%s: no YAML document", path)
	}
	return docs
}

func k8sFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, pat := range []string{"*.yaml", "*.yml"} {
		m, err := filepath.Glob(filepath.Join(deployDir, "k8s", pat))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	sort.Strings(files)
	if len(files) == 0 {
		t.Fatal("no YAML in deploy/k8s")
	}
	return files
}

// Typed access to decoded YAML; a missing or mistyped field fails the test.

func field[T any](t *testing.T, m map[string]any, path ...string) T {
	t.Helper()
	var cur any = m
	for i, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			t.Fatalf("%s: not a map", strings.Join(path[:i], "."))
		}
		cur, ok = mm[p]
		if !ok {
			t.Fatalf("%s: missing", strings.Join(path[:i+1], "."))
		}
	}
	v, ok := cur.(T)
	if !ok {
		var zero T
		t.Fatalf("%s: %T, want %T", strings.Join(path, "."), cur, zero)
	}
	return v
}

func maps(t *testing.T, v any) []map[string]any {
	t.Helper()
	l, ok := v.([]any)
	if !ok {
		t.Fatalf("%T, want a list", v)
	}
	var out []map[string]any
	for _, e := range l {
		m, ok := e.(map[string]any)
		if !ok {
			t.Fatalf("%T in a list, want a map", e)
		}
		out = append(out, m)
	}
	return out
}

// defaults is obmux's configuration with nothing set.
func defaults(t *testing.T) (cfg config.Config, metricsPort, upstreamPort string) {
	t.Helper()
	cfg, err := config.Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, metricsPort, _ = net.SplitHostPort(cfg.MetricsListen)
	_, upstreamPort, _ = net.SplitHostPort(cfg.UpstreamListen)
	return cfg, metricsPort, upstreamPort
}

// checkEnv checks the names of env (an obmux container's or service's
// OBMUX_* variables), that obmux loads it, and that its listen addresses
// keep the default ports.
func checkEnv(t *testing.T, where string, env map[string]string) config.Config {
	t.Helper()
	knownVarsOf(t)
	var environ []string
	for k, v := range env {
		if !strings.HasPrefix(k, config.Prefix) {
			continue
		}
		if why := config.CheckName(k); why != "" {
			t.Errorf("%s: %s: %s", where, k, why)
		}
		environ = append(environ, k+"="+v)
	}
	cfg, err := config.Load(environ)
	if err != nil {
		t.Fatalf("%s: obmux would not start: %v", where, err)
	}
	def, _, _ := defaults(t)
	for _, l := range []struct{ name, got, def string }{
		{"OBMUX_METRICS_LISTEN", cfg.MetricsListen, def.MetricsListen},
		{"OBMUX_UPSTREAM_LISTEN", cfg.UpstreamListen, def.UpstreamListen},
	} {
		_, gp, _ := net.SplitHostPort(l.got)
		_, dp, _ := net.SplitHostPort(l.def)
		if gp != dp {
			t.Errorf("%s: %s=%s: port %s, not the default %s", where, l.name, l.got, gp, dp)
		}
	}
	if cfg.UpstreamPath != def.UpstreamPath {
		t.Errorf("%s: OBMUX_UPSTREAM_PATH %s, not the default %s", where, cfg.UpstreamPath, def.UpstreamPath)
	}
	if len(cfg.Targets) < 2 {
		t.Errorf("%s: %d targets, want the two of the example", where, len(cfg.Targets))
	}
	return cfg
}

// napcatClient returns the url and token of the only enabled
// websocketClients entry of a NapCat onebot11_<qq>.json.
func napcatClient(t *testing.T, where string, b []byte) (u *url.URL, token string) {
	t.Helper()
	var c struct {
		Network struct {
			WebsocketClients []struct {
				Enable bool   `json:"enable"`
				URL    string `json:"url"`
				Token  string `json:"token"`
			} `json:"websocketClients"`
		} `json:"network"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	var n int
	for _, wc := range c.Network.WebsocketClients {
		if wc.Enable {
			n++
			var err error
			if u, err = url.Parse(wc.URL); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			token = wc.Token
		}
	}
	if n != 1 {
		t.Fatalf("%s: %d enabled websocketClients, want exactly one (obmux)", where, n)
	}
	return u, token
}

// checkNapcatURL checks that NapCat's URL reaches obmux's upstream listener
// on host.
func checkNapcatURL(t *testing.T, where string, u *url.URL, host string, cfg config.Config) {
	t.Helper()
	_, port, _ := net.SplitHostPort(cfg.UpstreamListen)
	if u.Scheme != "ws" || u.Hostname() != host || u.Port() != port || u.Path != cfg.UpstreamPath {
		t.Errorf("%s: NapCat dials %s, want ws://%s:%s%s", where, u, host, port, cfg.UpstreamPath)
	}
}

func TestDeployCompose(t *testing.T) {
	path := filepath.Join(deployDir, "compose.yaml")
	docs := decodeAll(t, path)
	if len(docs) != 1 {
		t.Fatalf("%s: %d documents, want 1", path, len(docs))
	}
	knownVarsOf(t)
	uses := obmuxVars(docs[0])
	for _, v := range uses {
		if why := config.CheckName(v); why != "" {
			t.Errorf("%s: %s: %s", path, v, why)
		}
	}
	if len(uses) < 5 {
		t.Errorf("%s: only %d OBMUX_* variables found: %v", path, len(uses), uses)
	}

	services := field[map[string]any](t, docs[0], "services")
	env := func(svc string) map[string]string {
		out := map[string]string{}
		switch e := field[any](t, services, svc, "environment").(type) {
		case map[string]any:
			for k, v := range e {
				out[k] = yamlString(v)
			}
		case []any:
			for _, kv := range e {
				k, v, _ := strings.Cut(yamlString(kv), "=")
				out[k] = v
			}
		default:
			t.Fatalf("%s: services.%s.environment: %T", path, svc, e)
		}
		return out
	}
	obmuxEnv := env("obmux")
	cfg := checkEnv(t, path+" services.obmux", obmuxEnv)
	_, metricsPort, _ := defaults(t)

	// The metrics port is published, nothing else of obmux's.
	published := false
	for _, p := range field[[]any](t, services, "obmux", "ports") {
		s := yamlString(p)
		if s[strings.LastIndex(s, ":")+1:] == metricsPort {
			published = true
		}
	}
	if !published {
		t.Errorf("%s: services.obmux.ports does not publish the metrics port %s", path, metricsPort)
	}

	// NapCat's configuration, as mounted, dials obmux with its token.
	b, err := os.ReadFile(filepath.Join(deployDir, "napcat", "onebot11_10001.json"))
	if err != nil {
		t.Fatal(err)
	}
	u, token := napcatClient(t, "deploy/napcat/onebot11_10001.json", b)
	checkNapcatURL(t, "deploy/napcat/onebot11_10001.json", u, "obmux", cfg)
	if token != cfg.UpstreamToken {
		t.Errorf("NapCat's token %q is not compose's OBMUX_UPSTREAM_TOKEN %q", token, cfg.UpstreamToken)
	}
	mounted := false
	for _, v := range field[[]any](t, services, "napcat", "volumes") {
		if strings.HasPrefix(yamlString(v), "./napcat/onebot11_10001.json:/app/napcat/config/onebot11_") {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("%s: services.napcat.volumes does not mount napcat/onebot11_10001.json", path)
	}

	// Every target is a NoneBot service listening on the URL's port, with
	// the token obmux sends.
	for _, tg := range cfg.Targets {
		u, err := url.Parse(tg.URL)
		if err != nil {
			t.Fatal(err)
		}
		svc := u.Hostname()
		if _, ok := services[svc]; !ok {
			t.Errorf("%s: target %s dials %s: no such service", path, tg.Name, svc)
			continue
		}
		nb := env(svc)
		if nb["PORT"] != u.Port() {
			t.Errorf("%s: target %s dials port %s, %s has PORT=%s", path, tg.Name, u.Port(), svc, nb["PORT"])
		}
		if nb["ONEBOT_ACCESS_TOKEN"] != tg.Token {
			t.Errorf("%s: target %s sends token %q, %s expects ONEBOT_ACCESS_TOKEN=%q", path, tg.Name, tg.Token, svc, nb["ONEBOT_ACCESS_TOKEN"])
		}
		if u.Path != "/onebot/v11/ws" {
			t.Errorf("%s: target %s: path %s, NoneBot serves /onebot/v11/ws", path, tg.Name, u.Path)
		}
	}

	// Prometheus scrapes obmux's metrics port; the mounts exist.
	prom, err := os.ReadFile(filepath.Join(deployDir, "prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(prom), `"obmux:`+metricsPort+`"`) {
		t.Errorf("deploy/prometheus/prometheus.yml does not scrape obmux:%s", metricsPort)
	}
	for name := range services {
		vols, _ := field[map[string]any](t, services, name)["volumes"].([]any)
		for _, v := range vols {
			src, _, _ := strings.Cut(yamlString(v), ":")
			if !strings.HasPrefix(src, "./") {
				continue // a named volume
			}
			if _, err := os.Stat(filepath.Join(deployDir, src)); err != nil {
				t.Errorf("%s: services.%s mounts %s: %v", path, name, src, err)
			}
		}
	}
}

func yamlString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case int:
		return strconv.Itoa(v)
	case bool:
		return strconv.FormatBool(v)
	case nil:
		return ""
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// The NATS override: the account side (compose.yaml's obmux with this
// file's variables on top) and the edge are configurations obmux accepts,
// and the edge reads the stream the account side publishes to.
func TestDeployComposeNATS(t *testing.T) {
	base := decodeAll(t, filepath.Join(deployDir, "compose.yaml"))[0]
	path := filepath.Join(deployDir, "compose.nats.yaml")
	docs := decodeAll(t, path)
	if len(docs) != 1 {
		t.Fatalf("%s: %d documents, want 1", path, len(docs))
	}
	envOf := func(doc map[string]any, svc string) map[string]string {
		out := map[string]string{}
		for k, v := range field[map[string]any](t, doc, "services", svc, "environment") {
			out[k] = yamlString(v)
		}
		return out
	}
	account := envOf(base, "obmux")
	for k, v := range envOf(docs[0], "obmux") {
		account[k] = v
	}
	acct := checkEnv(t, path+" services.obmux", account)
	edgeEnv := envOf(docs[0], "obmux-edge")
	edgeEnv["OBMUX_SELF_ID"] = "10001" // ${NAPCAT_QQ:-10001}
	edge := checkEnv(t, path+" services.obmux-edge", edgeEnv)
	if acct.NATSURL == "" || !edge.Edge() || edge.NATSServers() != acct.NATSURL || edge.NATSStream != acct.NATSStream {
		t.Errorf("%s: the edge (%q, stream %s) does not read what the account side publishes (%q, stream %s)",
			path, edge.NATSServers(), edge.NATSStream, acct.NATSURL, acct.NATSStream)
	}
}

// The Kubernetes edge example is a configuration obmux accepts, as an edge.
func TestDeployKubernetesNATSEdge(t *testing.T) {
	path := filepath.Join(deployDir, "k8s", "nats", "edge.yaml")
	var dep map[string]any
	for _, doc := range decodeAll(t, path) {
		if doc["kind"] == "Deployment" {
			dep = doc
		}
	}
	if dep == nil {
		t.Fatalf("%s: no Deployment", path)
	}
	if n := field[int](t, dep, "spec", "replicas"); n != 1 {
		t.Errorf("%s: %d replicas, want 1 (one edge per consumer)", path, n)
	}
	containers := maps(t, field[any](t, dep, "spec", "template", "spec", "containers"))
	env := map[string]string{}
	for _, e := range maps(t, containers[0]["env"]) {
		name := field[string](t, e, "name")
		if v, ok := e["value"]; ok {
			env[name] = yamlString(v)
		} else {
			env[name] = "from-secret-" + name
		}
	}
	if cfg := checkEnv(t, path, env); !cfg.Edge() {
		t.Errorf("%s: not an edge (OBMUX_UPSTREAM_URL=%s)", path, cfg.UpstreamURL)
	}
}

func TestDeployKubernetes(t *testing.T) {
	knownVarsOf(t)
	_, metricsPort, _ := defaults(t)
	byKind := map[string][]map[string]any{}
	uses := 0
	for _, path := range k8sFiles(t) {
		for _, doc := range decodeAll(t, path) {
			for _, v := range obmuxVars(doc) {
				uses++
				if why := config.CheckName(v); why != "" {
					t.Errorf("%s: %s: %s", path, v, why)
				}
			}
			kind, _ := doc["kind"].(string)
			byKind[kind] = append(byKind[kind], doc)
		}
	}
	if uses < 5 {
		t.Errorf("deploy/k8s: only %d OBMUX_* variables found", uses)
	}
	for _, kind := range []string{"Deployment", "Service", "ServiceMonitor", "ConfigMap", "Secret"} {
		if len(byKind[kind]) != 1 {
			t.Fatalf("deploy/k8s: %d %s, want 1", len(byKind[kind]), kind)
		}
	}
	dep, svc, sm := byKind["Deployment"][0], byKind["Service"][0], byKind["ServiceMonitor"][0]

	containers := maps(t, field[any](t, dep, "spec", "template", "spec", "containers"))
	var obmux map[string]any
	for _, c := range containers {
		if c["name"] == "obmux" {
			obmux = c
		}
	}
	if obmux == nil || len(containers) != 2 {
		t.Fatalf("deployment: want NapCat and obmux in one pod, got %d containers", len(containers))
	}

	// Its environment loads; secret references stand in as tokens.
	env := map[string]string{}
	for _, e := range maps(t, obmux["env"]) {
		name := field[string](t, e, "name")
		if v, ok := e["value"]; ok {
			env[name] = yamlString(v)
		} else {
			env[name] = "from-secret-" + name
		}
	}
	cfg := checkEnv(t, "deploy/k8s obmux container", env)
	if host, _, _ := net.SplitHostPort(cfg.UpstreamListen); host != "127.0.0.1" {
		t.Errorf("obmux container: OBMUX_UPSTREAM_LISTEN=%s: want 127.0.0.1 (only NapCat in the pod may connect)", cfg.UpstreamListen)
	}

	// Named ports resolve to the default metrics port.
	ports := map[string]string{}
	for _, p := range maps(t, obmux["ports"]) {
		n := yamlString(p["containerPort"])
		ports[yamlString(p["name"])] = n
		ports[n] = n
	}
	if ports["metrics"] != metricsPort {
		t.Errorf("obmux container: port metrics is %q, want the default %s", ports["metrics"], metricsPort)
	}
	probes := map[string]string{}
	for probe, want := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
		p := field[string](t, obmux, probe, "httpGet", "path")
		port := ports[yamlString(field[any](t, obmux, probe, "httpGet", "port"))]
		if p != want || port != metricsPort {
			t.Errorf("obmux container: %s GET %s on port %s, want %s on %s", probe, p, port, want, metricsPort)
		}
		probes[p] = probe
	}
	if res, ok := obmux["resources"].(map[string]any); !ok || res["requests"] == nil || res["limits"] == nil {
		t.Errorf("obmux container: no resource requests and limits")
	}

	// NapCat's ConfigMap dials obmux over the pod's localhost.
	var napcatJSON string
	for k, v := range field[map[string]any](t, byKind["ConfigMap"][0], "data") {
		if strings.HasPrefix(k, "onebot11_") && strings.HasSuffix(k, ".json") {
			napcatJSON = yamlString(v)
		}
	}
	if napcatJSON == "" {
		t.Fatal("ConfigMap: no onebot11_<qq>.json")
	}
	u, _ := napcatClient(t, "deploy/k8s ConfigMap", []byte(napcatJSON))
	checkNapcatURL(t, "deploy/k8s ConfigMap", u, "127.0.0.1", cfg)

	// The Service selects the pod and reaches the metrics port; the
	// ServiceMonitor selects the Service and scrapes /metrics on it.
	podLabels := field[map[string]any](t, dep, "spec", "template", "metadata", "labels")
	for k, v := range field[map[string]any](t, svc, "spec", "selector") {
		if podLabels[k] != v {
			t.Errorf("Service selector %s=%v does not match the pod (%v)", k, v, podLabels)
		}
	}
	var svcPort string
	for _, p := range maps(t, field[any](t, svc, "spec", "ports")) {
		if ports[yamlString(p["targetPort"])] == metricsPort {
			svcPort = yamlString(p["name"])
		}
	}
	if svcPort == "" {
		t.Fatalf("Service: no port with targetPort reaching obmux's metrics port %s", metricsPort)
	}
	svcLabels := field[map[string]any](t, svc, "metadata", "labels")
	for k, v := range field[map[string]any](t, sm, "spec", "selector", "matchLabels") {
		if svcLabels[k] != v {
			t.Errorf("ServiceMonitor selector %s=%v does not match the Service (%v)", k, v, svcLabels)
		}
	}
	eps := maps(t, field[any](t, sm, "spec", "endpoints"))
	if len(eps) != 1 || eps[0]["port"] != svcPort || eps[0]["path"] != "/metrics" {
		t.Errorf("ServiceMonitor endpoints %v, want port %s path /metrics", eps, svcPort)
	}
	probes["/metrics"] = "ServiceMonitor"

	// The paths answer on a real obmux (no upstream: /readyz says 503).
	in := start(t)
	for path, who := range probes {
		resp, err := http.Get("http://" + in.addrs.Metrics + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := http.StatusOK
		if path == "/readyz" {
			want = http.StatusServiceUnavailable
		}
		if resp.StatusCode != want {
			t.Errorf("%s: GET %s answered %s, want %d", who, path, resp.Status, want)
		}
	}
}
