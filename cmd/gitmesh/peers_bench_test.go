package main

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gitmesh/gitmesh/internal/benchtree"
)

// peersHelp says how to get the peers BenchmarkPeers compares with.
const peersHelp = "BenchmarkPeers compares gitmesh validate with jv (github.com/santhosh-tekuri/jsonschema/cmd/jv@v0.7.0) " +
	"and ajv-cli 5; run it with `make bench-peers` (or `make bench`), which installs both into a temporary " +
	"directory and names it in GITMESH_PEERS"

// BenchmarkPeers runs gitmesh validate, jv and ajv-cli 5 on the same tree,
// interleaved (each iteration runs the three, starting with another one
// each time): the benchmark tree (internal/benchtree, 10,000 resources)
// with one resource per file, as the two JSON Schema validators read YAML,
// against gitmesh's own JSON Schemas. gitmesh also translates and checks
// every dataplane for both data planes; the peers check the schemas only.
// It reports each tool's median wall and CPU time (user and system, of
// every process a tool runs) and gitmesh's as a ratio to each peer's, and
// the machine's load average when it started.
func BenchmarkPeers(b *testing.B) {
	dir := os.Getenv("GITMESH_PEERS")
	if dir == "" {
		b.Fatal(peersHelp)
	}
	jv := filepath.Join(dir, "bin", "jv")
	ajv := filepath.Join(dir, "npm", "node_modules", ".bin", "ajv")
	for _, p := range []string{jv, ajv} {
		if _, err := os.Stat(p); err != nil {
			b.Fatalf("%v; %s", err, peersHelp)
		}
	}
	schemas, err := filepath.Abs(filepath.Join("..", "..", "schema", "schemas"))
	if err != nil {
		b.Fatal(err)
	}
	shape := benchtree.Scaled(1)
	shape.Single = true
	tree := b.TempDir()
	if _, err := benchtree.Write(tree, shape); err != nil {
		b.Fatal(err)
	}
	kinds := []string{"mesh", "dataplane", "trafficpermission"}
	files := map[string][]string{}
	for _, k := range kinds {
		m, err := filepath.Glob(filepath.Join(tree, k, "*.yaml"))
		if err != nil || len(m) == 0 {
			b.Fatalf("no %s files in the tree: %v", k, err)
		}
		files[k] = m
	}
	type tool struct {
		name string
		run  func() usage
	}
	tools := []tool{
		{"gitmesh", func() usage { return runGitmesh(b, "validate", tree) }},
		{"jv", func() usage {
			var u usage
			for _, k := range kinds {
				argv := append([]string{jv, "-q", "-m", "https://gitmesh.io/schemas/=" + schemas, filepath.Join(schemas, k+".json")}, files[k]...)
				u = u.plus(runProcess(b, nil, argv...))
			}
			return u
		}},
		{"ajv", func() usage {
			var u usage
			for _, k := range kinds {
				u = u.plus(runProcess(b, nil, ajv, "validate", "--spec=draft2020", "-s", filepath.Join(schemas, k+".json"),
					"-r", filepath.Join(schemas, "common.json"), "-d", filepath.Join(tree, k, "*.yaml")))
			}
			return u
		}},
	}
	load := loadAverage()
	walls, cpus := map[string][]time.Duration{}, map[string][]time.Duration{}
	i := 0
	for b.Loop() {
		for j := range tools {
			t := tools[(i+j)%len(tools)]
			u := t.run()
			walls[t.name] = append(walls[t.name], u.wall)
			cpus[t.name] = append(cpus[t.name], u.cpu)
		}
		i++
	}
	median := func(d []time.Duration) float64 {
		s := slices.Clone(d)
		slices.Sort(s)
		return float64(s[len(s)/2])
	}
	for _, t := range tools {
		b.ReportMetric(median(walls[t.name])/1e6, t.name+"-wall-ms")
		b.ReportMetric(median(cpus[t.name])/1e6, t.name+"-cpu-ms")
	}
	for _, peer := range []string{"jv", "ajv"} {
		b.ReportMetric(median(walls["gitmesh"])/median(walls[peer]), "wall-x-"+peer)
		b.ReportMetric(median(cpus["gitmesh"])/median(cpus[peer]), "cpu-x-"+peer)
	}
	b.ReportMetric(load, "loadavg-1m")
}

func (u usage) plus(v usage) usage {
	return usage{wall: u.wall + v.wall, cpu: u.cpu + v.cpu, maxRSS: max(u.maxRSS, v.maxRSS)}
}

// loadAverage is the machine's load average over the last minute.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f, err := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	if err != nil {
		return -1
	}
	return f
}
