// Package benchtree writes the policy tree the speed benchmarks share: one
// mTLS mesh, dataplanes in both Kuma forms (an inbound, HTTP for every other
// service, and two outbounds each), ten dataplanes per service, and about one
// traffic permission per four dataplanes, ten resources to a file. At scale
// 1 it has 10,000 resources: 8,000 dataplanes, 800 services, 1,999
// permissions, in 1,000 files. The tree is valid, and deterministic.
package benchtree

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Shape is the size of a tree.
type Shape struct {
	Dataplanes  int
	Services    int
	Permissions int
	// PerFile resources to a file (the mesh has its own); with Single, one
	// resource per file in a directory per type, for validators that read
	// one YAML document per file.
	PerFile int
	Single  bool
}

// Scaled is the shape of the benchmark's tree at scale (1 for 10,000
// resources, 5 for 50,000).
func Scaled(scale int) Shape {
	return Shape{Dataplanes: 8000 * scale, Services: 800 * scale, Permissions: 2000*scale - 1, PerFile: 10}
}

// Resources is how many resources the tree declares.
func (s Shape) Resources() int { return 1 + s.Dataplanes + s.Permissions }

// Write writes the tree under dir and returns the number of files written.
func Write(dir string, s Shape) (int, error) {
	w := &writer{dir: dir, shape: s}
	w.add("Mesh", "mesh", "type: Mesh\nname: default\nmtls:\n  enabled: true\n  ca:\n    builtin: {}\n")
	w.flush() // the mesh has a file of its own
	// Interleave permissions with dataplanes so that every file holds both.
	perm := 0
	for i := range s.Dataplanes {
		w.add("Dataplane", "dp", dataplane(s, i))
		for perm < s.Permissions && perm*s.Dataplanes < (i+1)*s.Permissions {
			w.add("TrafficPermission", "tp", permission(s, perm))
			perm++
		}
	}
	for ; perm < s.Permissions; perm++ {
		w.add("TrafficPermission", "tp", permission(s, perm))
	}
	w.flush()
	return w.files, w.err
}

func service(s Shape, i int) string { return fmt.Sprintf("svc-%d", i%s.Services) }

// dataplane i is an instance of service i % Services, calling the next two
// services.
func dataplane(s Shape, i int) string {
	addr := fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
	svc := i % s.Services
	if i%2 == 0 {
		proto := ""
		if svc%2 == 0 {
			proto = "        protocol: http\n"
		}
		return fmt.Sprintf("type: Dataplane\nmesh: default\nname: dp-%d\nnetworking:\n  address: %s\n  inbound:\n"+
			"    - port: 10001\n      servicePort: 8080\n      tags:\n        service: %s\n%s        version: v%d\n"+
			"  outbound:\n    - port: 20001\n      service: %s\n    - port: 20002\n      service: %s\n",
			i, addr, service(s, svc), proto, i%3, service(s, svc+1), service(s, svc+2))
	}
	proto := ""
	if svc%2 == 0 {
		proto = "        protocol: http\n"
	}
	return fmt.Sprintf("type: Dataplane\nmesh: default\nname: dp-%d\nnetworking:\n  inbound:\n"+
		"    - interface: %s:10001:8080\n      tags:\n        service: %s\n%s  outbound:\n"+
		"    - interface: :20001\n      service: %s\n    - interface: :20002\n      service: %s\n",
		i, addr, service(s, svc), proto, service(s, svc+1), service(s, svc+2))
}

// permission k lets one service (any, for every tenth) reach another.
func permission(s Shape, k int) string {
	src := service(s, k+s.Services-1)
	if k%10 == 0 {
		src = "'*'"
	}
	return fmt.Sprintf("type: TrafficPermission\nmesh: default\nname: tp-%d\nsources:\n  - match:\n      service: %s\n"+
		"destinations:\n  - match:\n      service: %s\n", k, src, service(s, k))
}

type writer struct {
	dir   string
	shape Shape
	buf   strings.Builder
	docs  int
	files int
	n     int
	err   error
}

func (w *writer) add(kind, prefix, doc string) {
	w.n++
	if w.shape.Single {
		w.write(filepath.Join(strings.ToLower(kind), fmt.Sprintf("%s-%06d.yaml", prefix, w.n)), doc)
		return
	}
	if w.docs > 0 {
		w.buf.WriteString("---\n")
	}
	w.buf.WriteString(doc)
	w.docs++
	if w.docs == w.shape.PerFile {
		w.flush()
	}
}

func (w *writer) flush() {
	if w.docs == 0 {
		return
	}
	f := w.files
	w.write(filepath.Join(fmt.Sprintf("d%02d", f%50), fmt.Sprintf("f%05d.yaml", f)), w.buf.String())
	w.buf.Reset()
	w.docs = 0
}

func (w *writer) write(name, content string) {
	if w.err != nil {
		return
	}
	p := filepath.Join(w.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		w.err = err
		return
	}
	w.err = os.WriteFile(p, []byte(content), 0o644)
	w.files++
}
