// Package pgtest starts throwaway PostgreSQL servers for tests: initdb and
// pg_ctl from Debian's postgresql package, in a temporary directory,
// listening on 127.0.0.1 on a free port, with trust authentication. As
// root it runs them as the postgres user (initdb refuses root). Where the
// binaries are missing the test fails, saying how to install them: the
// PostgreSQL tests never skip.
package pgtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
)

// Server is a running throwaway PostgreSQL server.
type Server struct {
	dir, bin string
	port     int
	asUser   string // "postgres" when run as root, else ""
}

// binDir finds the server binaries: $GITMESH_PG_BIN, else the newest
// /usr/lib/postgresql/*/bin holding initdb.
func binDir() (string, error) {
	if d := os.Getenv("GITMESH_PG_BIN"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(dirs[i]))))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(dirs[j]))))
		return vi > vj
	})
	if len(dirs) == 0 {
		if p, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p), nil
		}
		return "", fmt.Errorf("no PostgreSQL server binaries (initdb, pg_ctl) in /usr/lib/postgresql/*/bin or on PATH: " +
			"install them with `apt-get install -y postgresql` (.ci/run does), or set GITMESH_PG_BIN to their directory")
	}
	return filepath.Dir(dirs[0]), nil
}

// Start starts a server for the test and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := binDir()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{bin: bin}
	// Not t.TempDir: its parents are 0700 and the postgres user could not
	// reach the data directory.
	s.dir, err = os.MkdirTemp("", "gitmesh-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(s.dir) })
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root, PostgreSQL must run as the postgres user, which does not exist (apt-get install -y postgresql creates it): %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(s.dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		s.asUser = "postgres"
	}
	if out, err := s.run("initdb", "-D", s.data(), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	// A free port can be taken between its discovery and the server's
	// start: try a few.
	for try := 0; ; try++ {
		s.port = freePort(t)
		err := s.start()
		if err == nil {
			break
		}
		if try == 2 {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _, _ = s.run("pg_ctl", "-D", s.data(), "-m", "immediate", "-w", "stop") })
	return s
}

func (s *Server) data() string { return filepath.Join(s.dir, "data") }

func (s *Server) run(tool string, args ...string) ([]byte, error) {
	name := filepath.Join(s.bin, tool)
	if s.asUser != "" {
		args = append([]string{"-u", s.asUser, "--", name}, args...)
		name = "runuser"
	}
	cmd := exec.Command(name, args...)
	cmd.Dir = s.dir
	return cmd.CombinedOutput()
}

func (s *Server) start() error {
	opts := fmt.Sprintf("-k %s -p %d -c listen_addresses=127.0.0.1 -c fsync=off", s.dir, s.port)
	out, err := s.run("pg_ctl", "-D", s.data(), "-o", opts, "-l", filepath.Join(s.dir, "log"), "-w", "-t", "60", "start")
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "log"))
		return fmt.Errorf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
	return nil
}

// URL is the server's connection URL (user postgres, no password).
func (s *Server) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
}

// Port is the port the server listens on.
func (s *Server) Port() int { return s.port }

// Stop stops the server (fast shutdown: connections are cut).
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	if out, err := s.run("pg_ctl", "-D", s.data(), "-m", "fast", "-w", "stop"); err != nil {
		t.Fatalf("pg_ctl stop: %v\n%s", err, out)
	}
}

// Restart starts the stopped server again on the same port.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
