package main

import (
	"context"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// repoRoot is the repository's top directory, seen from this package.
const repoRoot = "../.."

// dockerInstr is one instruction of a Dockerfile: its keyword, the --flags
// before its arguments, and the arguments, continuation lines joined.
type dockerInstr struct {
	Cmd   string
	Flags map[string]string
	Args  string
	Line  int
}

// exec is the instruction's exec (JSON array) form, nil for the shell form.
func (in dockerInstr) exec() []string {
	var v []string
	if !strings.HasPrefix(strings.TrimSpace(in.Args), "[") || json.Unmarshal([]byte(in.Args), &v) != nil {
		return nil
	}
	return v
}

// dockerStage is the instructions from one FROM to the next.
type dockerStage struct {
	Base, Name string
	Platform   string
	Instrs     []dockerInstr
}

// instrs are the stage's instructions with keyword cmd.
func (s dockerStage) instrs(cmd string) []dockerInstr {
	var out []dockerInstr
	for _, in := range s.Instrs {
		if in.Cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// env is what the stage's ENV instructions set.
func (s dockerStage) env(t *testing.T) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, in := range s.instrs("ENV") {
		for k, v := range keyValues(t, in) {
			env[k] = v
		}
	}
	return env
}

// keyValues are the k=v words of an ENV or LABEL instruction (or the legacy
// "ENV key value" form).
func keyValues(t *testing.T, in dockerInstr) map[string]string {
	t.Helper()
	words, err := shellWords(in.Args)
	if err != nil {
		t.Fatalf("Dockerfile:%d: %v", in.Line, err)
	}
	out := map[string]string{}
	if len(words) >= 2 && !strings.Contains(words[0], "=") {
		out[words[0]] = strings.Join(words[1:], " ")
		return out
	}
	for _, w := range words {
		k, v, ok := strings.Cut(w, "=")
		if !ok {
			t.Fatalf("Dockerfile:%d: %s word %q is no key=value", in.Line, in.Cmd, w)
		}
		out[k] = v
	}
	return out
}

// parseDockerfile reads the instructions of a Dockerfile: comments and
// parser directives skipped, lines ending in a backslash continued
// (comment lines within a continuation dropped, as BuildKit does).
func parseDockerfile(src string) ([]dockerInstr, error) {
	var out []dockerInstr
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(src, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if strings.HasSuffix(trimmed, `\`) {
			cur.WriteString(strings.TrimSuffix(trimmed, `\`) + " ")
			continue
		}
		cur.WriteString(trimmed)
		text := strings.TrimSpace(cur.String())
		cur.Reset()
		if text == "" {
			continue
		}
		kw, rest, _ := strings.Cut(text, " ")
		in := dockerInstr{Cmd: strings.ToUpper(kw), Flags: map[string]string{}, Line: start}
		rest = strings.TrimSpace(rest)
		for strings.HasPrefix(rest, "--") {
			flag, tail, _ := strings.Cut(rest, " ")
			k, v, _ := strings.Cut(strings.TrimPrefix(flag, "--"), "=")
			if _, dup := in.Flags[k]; dup && k != "mount" {
				return nil, fmt.Errorf("line %d: --%s given twice", start, k)
			}
			in.Flags[k] = v
			rest = strings.TrimSpace(tail)
		}
		if strings.Contains(rest, "<<") && (in.Cmd == "RUN" || in.Cmd == "COPY") {
			return nil, fmt.Errorf("line %d: here-documents are not understood by this test", start)
		}
		in.Args = rest
		out = append(out, in)
	}
	if cur.Len() > 0 {
		return nil, fmt.Errorf("the file ends inside a continued line")
	}
	return out, nil
}

// dockerStages groups instructions by FROM; ARGs before the first FROM are
// dropped (this Dockerfile has none).
func dockerStages(t *testing.T, instrs []dockerInstr) []dockerStage {
	t.Helper()
	var stages []dockerStage
	for _, in := range instrs {
		if in.Cmd == "FROM" {
			f := strings.Fields(in.Args)
			st := dockerStage{Base: f[0], Platform: in.Flags["platform"]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.Name = f[2]
			} else if len(f) != 1 {
				t.Fatalf("Dockerfile:%d: FROM %q", in.Line, in.Args)
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			t.Fatalf("Dockerfile:%d: %s before the first FROM", in.Line, in.Cmd)
		}
		stages[len(stages)-1].Instrs = append(stages[len(stages)-1].Instrs, in)
	}
	return stages
}

// shellWords splits a POSIX shell command line into words: quotes removed,
// backslashes outside single quotes escaping the next character.
func shellWords(s string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unterminated ' in %q", s)
			}
			w.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0 {
					i++
				}
				w.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, fmt.Errorf("unterminated \" in %q", s)
			}
			inWord = true
		case c == '\\' && i+1 < len(s):
			i++
			w.WriteByte(s[i])
			inWord = true
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, nil
}

// goBuild is the `go build` of a RUN instruction: the variables assigned
// before it and its arguments after "build".
type goBuild struct {
	Env  map[string]string
	Args []string
	In   dockerInstr
}

// findGoBuild finds the one `go build` among the stage's RUN instructions.
func findGoBuild(t *testing.T, st dockerStage) *goBuild {
	t.Helper()
	var found *goBuild
	for _, in := range st.instrs("RUN") {
		words, err := shellWords(in.Args)
		if err != nil {
			t.Fatalf("Dockerfile:%d: %v", in.Line, err)
		}
		// Simple commands separated by && or ;.
		var cmds [][]string
		cmd := []string{}
		for _, w := range words {
			if w == "&&" || w == ";" || w == "||" {
				cmds, cmd = append(cmds, cmd), []string{}
				continue
			}
			cmd = append(cmd, w)
		}
		cmds = append(cmds, cmd)
		for _, c := range cmds {
			env := map[string]string{}
			for len(c) > 0 && regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`).MatchString(c[0]) {
				k, v, _ := strings.Cut(c[0], "=")
				env[k] = v
				c = c[1:]
			}
			if len(c) >= 2 && c[0] == "go" && c[1] == "build" {
				if found != nil {
					t.Fatalf("Dockerfile:%d: a second go build (the first at line %d)", in.Line, found.In.Line)
				}
				found = &goBuild{Env: env, Args: c[2:], In: in}
			}
		}
	}
	return found
}

// output is the -o argument, and pkgs the packages built.
func (b *goBuild) output() (out string, pkgs []string) {
	for i := 0; i < len(b.Args); i++ {
		a := b.Args[i]
		switch {
		case a == "-o" && i+1 < len(b.Args):
			out = b.Args[i+1]
			i++
		case strings.HasPrefix(a, "-o="):
			out = strings.TrimPrefix(a, "-o=")
		case a == "-ldflags" || a == "-tags" || a == "-gcflags" || a == "-mod":
			i++ // their value follows
		case !strings.HasPrefix(a, "-"):
			pkgs = append(pkgs, a)
		}
	}
	return out, pkgs
}

// dockerignore is a .dockerignore: patterns matched as BuildKit matches them
// (a pattern excluding a directory excludes what is in it, ** any number of
// directories, a leading ! excepting, the last matching pattern deciding).
type dockerignore struct {
	pats []*regexp.Regexp
	neg  []bool
}

func parseDockerignore(t *testing.T, src string) dockerignore {
	t.Helper()
	var d dockerignore
	for _, line := range strings.Split(src, "\n") {
		p := strings.TrimSpace(line)
		if p == "" || strings.HasPrefix(p, "#") {
			continue
		}
		neg := strings.HasPrefix(p, "!")
		p = strings.TrimPrefix(path.Clean(strings.TrimPrefix(p, "!")), "/")
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(p); i++ {
			switch {
			case strings.HasPrefix(p[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(p[i:], "**"):
				re.WriteString(".*")
				i++
			case p[i] == '*':
				re.WriteString("[^/]*")
			case p[i] == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(p[i : i+1]))
			}
		}
		re.WriteString("$")
		d.pats = append(d.pats, regexp.MustCompile(re.String()))
		d.neg = append(d.neg, neg)
	}
	return d
}

// ignored says whether the slash-separated path rel stays out of the
// build context.
func (d dockerignore) ignored(rel string) bool {
	out := false
	for i, re := range d.pats {
		for p := rel; p != "." && p != "/"; p = path.Dir(p) {
			if re.MatchString(p) {
				out = !d.neg[i]
				break
			}
		}
	}
	return out
}

// buildContext copies into dir what docker build would send from root.
func (d dockerignore) buildContext(t *testing.T, root, dir string) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.ignored(rel) {
			if e.IsDir() && !slices.Contains(d.neg, true) {
				return filepath.SkipDir
			}
			return nil
		}
		if e.IsDir() || !e.Type().IsRegular() {
			return nil
		}
		dst := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		out, err := os.Create(dst)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, src); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// serveFlagPort is the port of a serve flag's default address.
func serveFlagPort(t *testing.T, name string) string {
	t.Helper()
	f := newServeCmd().Flags().Lookup(name)
	if f == nil {
		t.Fatalf("serve has no --%s", name)
	}
	_, port, err := net.SplitHostPort(f.DefValue)
	if err != nil {
		t.Fatalf("--%s default %q: %v", name, f.DefValue, err)
	}
	return port
}

// serveFlagOfEnv is the serve flag the variable GITMESH_* sets, nil when
// none does.
func serveFlagOfEnv(cmd *cobra.Command, env string) string {
	name := ""
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if envName(f.Name) == env {
			name = f.Name
		}
	})
	return name
}

// TestDockerfile reads the Dockerfile as docker build would and checks the
// image it describes: a Go builder stage and a final stage of nothing but
// the static binary and CA certificates, run as a numeric non-root user,
// exposing serve's ports, its state directory a volume the user owns.
func TestDockerfile(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	instrs, err := parseDockerfile(string(src))
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	stages := dockerStages(t, instrs)
	if len(stages) < 2 {
		t.Fatalf("%d stage(s); want a builder stage and a final one", len(stages))
	}
	final := stages[len(stages)-1]
	names := map[string]int{}
	for i, st := range stages {
		if st.Name != "" {
			names[st.Name] = i
		}
	}

	// The builder: Go 1.26, one static, trimmed go build of a main package.
	var builder dockerStage
	var build *goBuild
	for _, st := range stages[:len(stages)-1] {
		if b := findGoBuild(t, st); b != nil {
			builder, build = st, b
		}
	}
	if build == nil {
		t.Fatal("no stage before the last runs go build")
	}
	if !strings.HasPrefix(builder.Base, "golang:1.26") {
		t.Errorf("builder FROM %s; want golang:1.26", builder.Base)
	}
	env := builder.env(t)
	for k, v := range build.Env {
		env[k] = v
	}
	if env["CGO_ENABLED"] != "0" {
		t.Errorf("go build runs with CGO_ENABLED=%q; want 0 (a static binary)", env["CGO_ENABLED"])
	}
	if !slices.Contains(build.Args, "-trimpath") {
		t.Errorf("go build %v: no -trimpath", build.Args)
	}
	binOut, pkgs := build.output()
	if binOut == "" || len(pkgs) != 1 {
		t.Fatalf("go build %v: want -o FILE and one package", build.Args)
	}
	mainSrc, err := os.ReadFile(filepath.Join(repoRoot, filepath.FromSlash(pkgs[0]), "main.go"))
	if err != nil || !regexp.MustCompile(`(?m)^package main$`).Match(mainSrc) {
		t.Errorf("go build %s: no main package there (%v)", pkgs[0], err)
	}

	// The final stage: nothing to run a shell or a package manager with.
	if final.Base != "scratch" && !strings.HasPrefix(final.Base, "gcr.io/distroless/static") {
		t.Errorf("final stage FROM %s; want scratch or gcr.io/distroless/static", final.Base)
	}
	if strings.Contains(final.Base, ":debug") {
		t.Errorf("final stage FROM %s: the debug images hold a shell", final.Base)
	}
	if _, ok := names[final.Base]; ok {
		t.Errorf("final stage FROM the stage %s", final.Base)
	}
	for _, in := range final.Instrs {
		switch in.Cmd {
		case "RUN", "ADD", "ONBUILD", "SHELL":
			t.Errorf("Dockerfile:%d: %s in the final stage (it has no shell)", in.Line, in.Cmd)
		}
	}
	copied := map[string]dockerInstr{} // destination in the image → the COPY
	for _, in := range final.Instrs {
		if in.Cmd != "COPY" {
			continue
		}
		from, ok := in.Flags["from"]
		if _, named := names[from]; !ok || !named {
			t.Errorf("Dockerfile:%d: final stage copies from %q, not from a stage of this file", in.Line, from)
		}
		words := strings.Fields(in.Args)
		dst := words[len(words)-1]
		for _, s := range words[:len(words)-1] {
			if strings.HasSuffix(dst, "/") {
				copied[dst+path.Base(s)] = in
			} else {
				copied[dst] = in
			}
		}
	}
	entry := final.instrs("ENTRYPOINT")
	if len(entry) != 1 || !slices.Equal(entry[0].exec(), []string{"/gitmesh"}) {
		t.Fatalf("ENTRYPOINT %+v; want the exec form [\"/gitmesh\"]", entry)
	}
	if in, ok := copied["/gitmesh"]; !ok || !strings.HasPrefix(in.Args, binOut+" ") || in.Flags["from"] != builder.Name {
		t.Errorf("/gitmesh is not the %s go build wrote (%+v)", binOut, in)
	}
	if final.Base == "scratch" {
		if _, ok := copied["/etc/ssl/certs/ca-certificates.crt"]; !ok {
			t.Error("a scratch image without /etc/ssl/certs/ca-certificates.crt cannot reach https:// remotes")
		}
	}
	cmds := final.instrs("CMD")
	if len(cmds) != 1 || len(cmds[0].exec()) == 0 {
		t.Fatalf("CMD %+v; want one in exec form", cmds)
	}
	if code, out, errb := gitmesh(t, cmds[0].exec()...); code != exitOK || !strings.Contains(out, "gitmesh serve") {
		t.Errorf("gitmesh %v (the image's default): exit %d\n%s%s", cmds[0].exec(), code, out, errb)
	}

	// A numeric user that is not root, owning the state directory, a volume.
	users := final.instrs("USER")
	if len(users) != 1 {
		t.Fatalf("%d USER in the final stage; want one", len(users))
	}
	user := strings.TrimSpace(users[0].Args)
	uid, gid, ok := strings.Cut(user, ":")
	if u, err := strconv.Atoi(uid); err != nil || u == 0 || !ok {
		t.Errorf("USER %s; want numeric uid:gid, not root", user)
	} else if _, err := strconv.Atoi(gid); err != nil || gid == "0" {
		t.Errorf("USER %s; want a numeric group that is not root", user)
	}
	fenv := final.env(t)
	stateDir := fenv["GITMESH_STATE_DIR"]
	var volumes []string
	for _, in := range final.instrs("VOLUME") {
		if v := in.exec(); v != nil {
			volumes = append(volumes, v...)
		} else {
			volumes = append(volumes, strings.Fields(in.Args)...)
		}
	}
	if stateDir == "" || !slices.Equal(volumes, []string{stateDir}) {
		t.Errorf("VOLUME %v; want the state directory GITMESH_STATE_DIR=%q alone", volumes, stateDir)
	}
	if in, ok := copied[stateDir]; !ok || in.Flags["chown"] != user {
		t.Errorf("the state directory %s is not copied in owned by %s (%+v): the user could not write it", stateDir, user, in)
	}

	// Serve's ports, exposed and listened on from outside the container.
	want := []string{serveFlagPort(t, "xds-address"), serveFlagPort(t, "api-address")}
	var exposed []string
	for _, in := range final.instrs("EXPOSE") {
		for _, p := range strings.Fields(in.Args) {
			exposed = append(exposed, strings.TrimSuffix(p, "/tcp"))
		}
	}
	if !slices.Equal(exposed, want) {
		t.Errorf("EXPOSE %v; want serve's ports %v (xDS, API)", exposed, want)
	}
	serve := newServeCmd()
	for k, v := range fenv {
		if !strings.HasPrefix(k, EnvPrefix) {
			continue
		}
		name := serveFlagOfEnv(serve, k)
		if name == "" {
			t.Errorf("ENV %s sets no flag of gitmesh serve", k)
			continue
		}
		if err := serve.Flags().Set(name, v); err != nil {
			t.Errorf("ENV %s=%s: --%s refuses it: %v", k, v, name, err)
		}
	}
	for flag, port := range map[string]string{"GITMESH_XDS_ADDRESS": want[0], "GITMESH_API_ADDRESS": want[1]} {
		host, p, err := net.SplitHostPort(fenv[flag])
		if err != nil || host != "" || p != port {
			t.Errorf("ENV %s=%q; want :%s, every interface of the container", flag, fenv[flag], port)
		}
	}
}

// TestDockerBuild builds the binary the way the Dockerfile does, from the
// files .dockerignore lets into the context, and checks it is static,
// trimmed, and runs the image's default command.
func TestDockerBuild(t *testing.T) {
	stages := dockerfileStages(t)
	var build *goBuild
	var builder dockerStage
	for _, st := range stages {
		if b := findGoBuild(t, st); b != nil {
			build, builder = b, st
		}
	}
	if build == nil {
		t.Fatal("no go build in the Dockerfile")
	}
	ignore, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	di := parseDockerignore(t, string(ignore))
	for _, p := range []string{".git", ".git/config", ".gitmesh/admin-token", ".gitmesh/ca/default/key.pem",
		"policies/.gitmesh/admin-token", "bin/gitmesh", "gitmesh", ".run/x", "cmd/gitmesh/serve_test.go"} {
		if !di.ignored(p) {
			t.Errorf(".dockerignore lets %s into the build context", p)
		}
	}
	for _, p := range []string{"go.mod", "go.sum", "cmd/gitmesh/main.go", "schema/schemas/mesh.json", "api/ui/index.html"} {
		if di.ignored(p) {
			t.Errorf(".dockerignore keeps %s out of the build context", p)
		}
	}
	if _, err := os.Stat(filepath.Join(repoRoot, "schema/schemas/mesh.json")); err != nil {
		t.Errorf("the schema this test expects to be embedded moved: %v", err)
	}

	// The context as the builder's WORKDIR sees it after its COPYs.
	ctxDir := t.TempDir()
	di.buildContext(t, repoRoot, ctxDir)
	for _, in := range builder.instrs("COPY") {
		words := strings.Fields(in.Args)
		for _, s := range words[:len(words)-1] {
			if _, err := os.Stat(filepath.Join(ctxDir, s)); err != nil {
				t.Errorf("Dockerfile:%d: COPY %s: not in the build context", in.Line, s)
			}
		}
	}
	// The build's own variables, those of its stage, and the platform's.
	vars := map[string]string{"TARGETOS": runtime.GOOS, "TARGETARCH": runtime.GOARCH}
	for k, v := range builder.env(t) {
		vars[k] = v
	}
	environ := append(os.Environ(), "GOPROXY=off", "GOWORK=off")
	for k, v := range vars {
		environ = append(environ, k+"="+v)
	}
	for k, v := range build.Env {
		environ = append(environ, k+"="+os.Expand(v, func(n string) string { return vars[n] }))
	}
	bin := filepath.Join(t.TempDir(), "gitmesh")
	args := []string{"build"}
	for i := 0; i < len(build.Args); i++ {
		a := os.Expand(build.Args[i], func(n string) string { return vars[n] })
		if a == "-o" {
			args = append(args, "-o", bin)
			i++
			continue
		}
		args = append(args, a)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go build needs the go command: %v", err)
	}
	cmd := exec.CommandContext(ctx, gobin, args...)
	cmd.Dir, cmd.Env = ctxDir, environ
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s in the build context: %v\n%s", strings.Join(args, " "), err, out)
	}

	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	if settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" {
		t.Errorf("build settings CGO_ENABLED=%q -trimpath=%q; want 0 and true", settings["CGO_ENABLED"], settings["-trimpath"])
	}
	if runtime.GOOS == "linux" {
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Error("the binary names a dynamic loader (PT_INTERP): it is not static")
			}
		}
		if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
			t.Errorf("the binary needs shared libraries %v (%v)", libs, err)
		}
	}
	run := exec.CommandContext(ctx, bin, "serve", "--help")
	run.Env = []string{} // none of this machine's variables
	if out, err := run.CombinedOutput(); err != nil || !strings.Contains(string(out), "--state-dir") {
		t.Errorf("gitmesh serve --help: %v\n%s", err, out)
	}
}

// dockerfileStages are the stages of the Dockerfile at the root.
func dockerfileStages(t *testing.T) []dockerStage {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	instrs, err := parseDockerfile(string(src))
	if err != nil {
		t.Fatal(err)
	}
	return dockerStages(t, instrs)
}
