package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/gitmesh/gitmesh/store"
)

// kubeDir holds the Kubernetes manifests of gitmesh serve.
const kubeDir = repoRoot + "/examples/kubernetes"

// The files of kubeDir that are not resources of the kustomization.
const (
	kubeKustomization = "kustomization.yaml"
	kubeSecrets       = "secrets.yaml" // placeholders: applied by hand, never by apply -k
)

// kubeKinds are the kinds the manifests may hold, by apiVersion and kind,
// each decoded into its type from k8s.io/api.
var kubeKinds = map[string]func() any{
	"v1/Namespace":                  func() any { return &corev1.Namespace{} },
	"v1/ServiceAccount":             func() any { return &corev1.ServiceAccount{} },
	"v1/Secret":                     func() any { return &corev1.Secret{} },
	"v1/Service":                    func() any { return &corev1.Service{} },
	"apps/v1/Deployment":            func() any { return &appsv1.Deployment{} },
	"policy/v1/PodDisruptionBudget": func() any { return &policyv1.PodDisruptionBudget{} },
}

// kubeObject is one decoded document: where it is, and the object.
type kubeObject struct {
	File string
	Line int
	Kind string
	Meta metav1.ObjectMeta
	Obj  any
}

func (o kubeObject) String() string {
	return fmt.Sprintf("%s:%d: %s %s", o.File, o.Line, o.Kind, o.Meta.Name)
}

// kubeDocs splits a file into its YAML documents, each with the line of
// its first field; documents of nothing but comments are dropped.
func kubeDocs(src string) (docs []string, lines []int) {
	var cur strings.Builder
	start := 0
	flush := func() {
		if start > 0 {
			docs, lines = append(docs, cur.String()), append(lines, start)
		}
		cur.Reset()
		start = 0
	}
	for i, l := range strings.Split(src, "\n") {
		if strings.TrimRight(l, " \t") == "---" {
			flush()
			continue
		}
		if t := strings.TrimSpace(l); start == 0 && t != "" && !strings.HasPrefix(t, "#") {
			start = i + 1
		}
		cur.WriteString(l + "\n")
	}
	flush()
	return docs, lines
}

// kubeLine is the line of file, from line from on, where text first
// appears; from itself when it does not.
func (m kubeManifests) kubeLine(file string, from int, text string) int {
	lines := strings.Split(m.Src[file], "\n")
	for i := max(from-1, 0); i < len(lines); i++ {
		if strings.Contains(lines[i], text) {
			return i + 1
		}
	}
	return from
}

// kubeDecodeStrict decodes one YAML document into v, refusing what a lax
// decoding drops silently: a field v's type does not have, or a key given
// twice.
func kubeDecodeStrict(doc string, v any) error {
	j, err := yaml.YAMLToJSONStrict([]byte(doc))
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("more than one value in the document")
	}
	return nil
}

// kubeManifests are the resources of kubeDir, decoded.
type kubeManifests struct {
	Files    []string // base names of the *.yaml files
	Objects  []kubeObject
	Secrets  map[string]*corev1.Secret // those of secrets.yaml, by name
	Comments map[string][]string       // each file's comment lines
	Src      map[string]string         // each file's text
}

// only is the one object of kind, or fails the test.
func (m kubeManifests) only(t *testing.T, kind string) kubeObject {
	t.Helper()
	var found []kubeObject
	for _, o := range m.Objects {
		if o.Kind == kind {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d %s in %s; want one", len(found), kind, kubeDir)
	}
	return found[0]
}

func (m kubeManifests) all(kind string) []kubeObject {
	var out []kubeObject
	for _, o := range m.Objects {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

// readKubeManifests reads and strictly decodes every document of every
// *.yaml file of kubeDir except the kustomization.
func readKubeManifests(t *testing.T) kubeManifests {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(kubeDir, "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no manifests in %s (%v)", kubeDir, err)
	}
	if yml, _ := filepath.Glob(filepath.Join(kubeDir, "*.yml")); len(yml) > 0 {
		t.Errorf("%v: name manifests *.yaml, as the others", yml)
	}
	m := kubeManifests{Secrets: map[string]*corev1.Secret{}, Comments: map[string][]string{}, Src: map[string]string{}}
	seen := map[string]kubeObject{}
	for _, p := range paths {
		file := filepath.Base(p)
		m.Files = append(m.Files, file)
		src, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		m.Src[file] = string(src)
		for _, l := range strings.Split(string(src), "\n") {
			if c, ok := strings.CutPrefix(strings.TrimSpace(l), "#"); ok {
				m.Comments[file] = append(m.Comments[file], strings.TrimSpace(c))
			}
		}
		if file == kubeKustomization {
			continue
		}
		docs, lines := kubeDocs(string(src))
		if len(docs) == 0 {
			t.Errorf("%s: no resource", file)
		}
		for i, doc := range docs {
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
				t.Errorf("%s:%d: %v", file, lines[i], err)
				continue
			}
			newObj, ok := kubeKinds[tm.APIVersion+"/"+tm.Kind]
			if !ok {
				t.Errorf("%s:%d: apiVersion %q kind %q: not a kind this example uses (%s)", file, lines[i], tm.APIVersion, tm.Kind,
					strings.Join(slices.Sorted(maps.Keys(kubeKinds)), ", "))
				continue
			}
			obj := newObj()
			if err := kubeDecodeStrict(doc, obj); err != nil {
				t.Errorf("%s:%d: %s %s: %v", file, lines[i], tm.APIVersion, tm.Kind, err)
				continue
			}
			o := kubeObject{File: file, Line: lines[i], Kind: tm.Kind, Obj: obj, Meta: kubeMeta(obj)}
			if o.Meta.Name == "" {
				t.Errorf("%s: no metadata.name", o)
			}
			key := o.Kind + "/" + o.Meta.Namespace + "/" + o.Meta.Name
			if prev, dup := seen[key]; dup {
				t.Errorf("%s: declared again (first at %s:%d)", o, prev.File, prev.Line)
			}
			seen[key] = o
			if s, ok := obj.(*corev1.Secret); ok {
				if file != kubeSecrets {
					t.Errorf("%s: Secrets belong in %s, which apply -k leaves alone", o, kubeSecrets)
				}
				m.Secrets[s.Name] = s
			}
			m.Objects = append(m.Objects, o)
		}
	}
	return m
}

// kubeMeta is the ObjectMeta of one of kubeKinds' types.
func kubeMeta(obj any) metav1.ObjectMeta {
	switch o := obj.(type) {
	case *corev1.Namespace:
		return o.ObjectMeta
	case *corev1.ServiceAccount:
		return o.ObjectMeta
	case *corev1.Secret:
		return o.ObjectMeta
	case *corev1.Service:
		return o.ObjectMeta
	case *appsv1.Deployment:
		return o.ObjectMeta
	case *policyv1.PodDisruptionBudget:
		return o.ObjectMeta
	}
	panic(fmt.Sprintf("no metadata for %T", obj))
}

// kubeArgs are the flags of the serve command line in a container's args:
// by name, its value as written (before Kubernetes expands $(VAR)).
type kubeArgs map[string]string

// kubeServeFlags checks that every word after "serve" is a real flag of
// gitmesh serve taking the value given (with $(VAR) expanded as the pod
// would expand it, from vars), and returns the flags by name. A flag serve
// does not have is reported and still returned, so that the checks of its
// value go on.
func kubeServeFlags(t *testing.T, whereOf func(word string) string, words []string, vars map[string]string) kubeArgs {
	t.Helper()
	fs := newServeCmd().Flags()
	got := kubeArgs{}
	for i := 0; i < len(words); i++ {
		w := words[i]
		where := whereOf(w)
		if !strings.HasPrefix(w, "--") {
			t.Errorf("%s: args: %q is no --flag (serve takes no arguments)", where, w)
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimPrefix(w, "--"), "=")
		f := fs.Lookup(name)
		if f == nil {
			t.Errorf("%s: args: gitmesh serve has no flag --%s", where, name)
			got[name] = val
			continue
		}
		if !hasVal && f.NoOptDefVal == "" {
			if i+1 >= len(words) {
				t.Errorf("%s: args: --%s without its value", where, name)
				continue
			}
			i++
			val = words[i]
		} else if !hasVal {
			val = f.NoOptDefVal
		}
		if _, dup := got[name]; dup {
			t.Errorf("%s: args: --%s given twice", where, name)
		}
		got[name] = val
		if err := fs.Set(name, kubeExpand(val, vars)); err != nil {
			t.Errorf("%s: args: --%s=%s: serve refuses it: %v", where, name, val, err)
		}
	}
	return got
}

// kubeVarRef is a $(VAR) of a container's args, as Kubernetes expands it
// ($$ escapes).
var kubeVarRef = regexp.MustCompile(`\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

func kubeExpand(s string, vars map[string]string) string {
	return kubeVarRef.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		if v, ok := vars[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
}

// kubeMount is where a file of a container comes from: the volume and the
// path within it.
func kubeMount(c corev1.Container, file string) (corev1.VolumeMount, string, bool) {
	best, rel := corev1.VolumeMount{}, ""
	for _, vm := range c.VolumeMounts {
		r, err := filepath.Rel(vm.MountPath, file)
		if err != nil || r == "." || strings.HasPrefix(r, "..") {
			continue
		}
		if len(vm.MountPath) > len(best.MountPath) {
			best, rel = vm, r
		}
	}
	if vm := best; vm.SubPath != "" {
		rel = path.Join(vm.SubPath, rel)
	}
	return best, rel, best.Name != ""
}

// kubeSecretKey is the Secret and key a file of a Secret volume holds.
func kubeSecretKey(vol corev1.Volume, rel string) (secret, key string, ok bool) {
	if vol.Secret == nil {
		return "", "", false
	}
	if len(vol.Secret.Items) == 0 {
		return vol.Secret.SecretName, rel, !strings.Contains(rel, "/")
	}
	for _, it := range vol.Secret.Items {
		if path.Clean(it.Path) == rel {
			return vol.Secret.SecretName, it.Key, true
		}
	}
	return vol.Secret.SecretName, "", false
}

// kubeSecretFile says which Secret key the file a container reads comes
// from: a Secret volume mounted in the container.
func kubeSecretFile(spec corev1.PodSpec, c corev1.Container, file string) (secret, key string, err error) {
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	vm, rel, ok := kubeMount(c, file)
	if !ok {
		return "", "", fmt.Errorf("no volume of the container %s is mounted there", c.Name)
	}
	vol, ok := vols[vm.Name]
	if !ok {
		return "", "", fmt.Errorf("the container %s mounts the volume %s, which the pod does not have", c.Name, vm.Name)
	}
	if vol.Secret == nil {
		return "", "", fmt.Errorf("the volume %s is not a Secret", vol.Name)
	}
	s, k, ok := kubeSecretKey(vol, rel)
	if !ok {
		return s, "", fmt.Errorf("the Secret volume %s has no file %s", vol.Name, rel)
	}
	return s, k, nil
}

// kubeSecretKeys are the keys of a Secret, from data and stringData.
func kubeSecretKeys(s *corev1.Secret) map[string]string {
	out := map[string]string{}
	for k, v := range s.Data {
		out[k] = string(v)
	}
	for k, v := range s.StringData {
		out[k] = v
	}
	return out
}

// kubePortOf resolves a probe's or a Service's port (a number or a name)
// among a container's ports.
func kubePortOf(c corev1.Container, p intstr.IntOrString) (corev1.ContainerPort, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp, true
		}
	}
	return corev1.ContainerPort{}, false
}

// kubePtr prints what p points to, or nil.
func kubePtr[T any](p *T) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}

// kubeFileFlags are serve's flags that name a file to read (--*-file, and
// the two whose names do not say so).
func kubeFileFlags(name string) bool {
	return strings.HasSuffix(name, "-file") || name == "ssh-known-hosts" || name == "verify-commits"
}

// TestKubernetesManifests decodes every manifest of examples/kubernetes
// strictly into its k8s.io/api type and checks that it runs gitmesh serve
// as three replicas of the image the Dockerfile builds, on serve's real
// flags, its secrets from files of Secrets that secrets.yaml declares.
func TestKubernetesManifests(t *testing.T) {
	m := readKubeManifests(t)

	nsObj := m.only(t, "Namespace")
	ns := nsObj.Obj.(*corev1.Namespace)
	if got := ns.Labels["pod-security.kubernetes.io/enforce"]; got != "restricted" {
		t.Errorf("%s: pod-security.kubernetes.io/enforce=%q; want restricted (the pods meet it)", nsObj, got)
	}
	for _, o := range m.Objects {
		if o.Kind != "Namespace" && o.Meta.Namespace != ns.Name {
			t.Errorf("%s: namespace %q; want %q, so that kubectl apply -f puts it there too", o, o.Meta.Namespace, ns.Name)
		}
	}

	// The Deployment: three replicas, spread over nodes.
	depObj := m.only(t, "Deployment")
	dep := depObj.Obj.(*appsv1.Deployment)
	if dep.Name != "gitmesh" {
		t.Errorf("%s: want the Deployment named gitmesh", depObj)
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 3 {
		t.Errorf("%s: replicas %s; want 3", depObj, kubePtr(dep.Spec.Replicas))
	}
	podLabels := labels.Set(dep.Spec.Template.Labels)
	if len(podLabels) == 0 {
		t.Fatalf("%s: the pod template has no labels", depObj)
	}
	selects := func(where string, ls *metav1.LabelSelector) {
		t.Helper()
		sel, err := metav1.LabelSelectorAsSelector(ls)
		switch {
		case err != nil:
			t.Errorf("%s: selector: %v", where, err)
		case ls == nil || sel.Empty():
			t.Errorf("%s: an empty selector selects every pod of the namespace", where)
		case !sel.Matches(podLabels):
			t.Errorf("%s: selector %s does not select the pods (%s)", where, sel, podLabels)
		}
	}
	selects(depObj.String(), dep.Spec.Selector)
	spec := dep.Spec.Template.Spec
	var anti bool
	if a := spec.Affinity; a != nil && a.PodAntiAffinity != nil {
		for _, w := range a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			if w.PodAffinityTerm.TopologyKey == "kubernetes.io/hostname" {
				selects(depObj.String()+": podAntiAffinity", w.PodAffinityTerm.LabelSelector)
				anti = true
			}
		}
	}
	if !anti {
		t.Errorf("%s: no preferred podAntiAffinity on kubernetes.io/hostname: the replicas may share a node", depObj)
	}

	// The disruption budget keeps two of three.
	pdbObj := m.only(t, "PodDisruptionBudget")
	pdb := pdbObj.Obj.(*policyv1.PodDisruptionBudget)
	selects(pdbObj.String(), pdb.Spec.Selector)
	switch s := pdb.Spec; {
	case s.MaxUnavailable != nil && s.MinAvailable == nil && s.MaxUnavailable.Type == intstr.Int && s.MaxUnavailable.IntVal == 1:
	case s.MinAvailable != nil && s.MaxUnavailable == nil && s.MinAvailable.Type == intstr.Int && s.MinAvailable.IntVal == 2:
	default:
		t.Errorf("%s: minAvailable %v maxUnavailable %v; want maxUnavailable 1 or minAvailable 2", pdbObj, s.MinAvailable, s.MaxUnavailable)
	}

	// The pod: its own account without a token, no service links.
	if spec.ServiceAccountName != "" {
		var found bool
		for _, o := range m.all("ServiceAccount") {
			if o.Meta.Name == spec.ServiceAccountName {
				found = true
				if sa := o.Obj.(*corev1.ServiceAccount); sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
					t.Errorf("%s: automountServiceAccountToken is not false", o)
				}
			}
		}
		if !found {
			t.Errorf("%s: serviceAccountName %s: no such ServiceAccount in the manifests", depObj, spec.ServiceAccountName)
		}
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("%s: automountServiceAccountToken is not false: gitmesh does not talk to the Kubernetes API", depObj)
	}
	if spec.EnableServiceLinks == nil || *spec.EnableServiceLinks {
		t.Errorf("%s: enableServiceLinks is not false: the variables of Services named gitmesh-* begin with %s, serve's prefix", depObj, EnvPrefix)
	}

	// The image's user, from the Dockerfile.
	stages := dockerfileStages(t)
	users := stages[len(stages)-1].instrs("USER")
	if len(users) != 1 {
		t.Fatalf("Dockerfile: %d USER in the final stage; want one", len(users))
	}
	uidS, gidS, _ := strings.Cut(strings.TrimSpace(users[0].Args), ":")
	uid, err1 := strconv.ParseInt(uidS, 10, 64)
	gid, err2 := strconv.ParseInt(gidS, 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("Dockerfile: USER %s; want numeric uid:gid", users[0].Args)
	}
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if psc.FSGroup == nil || *psc.FSGroup != gid {
		t.Errorf("%s: fsGroup %s; want %d, the image's group, or uid %d cannot read the Secret files", depObj, kubePtr(psc.FSGroup), gid, uid)
	}

	// Every container locked down: not root, no privilege, a read-only
	// root, no capabilities, the runtime's seccomp profile, bounded.
	var gm *corev1.Container
	all := append(slices.Clone(spec.InitContainers), spec.Containers...)
	for i := range all {
		c := &all[i]
		where := fmt.Sprintf("%s: container %s", depObj, c.Name)
		sc := c.SecurityContext
		if sc == nil {
			sc = &corev1.SecurityContext{}
		}
		nonRoot, user, group, seccomp := psc.RunAsNonRoot, psc.RunAsUser, psc.RunAsGroup, psc.SeccompProfile
		if sc.RunAsNonRoot != nil {
			nonRoot = sc.RunAsNonRoot
		}
		if sc.RunAsUser != nil {
			user = sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			group = sc.RunAsGroup
		}
		if sc.SeccompProfile != nil {
			seccomp = sc.SeccompProfile
		}
		if nonRoot == nil || !*nonRoot {
			t.Errorf("%s: runAsNonRoot is not true", where)
		}
		if user == nil || *user == 0 {
			t.Errorf("%s: runAsUser %s; want a user that is not root", where, kubePtr(user))
		}
		if group != nil && *group == 0 {
			t.Errorf("%s: runAsGroup 0", where)
		}
		if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: seccompProfile %v; want RuntimeDefault", where, seccomp)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: allowPrivilegeEscalation is not false", where)
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("%s: privileged", where)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("%s: readOnlyRootFilesystem is not true", where)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
			t.Errorf("%s: capabilities %+v; want drop ALL and no add", where, sc.Capabilities)
		}
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, lim := c.Resources.Requests[r], c.Resources.Limits[r]
			if req.IsZero() || lim.IsZero() {
				t.Errorf("%s: %s request %s limit %s; want both", where, r, req.String(), lim.String())
			} else if req.Cmp(lim) > 0 {
				t.Errorf("%s: %s request %s above its limit %s", where, r, req.String(), lim.String())
			}
		}
		if c.Image == "gitmesh:latest" {
			if gm != nil {
				t.Errorf("%s: a second container of gitmesh:latest", where)
			}
			gm = c
			if user == nil || *user != uid || group == nil || *group != gid {
				t.Errorf("%s: runs as %s:%s; want the image's USER %d:%d", where, kubePtr(user), kubePtr(group), uid, gid)
			}
		}
	}
	if gm == nil || !slices.ContainsFunc(spec.Containers, func(c corev1.Container) bool { return c.Name == gm.Name }) {
		t.Fatalf("%s: no container runs the image gitmesh:latest (built from the Dockerfile)", depObj)
	}
	where := fmt.Sprintf("%s: container %s", depObj, gm.Name)
	if gm.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("%s: imagePullPolicy %q; want IfNotPresent (the image is built locally)", where, gm.ImagePullPolicy)
	}
	if len(gm.Command) > 0 {
		t.Errorf("%s: command %v replaces the image's ENTRYPOINT /gitmesh", where, gm.Command)
	}
	if len(gm.Args) == 0 || gm.Args[0] != "serve" {
		t.Fatalf("%s: args %v; want serve ...", where, gm.Args)
	}

	// Its environment: $(VAR) in the args must name one; none of it may
	// carry a secret, and a GITMESH_* variable must set a serve flag.
	env := map[string]corev1.EnvVar{}
	var gitmeshVars [][2]string
	for _, e := range gm.Env {
		env[e.Name] = e
		if strings.HasPrefix(e.Name, EnvPrefix) {
			if e.ValueFrom != nil {
				t.Errorf("%s: %s comes from %+v: hand secrets over as files", where, e.Name, e.ValueFrom)
				continue
			}
			gitmeshVars = append(gitmeshVars, [2]string{e.Name, e.Value})
		}
	}
	if len(gm.EnvFrom) > 0 {
		t.Errorf("%s: envFrom %+v puts whole ConfigMaps or Secrets in the environment", where, gm.EnvFrom)
	}
	checkServeEnv(t, where+": env", gitmeshVars)
	// Sample values of what the downward API gives.
	fieldSamples := map[string]string{"metadata.name": "gitmesh-5d8f7c9b64-x2k4q", "metadata.namespace": ns.Name, "status.podIP": "10.244.1.17"}
	vars := map[string]string{}
	for _, e := range gm.Env {
		switch {
		case e.ValueFrom == nil:
			vars[e.Name] = kubeExpand(e.Value, vars)
		case e.ValueFrom.FieldRef != nil && fieldSamples[e.ValueFrom.FieldRef.FieldPath] != "":
			vars[e.Name] = fieldSamples[e.ValueFrom.FieldRef.FieldPath]
		default:
			vars[e.Name] = "x"
		}
	}
	for _, a := range gm.Args {
		for _, ref := range kubeVarRef.FindAllStringSubmatch(a, -1) {
			if ref[1] != "" && env[ref[1]].Name == "" {
				t.Errorf("%s: args: %s names no variable of the container: Kubernetes leaves it as it is", where, ref[0])
			}
		}
	}
	fieldVar := func(name, fieldPath string) {
		t.Helper()
		if e := env[name]; e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != fieldPath {
			t.Errorf("%s: env %s is not the downward API's %s", where, name, fieldPath)
		}
	}

	flags := kubeServeFlags(t, func(word string) string {
		return fmt.Sprintf("%s:%d: container %s", depObj.File, m.kubeLine(depObj.File, depObj.Line, "- "+word), gm.Name)
	}, gm.Args[1:], vars)

	// The ports: serve's, on every interface of the pod, named.
	ports := map[string]corev1.ContainerPort{}
	for _, p := range gm.Ports {
		ports[p.Name] = p
	}
	for name, flag := range map[string]string{"xds": "xds-address", "api": "api-address"} {
		want, _ := strconv.Atoi(serveFlagPort(t, flag))
		if p := ports[name]; p.ContainerPort != int32(want) || (p.Protocol != "" && p.Protocol != corev1.ProtocolTCP) {
			t.Errorf("%s: port %s %+v; want containerPort %d (serve's --%s), TCP", where, name, p, want, flag)
		}
		host, port, err := net.SplitHostPort(flags[flag])
		if err != nil || host != "" || port != strconv.Itoa(want) {
			t.Errorf("%s: --%s=%s; want :%d, every interface of the pod", where, flag, flags[flag], want)
		}
	}
	_, apiPort, _ := net.SplitHostPort(flags["api-address"])

	// The replica's identity, from the downward API.
	if flags["replica-id"] != "$(POD_NAME)" {
		t.Errorf("%s: --replica-id=%s; want $(POD_NAME)", where, flags["replica-id"])
	}
	fieldVar("POD_NAME", "metadata.name")
	if want := "$(POD_IP):" + apiPort; flags["advertise-address"] != want {
		t.Errorf("%s: --advertise-address=%s; want %s, the API port on the pod's IP", where, flags["advertise-address"], want)
	}
	fieldVar("POD_IP", "status.podIP")

	// The probes, on the API port, HTTPS when serve has TLS on.
	scheme := corev1.URISchemeHTTP
	if tls := flags["tls"]; tls != "" && tls != tlsOff {
		scheme = corev1.URISchemeHTTPS
	}
	for name, probe := range map[string]struct {
		p    *corev1.Probe
		path string
	}{"readinessProbe": {gm.ReadinessProbe, "/readyz"}, "livenessProbe": {gm.LivenessProbe, "/healthz"}} {
		if probe.p == nil || probe.p.HTTPGet == nil {
			t.Errorf("%s: no %s httpGet", where, name)
			continue
		}
		g := probe.p.HTTPGet
		cp, ok := kubePortOf(*gm, g.Port)
		if g.Path != probe.path || !ok || strconv.Itoa(int(cp.ContainerPort)) != apiPort {
			t.Errorf("%s: %s GET %s on port %s; want %s on the API port %s", where, name, g.Path, g.Port.String(), probe.path, apiPort)
		}
		if s := g.Scheme; s != scheme && !(s == "" && scheme == corev1.URISchemeHTTP) {
			t.Errorf("%s: %s scheme %s; want %s", where, name, s, scheme)
		}
	}

	// The state directory: an emptyDir of its own, the git mirror being
	// local to each replica.
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	stateDir := flags["state-dir"]
	if stateDir == "" {
		t.Errorf("%s: no --state-dir", where)
	} else if vm, rel, ok := kubeMount(*gm, filepath.Join(stateDir, "x")); !ok || rel != "x" || vols[vm.Name].EmptyDir == nil || vm.ReadOnly {
		t.Errorf("%s: --state-dir=%s is not the mount of a writable emptyDir", where, stateDir)
	}
	if flags["store"] == "" && flags["store-file"] == "" {
		t.Errorf("%s: neither --store nor --store-file: the replicas would not share a state", where)
	}

	// Every file flag reads a key of a Secret of secrets.yaml, and every
	// key there is read.
	// (A GITMESH_*_FILE variable names a file as its flag does; the
	// commands run in the pod read some of them too.)
	files := map[string]string{}
	for name, v := range flags {
		if kubeFileFlags(name) {
			files[name] = v
		}
	}
	for _, kv := range gitmeshVars {
		name := serveFlagOfEnv(newServeCmd(), kv[0])
		if !kubeFileFlags(name) {
			continue
		}
		if v, ok := files[name]; !ok {
			files[name] = kv[1]
		} else if v != kv[1] {
			t.Errorf("%s: env %s=%s and --%s=%s name different files", where, kv[0], kv[1], name, v)
		}
	}
	used := map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		secretName, key, err := kubeSecretFile(spec, *gm, files[name])
		if err != nil {
			t.Errorf("%s: --%s=%s: %v", where, name, files[name], err)
			continue
		}
		s, ok := m.Secrets[secretName]
		if !ok {
			t.Errorf("%s: --%s=%s: the Secret %s is not in %s", where, name, files[name], secretName, kubeSecrets)
			continue
		}
		if _, ok := kubeSecretKeys(s)[key]; !ok {
			t.Errorf("%s: --%s=%s: the Secret %s has no key %s", where, name, files[name], secretName, key)
		}
		used[secretName+"/"+key] = true
		// serve reads a store key only its owner may read, or, owned by
		// root, its group too: what the kubelet makes of a Secret's file
		// with fsGroup, whatever mode it is given beyond the group's.
		if name == "store-key-file" {
			vm, _, _ := kubeMount(*gm, files[name])
			for _, v := range spec.Volumes {
				if v.Name == vm.Name && v.Secret != nil && v.Secret.DefaultMode != nil && *v.Secret.DefaultMode&0o007 != 0 {
					t.Errorf("%s: --store-key-file=%s: the Secret volume %s gives others mode %04o; serve refuses a key others can read",
						where, files[name], v.Name, *v.Secret.DefaultMode)
				}
			}
			if spec.SecurityContext == nil || spec.SecurityContext.FSGroup == nil {
				t.Errorf("%s: --store-key-file=%s: without fsGroup the image's user cannot read a Secret's file", where, files[name])
			}
		}
	}
	for _, v := range spec.Volumes {
		if v.Secret == nil {
			continue
		}
		if v.Secret.Optional != nil && *v.Secret.Optional {
			t.Errorf("%s: the Secret volume %s is optional: serve would start without what its flags read", depObj, v.Name)
		}
		if _, ok := m.Secrets[v.Secret.SecretName]; !ok {
			t.Errorf("%s: the volume %s mounts the Secret %s, which %s does not declare", depObj, v.Name, v.Secret.SecretName, kubeSecrets)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(m.Secrets)) {
		for key := range kubeSecretKeys(m.Secrets[name]) {
			if !used[name+"/"+key] {
				t.Errorf("%s: the Secret %s's key %s is read by no flag", kubeSecrets, name, key)
			}
		}
	}

	// No password, nor any value of a Secret, on the command line or in
	// the environment.
	var secretValues []string
	for _, s := range m.Secrets {
		for _, v := range kubeSecretKeys(s) {
			secretValues = append(secretValues, strings.TrimSpace(v))
		}
	}
	line := append(slices.Clone(gm.Args), gm.Command...)
	for _, e := range gm.Env {
		line = append(line, e.Value)
	}
	for _, a := range line {
		for _, w := range strings.FieldsFunc(a, func(r rune) bool { return r == '=' || r == ' ' || r == ',' }) {
			if u, err := url.Parse(w); err == nil && u.User != nil {
				if _, ok := u.User.Password(); ok {
					t.Errorf("%s: %q carries a password, which the process list and kubectl get show", where, a)
				}
			}
		}
		for _, v := range secretValues {
			if v != "" && strings.Contains(a, v) {
				t.Errorf("%s: %q holds the value of a Secret", where, a)
			}
		}
	}
	if s := flags["store"]; s != "" && store.URLHasPassword(s) {
		t.Errorf("%s: --store=%s carries a password (serve refuses it)", where, s)
	}
	for _, f := range []string{"git-password", "git-token", "admin-token", "read-token"} {
		if _, ok := flags[f]; ok {
			t.Errorf("%s: --%s on the command line", where, f)
		}
	}

	// Flags in the comments (what a user uncomments) are real flags too.
	fs := newServeCmd().Flags()
	commented := regexp.MustCompile(`^-\s+--([a-z0-9-]+)`)
	for _, c := range m.Comments[depObj.File] {
		if sub := commented.FindStringSubmatch(c); sub != nil && fs.Lookup(sub[1]) == nil {
			t.Errorf("%s: the comment %q: gitmesh serve has no flag --%s", depObj.File, c, sub[1])
		}
	}

	// The Services: each selects the pods and targets a port of the
	// container; together they reach xDS and the API.
	reached := map[int32]bool{}
	for _, o := range m.all("Service") {
		svc := o.Obj.(*corev1.Service)
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		if len(svc.Spec.Selector) == 0 || !sel.Matches(podLabels) {
			t.Errorf("%s: selector %v does not select the pods (%s)", o, svc.Spec.Selector, podLabels)
		}
		if len(svc.Spec.Ports) == 0 {
			t.Errorf("%s: no ports", o)
		}
		for _, p := range svc.Spec.Ports {
			target := p.TargetPort
			if target.Type == intstr.Int && target.IntVal == 0 {
				target = intstr.FromInt32(p.Port)
			}
			cp, ok := kubePortOf(*gm, target)
			if !ok {
				t.Errorf("%s: port %s targets %s, which is no port of the container %s", o, p.Name, target.String(), gm.Name)
				continue
			}
			if p.Port != cp.ContainerPort {
				t.Errorf("%s: port %s is %d for the container's %d: clients expect gitmesh's own ports", o, p.Name, p.Port, cp.ContainerPort)
			}
			if p.Protocol != "" && p.Protocol != cp.Protocol && !(cp.Protocol == "" && p.Protocol == corev1.ProtocolTCP) {
				t.Errorf("%s: port %s is %s, the container's %s", o, p.Name, p.Protocol, cp.Protocol)
			}
			reached[cp.ContainerPort] = true
		}
	}
	for _, name := range []string{"xds", "api"} {
		if p := ports[name]; !reached[p.ContainerPort] {
			t.Errorf("no Service reaches the %s port %d", name, p.ContainerPort)
		}
	}

	// The example Secrets: placeholders a control plane does not start
	// on, each with the command that makes the real one.
	for _, name := range slices.Sorted(maps.Keys(m.Secrets)) {
		want := "kubectl -n " + ns.Name + " create secret generic " + name + " "
		if !slices.ContainsFunc(m.Comments[kubeSecrets], func(c string) bool { return strings.HasPrefix(c, want) }) {
			t.Errorf("%s: no comment says how to create the Secret %s (%s...)", kubeSecrets, name, want)
		}
	}
	if sf := flags["store-file"]; sf != "" {
		if s, k, err := kubeSecretFile(spec, *gm, sf); err == nil && m.Secrets[s] != nil {
			if v := kubeSecretKeys(m.Secrets[s])[k]; !store.IsPostgresURL(strings.TrimSpace(v)) {
				t.Errorf("%s: the Secret %s's %s %q is no postgres:// URL", kubeSecrets, s, k, v)
			}
		}
	}
	if kf := flags["store-key-file"]; kf != "" {
		if s, k, err := kubeSecretFile(spec, *gm, kf); err == nil && m.Secrets[s] != nil {
			file := filepath.Join(t.TempDir(), "key")
			if err := os.WriteFile(file, []byte(kubeSecretKeys(m.Secrets[s])[k]), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := store.ReadKeyFile(file); err == nil {
				t.Errorf("%s: the Secret %s's %s is a usable key: a control plane would start on a key anyone can read here", kubeSecrets, s, k)
			}
		}
	}
}

// TestKubernetesKustomization checks kustomization.yaml: a Kustomization
// of the manifests' namespace whose resources are every manifest of the
// directory but the example Secrets, which apply -k must not put back over
// the real ones.
func TestKubernetesKustomization(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(kubeDir, kubeKustomization))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Namespace  string   `json:"namespace"`
		Resources  []string `json:"resources"`
	}
	if err := kubeDecodeStrict(string(src), &k); err != nil {
		t.Fatalf("%s: %v", kubeKustomization, err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("%s: %s %s; want kustomize.config.k8s.io/v1beta1 Kustomization", kubeKustomization, k.APIVersion, k.Kind)
	}
	m := readKubeManifests(t)
	if ns := m.only(t, "Namespace"); k.Namespace != ns.Meta.Name {
		t.Errorf("%s: namespace %q; want %q, the Namespace of %s", kubeKustomization, k.Namespace, ns.Meta.Name, ns.File)
	}
	listed := map[string]bool{}
	for _, r := range k.Resources {
		if listed[r] {
			t.Errorf("%s: %s listed twice", kubeKustomization, r)
		}
		listed[r] = true
		if fi, err := os.Stat(filepath.Join(kubeDir, filepath.FromSlash(r))); err != nil || !fi.Mode().IsRegular() {
			t.Errorf("%s: resource %s: no such file in %s", kubeKustomization, r, kubeDir)
		}
	}
	for _, f := range m.Files {
		switch {
		case f == kubeKustomization:
		case f == kubeSecrets && listed[f]:
			t.Errorf("%s lists %s: kubectl apply -k would put its placeholders over the real Secrets", kubeKustomization, f)
		case f != kubeSecrets && !listed[f]:
			t.Errorf("%s does not list %s", kubeKustomization, f)
		}
	}
}

// TestKubernetesStrictDecoding makes sure the decoding of the manifests is
// strict: a misspelt field, a field at the wrong level, a key given twice
// and a malformed quantity are errors, as the API server's strict field
// validation makes them, here without a cluster.
func TestKubernetesStrictDecoding(t *testing.T) {
	for name, doc := range map[string]string{
		"misspelt":    "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replica: 3\n",
		"wrong level": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      readOnlyRootFilesystem: true\n",
		"twice":       "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  selector: {a: b}\n  selector: {c: d}\n",
		"bad value":   "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      containers: [{name: c, resources: {limits: {memory: 1GB-ish}}}]\n",
	} {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatal(err)
		}
		if err := kubeDecodeStrict(doc, kubeKinds[tm.APIVersion+"/"+tm.Kind]()); err == nil {
			t.Errorf("%s: decoded without an error:\n%s", name, doc)
		}
	}
	docs, lines := kubeDocs("# a\n---\napiVersion: v1\n--- \n# only a comment\n---\nkind: x\n")
	if len(docs) != 2 || !slices.Equal(lines, []int{3, 7}) {
		t.Errorf("kubeDocs: %q at lines %v; want two documents at lines 3 and 7", docs, lines)
	}
}
