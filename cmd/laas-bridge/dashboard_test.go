package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/laas-bridge/laas-bridge/bridge"
	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/queue/queuetest"
	"github.com/laas-bridge/laas-bridge/schema"
	"github.com/laas-bridge/laas-bridge/worker"
)

// dashboardFile is the Grafana dashboard TestGrafanaDashboardMetricsExist
// keeps honest.
const dashboardFile = "../../deploy/grafana/laas-bridge.json"

// TestGrafanaDashboardMetricsExist: every metric the Grafana dashboard's
// queries (panel targets and query variables) name is one a laas-bridge
// process registers. The set is not a list kept here: it is read from the
// registries the real constructors fill, as `serve` builds them (one
// registry from newRegistry, the dead-letter watcher, the pool with a key
// ledger, a gateway serving its NATS endpoint). Vectors nobody has touched
// are absent from Gather, so the collectors registered are asked for their
// descriptors instead.
func TestGrafanaDashboardMetricsExist(t *testing.T) {
	exprs := dashboardExprs(t, dashboardFile)
	families := registeredFamilies(t)
	total := 0
	for _, e := range exprs {
		names := promQLMetricNames(e.expr)
		if len(names) == 0 {
			t.Errorf("%s: no metric name found in %q", e.where, e.expr)
		}
		total += len(names)
		for _, n := range names {
			if !families.has(n) {
				t.Errorf("%s: metric %s is not registered by laas-bridge (expr %q)", e.where, n, e.expr)
			}
		}
	}
	if total == 0 {
		t.Fatalf("%s: no metric names extracted from %d queries", dashboardFile, len(exprs))
	}
	t.Logf("%d queries, %d metric references, %d families registered", len(exprs), total, len(families))
}

// dashboardQuery is a PromQL expression of the dashboard and where it is.
type dashboardQuery struct{ where, expr string }

// dashboardExprs reads the dashboard at path: every panel target's expr
// (rows' nested panels included) and every query variable's query (the
// metric of label_values(metric, label)). It checks the datasource is the
// dashboard's variable, so the file imports into any Grafana.
func dashboardExprs(t *testing.T, path string) []dashboardQuery {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	type target struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	}
	type datasource struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	}
	type panel struct {
		Title      string      `json:"title"`
		Type       string      `json:"type"`
		Datasource *datasource `json:"datasource"`
		Targets    []target    `json:"targets"`
		Panels     []panel     `json:"panels"`
	}
	var dash struct {
		UID           string  `json:"uid"`
		SchemaVersion int     `json:"schemaVersion"`
		Panels        []panel `json:"panels"`
		Templating    struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if dash.UID == "" || dash.SchemaVersion == 0 {
		t.Errorf("%s: uid %q, schemaVersion %d", path, dash.UID, dash.SchemaVersion)
	}
	var out []dashboardQuery
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: datasource %+v, want the prometheus ${datasource} variable", p.Title, p.Datasource)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("panel %q target %s: no expr", p.Title, tg.RefID)
					continue
				}
				out = append(out, dashboardQuery{where: "panel " + strconv.Quote(p.Title) + " target " + tg.RefID, expr: tg.Expr})
			}
		}
	}
	walk(dash.Panels)
	labelValues := regexp.MustCompile(`^\s*label_values\(\s*(.+?)\s*,\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$`)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil { // older dashboards: a plain string
			_ = json.Unmarshal(v.Query, &q.Query)
		}
		expr := q.Query
		if m := labelValues.FindStringSubmatch(expr); m != nil {
			expr = m[1]
		}
		out = append(out, dashboardQuery{where: "variable $" + v.Name, expr: expr})
	}
	return out
}

// families are the metric families a process registers, and which of them
// are histograms (whose _bucket, _sum and _count series a query may name).
type families map[string]bool // name -> histogram

// has reports whether name is a family, or a series of a histogram family.
func (f families) has(name string) bool {
	if _, ok := f[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && f[base] {
			return true
		}
	}
	return false
}

// recordingRegistry is a registry that remembers the collectors registered
// through it, to ask them for their descriptors.
type recordingRegistry struct {
	*prometheus.Registry
	collectors []prometheus.Collector
}

func (r *recordingRegistry) Register(c prometheus.Collector) error {
	err := r.Registry.Register(c)
	if err == nil {
		r.collectors = append(r.collectors, c)
	}
	return err
}

func (r *recordingRegistry) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// descName is a descriptor's fully qualified name: prometheus.Desc shows
// it only in its String ("Desc{fqName: \"name\", ...}").
var descName = regexp.MustCompile(`^Desc\{fqName: "([^"]+)"`)

// registeredFamilies builds the metrics of a `serve` process (gateway and
// worker in one registry, as the gateway and worker roles build theirs)
// and returns every family they hold.
func registeredFamilies(t *testing.T) families {
	t.Helper()
	q := queuetest.Start(t, queue.Config{Memory: true})
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reg := &recordingRegistry{Registry: newRegistry()}

	catalog, err := schema.NewCatalog(nil)
	if err != nil {
		t.Fatal(err)
	}
	store, keyLimits, err := openKeys(ctx, q.JS, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	if _, err := worker.NewDeadLetters(ctx, q.JS, log, worker.DeadLettersWithMetrics(reg), worker.DeadLettersWithKeyLedger(keyLimits)); err != nil {
		t.Fatal(err)
	}
	if _, err := worker.NewPool(worker.Config{Concurrency: 1}, q.JS, q.Consumer, nil, catalog, log,
		worker.WithMetrics(reg), worker.WithKeyLedger(keyLimits, store)); err != nil {
		t.Fatal(err)
	}
	gw, err := bridge.New(bridge.Config{Keys: store, Usage: keys.UsageReader(keyLimits, store), Limits: keyLimits, Metrics: reg,
		Micro: microConfig(bridge.DefaultMicroSubject, "", "test")}, q.Conn, q.JS, catalog, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	// The NATS endpoint registers its counter when the gateway serves;
	// readiness answers once it does.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveCtx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- gw.Serve(serveCtx, ln) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("gateway: %v", err)
		}
	})
	for {
		resp, err := http.Get("http://" + ln.Addr().String() + "/health/readiness")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("gateway not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	out := families{}
	// What Gather shows: the Go runtime's and the process's metrics, and
	// every metric that has a series already.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		out[mf.GetName()] = mf.GetType() == dto.MetricType_HISTOGRAM || mf.GetType() == dto.MetricType_SUMMARY
	}
	// What the collectors registered through reg describe, series or not.
	for _, c := range reg.collectors {
		histogram := false
		switch c.(type) {
		case *prometheus.HistogramVec, prometheus.Histogram, *prometheus.SummaryVec, prometheus.Summary:
			histogram = true
		}
		descs := make(chan *prometheus.Desc)
		go func() { c.Describe(descs); close(descs) }()
		for d := range descs {
			m := descName.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("cannot read the name of %s", d)
			}
			out[m[1]] = out[m[1]] || histogram
		}
	}
	for _, want := range []string{"laas_bridge_gateway_requests_total", "laas_bridge_gateway_nats_requests_total", "laas_bridge_worker_jobs_total",
		"laas_bridge_worker_dead_letters_total", "laas_bridge_worker_key_requests_total", "go_goroutines"} {
		if _, ok := out[want]; !ok {
			t.Fatalf("the registries lack %s: the test no longer builds them as the process does; families: %v", want, slices.Sorted(maps.Keys(out)))
		}
	}
	return out
}

// PromQL words that read like metric names: keywords, and aggregation
// modifiers (their label lists are dropped before names are read).
var promQLKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "by": true, "without": true,
	"on": true, "ignoring": true, "group_left": true, "group_right": true, "inf": true, "nan": true,
	"start": true, "end": true, "atan2": true,
}

var (
	// Quoted strings: label values, regexps.
	promQLStrings = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	// Label matchers {...} and ranges or subqueries [...].
	promQLBraces = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`)
	// Label lists of by, without, on, ignoring, group_left and group_right.
	promQLLabelLists = regexp.MustCompile(`(?i)\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	// A name (the metric-name grammar).
	promQLName = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
)

// promQLMetricNames are the metric names expr selects, each once, in
// order: every name that is neither a function (followed by "("), nor a
// keyword, nor part of a number or a Grafana variable, once strings,
// label matchers, ranges and grouping label lists are taken out.
func promQLMetricNames(expr string) []string {
	s := promQLStrings.ReplaceAllString(expr, `""`)
	s = promQLBraces.ReplaceAllString(s, " ")
	s = promQLLabelLists.ReplaceAllString(s, " ")
	var names []string
	for _, loc := range promQLName.FindAllStringIndex(s, -1) {
		name := s[loc[0]:loc[1]]
		// Part of a number (1e3, 0.5) or a Grafana variable ($__interval)?
		if loc[0] > 0 && strings.ContainsRune("0123456789.$", rune(s[loc[0]-1])) {
			continue
		}
		// A function?
		if strings.HasPrefix(strings.TrimLeft(s[loc[1]:], " \t\n"), "(") {
			continue
		}
		if promQLKeywords[strings.ToLower(name)] || slices.Contains(names, name) {
			continue
		}
		names = append(names, name)
	}
	return names
}

// TestPromQLMetricNames checks the extraction TestGrafanaDashboardMetricsExist
// relies on.
func TestPromQLMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`up`: {"up"},
		`sum by (status) (rate(laas_bridge_gateway_requests_total{model=~"$model",status=~"5.."}[$__rate_interval]))`: {"laas_bridge_gateway_requests_total"},
		`histogram_quantile(0.95, sum by (lane, le) (rate(x_seconds_bucket{le="1"}[5m])))`:                            {"x_seconds_bucket"},
		`sum(rate(a_total[1m])) by (model) / ignoring (path) sum without (path) (b_total)`:                            {"a_total", "b_total"},
		`process_resident_memory_bytes and on (job, instance) (g or h:recorded)`:                                      {"process_resident_memory_bytes", "g", "h:recorded"},
		`1 - sum(c_bucket{le="1", q='it\'s (x)'}) / sum (d_count offset 5m) > bool 1e3`:                               {"c_bucket", "d_count"},
		`max_over_time(e[1h:5m]) * on () group_left (consumer) f`:                                                     {"e", "f"},
		`vector(1)`: nil,
	} {
		if got := promQLMetricNames(expr); !slices.Equal(got, want) {
			t.Errorf("promQLMetricNames(%q) = %q, want %q", expr, got, want)
		}
	}
}
