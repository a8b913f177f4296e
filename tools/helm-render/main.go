// helm-render: an offline stand-in for `helm template`, used by
// deploy/verify.sh where no helm binary can be installed.
//
// It implements the part of Helm 3 that a chart's templates see: Go
// text/template with the sprig function library plus Helm's own functions
// (include, tpl, required, fail, toYaml, fromYaml, fromYamlArray, toJson,
// fromJson, lookup returning an empty map), the .Values / .Release / .Chart /
// .Capabilities / .Files / .Template objects, values.yaml coalesced with -f
// files and --set flags, Chart.yaml's kubeVersion constraint, and NOTES.txt.
// Numbers in values files are float64, as in Helm (so a template that forgets
// `| int64` prints 1e+06 here too). --strict makes a missing map key an error
// (helm lint --strict).
//
// Build (Debian: golang-go golang-github-masterminds-sprig-dev
// golang-k8s-sigs-yaml-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o bin/helm-render .
//
// Usage:
//
//	helm-render [--strict] [--notes] [-n NS] [--name RELEASE] [--kube-version v1.30.0]
//	            [--api-versions monitoring.coreos.com/v1] [-f values.yaml]... [--set k=v]... CHART
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/Masterminds/semver"
	"github.com/Masterminds/sprig"
	"sigs.k8s.io/yaml"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// Files is .Files: every chart file outside templates/ and the chart's own
// metadata, keyed by its slash-separated path relative to the chart.
type Files map[string][]byte

func (f Files) Get(name string) string      { return string(f[name]) }
func (f Files) GetBytes(name string) []byte { return f[name] }
func (f Files) Glob(pattern string) Files {
	out := Files{}
	for k, v := range f {
		if ok, _ := path.Match(pattern, k); ok {
			out[k] = v
		}
	}
	return out
}
func (f Files) Lines(name string) []string {
	s := strings.TrimSuffix(string(f[name]), "\n")
	if s == "" {
		return []string{}
	}
	return strings.Split(s, "\n")
}

// AsConfig renders the files as the data: block of a ConfigMap (base names).
func (f Files) AsConfig() string {
	m := map[string]string{}
	for k, v := range f {
		m[path.Base(k)] = string(v)
	}
	b, err := yaml.Marshal(m)
	if err != nil || len(m) == 0 {
		return ""
	}
	return strings.TrimSuffix(string(b), "\n")
}

type Capabilities struct {
	KubeVersion KubeVersion
	APIVersions APIVersions
	HelmVersion map[string]string
}
type KubeVersion struct{ Version, Major, Minor, GitVersion string }

func (k KubeVersion) String() string { return k.Version }

type APIVersions []string

func (a APIVersions) Has(v string) bool {
	for _, x := range a {
		if x == v {
			return true
		}
	}
	return false
}

// builtin API versions of a plain cluster; --api-versions adds CRD groups.
var defaultAPIVersions = []string{
	"v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v1", "autoscaling/v2",
	"networking.k8s.io/v1", "rbac.authorization.k8s.io/v1",
	"v1/Service", "apps/v1/Deployment", "policy/v1/PodDisruptionBudget",
	"autoscaling/v2/HorizontalPodAutoscaler", "networking.k8s.io/v1/Ingress",
	"networking.k8s.io/v1/NetworkPolicy",
}

func main() {
	var valueFiles, sets, setStrings, apiVersions multiFlag
	name := flag.String("name", "rt", "release name")
	ns := flag.String("n", "default", "release namespace")
	kube := flag.String("kube-version", "v1.30.0", "Kubernetes version reported by .Capabilities")
	strict := flag.Bool("strict", false, "a missing map key is an error (helm lint --strict)")
	notes := flag.Bool("notes", false, "also print NOTES.txt")
	valuesOut := flag.String("values-out", "", "write the coalesced values as JSON to this file")
	flag.Var(&valueFiles, "f", "values file (repeatable)")
	flag.Var(&sets, "set", "key=value (repeatable)")
	flag.Var(&setStrings, "set-string", "key=value, value kept a string (repeatable)")
	flag.Var(&apiVersions, "api-versions", "extra API version for .Capabilities.APIVersions (repeatable)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: helm-render [flags] CHART")
		os.Exit(2)
	}
	out, err := render(flag.Arg(0), *name, *ns, *kube, *strict, *notes, *valuesOut, valueFiles, sets, setStrings, append(APIVersions(defaultAPIVersions), apiVersions...))
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
	os.Stdout.WriteString(out)
}

func readYAMLMap(file string) (map[string]interface{}, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	m := map[string]interface{}{}
	if err := yaml.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if m == nil {
		m = map[string]interface{}{}
	}
	return m, nil
}

// coalesce merges src over dst (Helm: user values over chart defaults; a
// null in src deletes the key).
func coalesce(dst, src map[string]interface{}) map[string]interface{} {
	for k, v := range src {
		if v == nil {
			delete(dst, k)
			continue
		}
		sm, sok := v.(map[string]interface{})
		dm, dok := dst[k].(map[string]interface{})
		if sok && dok {
			dst[k] = coalesce(dm, sm)
		} else {
			dst[k] = v
		}
	}
	return dst
}

// setValue applies one --set assignment: a.b[0].c=v, v typed like Helm's
// strvals (int64, bool, null, {a,b} list) unless asString.
func setValue(vals map[string]interface{}, assignment string, asString bool) error {
	i := strings.Index(assignment, "=")
	if i < 0 {
		return fmt.Errorf("--set %q: no '='", assignment)
	}
	key, raw := assignment[:i], assignment[i+1:]
	var val interface{} = raw
	if !asString {
		val = typed(raw)
		if strings.HasPrefix(raw, "{") && strings.HasSuffix(raw, "}") {
			list := []interface{}{}
			if inner := raw[1 : len(raw)-1]; inner != "" {
				for _, p := range strings.Split(inner, ",") {
					list = append(list, typed(p))
				}
			}
			val = list
		}
	}
	var cur interface{} = vals
	parts := strings.Split(key, ".")
	for n, p := range parts {
		idx := -1
		if j := strings.Index(p, "["); j >= 0 && strings.HasSuffix(p, "]") {
			x, err := strconv.Atoi(p[j+1 : len(p)-1])
			if err != nil {
				return fmt.Errorf("--set %q: bad index", assignment)
			}
			idx, p = x, p[:j]
		}
		m, ok := cur.(map[string]interface{})
		if !ok {
			return fmt.Errorf("--set %q: %s is not a map", assignment, p)
		}
		last := n == len(parts)-1
		if idx < 0 {
			if last {
				if val == nil {
					delete(m, p)
				} else {
					m[p] = val
				}
				return nil
			}
			if _, ok := m[p].(map[string]interface{}); !ok {
				m[p] = map[string]interface{}{}
			}
			cur = m[p]
			continue
		}
		list, _ := m[p].([]interface{})
		for len(list) <= idx {
			list = append(list, nil)
		}
		if last {
			list[idx] = val
			m[p] = list
			return nil
		}
		if _, ok := list[idx].(map[string]interface{}); !ok {
			list[idx] = map[string]interface{}{}
		}
		m[p] = list
		cur = list[idx]
	}
	return nil
}

func typed(s string) interface{} {
	switch s {
	case "true":
		return true
	case "false":
		return false
	case "null":
		return nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && (s == "0" || !strings.HasPrefix(s, "0")) {
		return n
	}
	return s
}

// chartMeta maps Chart.yaml keys to the field names Helm's *chart.Metadata
// exposes to templates (.Chart.Name, .Chart.AppVersion, ...).
func chartMeta(raw map[string]interface{}) map[string]interface{} {
	special := map[string]string{"apiVersion": "APIVersion", "appVersion": "AppVersion", "kubeVersion": "KubeVersion"}
	out := map[string]interface{}{}
	for _, f := range []string{"Name", "Home", "Sources", "Version", "Description", "Keywords", "Maintainers", "Icon", "APIVersion", "Condition", "Tags", "AppVersion", "Deprecated", "Annotations", "KubeVersion", "Dependencies", "Type"} {
		out[f] = ""
	}
	for k, v := range raw {
		f, ok := special[k]
		if !ok {
			f = strings.ToUpper(k[:1]) + k[1:]
		}
		out[f] = v
	}
	return out
}

func toYAML(v interface{}) string {
	b, err := yaml.Marshal(v)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(b), "\n")
}

func render(chartDir, name, ns, kube string, strict, withNotes bool, valuesOut string, valueFiles, sets, setStrings []string, apiVersions APIVersions) (string, error) {
	chartRaw, err := readYAMLMap(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		return "", err
	}
	chart := chartMeta(chartRaw)
	chartName, _ := chart["Name"].(string)
	if chartName == "" {
		return "", errors.New("Chart.yaml: name is required")
	}
	kv, err := semver.NewVersion(kube)
	if err != nil {
		return "", fmt.Errorf("--kube-version: %w", err)
	}
	if c, _ := chart["KubeVersion"].(string); c != "" {
		con, err := semver.NewConstraint(c)
		if err != nil {
			return "", fmt.Errorf("Chart.yaml kubeVersion: %w", err)
		}
		if !con.Check(kv) {
			return "", fmt.Errorf("chart requires kubeVersion: %s which is incompatible with Kubernetes %s", c, kube)
		}
	}

	vals, err := readYAMLMap(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		return "", err
	}
	for _, f := range valueFiles {
		user, err := readYAMLMap(f)
		if err != nil {
			return "", err
		}
		vals = coalesce(vals, user)
	}
	for _, s := range sets {
		if err := setValue(vals, s, false); err != nil {
			return "", err
		}
	}
	for _, s := range setStrings {
		if err := setValue(vals, s, true); err != nil {
			return "", err
		}
	}
	// Round-trip through JSON so that --set ints and file floats look alike
	// to the templates (float64), as Helm's coalesced values do.
	jb, err := json.Marshal(vals)
	if err != nil {
		return "", err
	}
	vals = map[string]interface{}{}
	if err := json.Unmarshal(jb, &vals); err != nil {
		return "", err
	}
	if valuesOut != "" {
		if err := os.WriteFile(valuesOut, jb, 0o644); err != nil {
			return "", err
		}
	}

	files := Files{}
	var templates []string
	err = filepath.Walk(chartDir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(chartDir, p)
		rel = filepath.ToSlash(rel)
		if info.IsDir() {
			if rel == "charts" {
				return filepath.SkipDir
			}
			return nil
		}
		if info.Mode()&os.ModeSymlink != 0 {
			if st, err := os.Stat(p); err == nil && st.IsDir() {
				return nil // read by addSymlinkedDirs
			}
		}
		switch {
		case strings.HasPrefix(rel, "templates/"):
			templates = append(templates, rel)
		case rel == "Chart.yaml", rel == "values.yaml", rel == "values.schema.json", rel == ".helmignore":
		default:
			b, err := os.ReadFile(p) // follows symlinks, as Helm's loader does
			if err != nil {
				return err
			}
			files[rel] = b
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	// filepath.Walk does not descend into symlinked directories: do it here.
	if err := addSymlinkedDirs(chartDir, files); err != nil {
		return "", err
	}
	sort.Strings(templates)

	root := template.New("gotpl")
	if strict {
		root.Option("missingkey=error")
	} else {
		root.Option("missingkey=zero")
	}
	funcs := sprig.TxtFuncMap()
	delete(funcs, "env")
	delete(funcs, "expandenv")
	includeDepth := map[string]int{}
	funcs["toYaml"] = toYAML
	funcs["toJson"] = func(v interface{}) string { b, _ := json.Marshal(v); return string(b) }
	funcs["fromJson"] = func(s string) map[string]interface{} {
		m := map[string]interface{}{}
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	funcs["fromYaml"] = func(s string) map[string]interface{} {
		m := map[string]interface{}{}
		if err := yaml.Unmarshal([]byte(s), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	funcs["fromYamlArray"] = func(s string) []interface{} {
		a := []interface{}{}
		if err := yaml.Unmarshal([]byte(s), &a); err != nil {
			a = []interface{}{err.Error()}
		}
		return a
	}
	funcs["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil {
			return nil, errors.New(msg)
		}
		if s, ok := v.(string); ok && s == "" {
			return nil, errors.New(msg)
		}
		return v, nil
	}
	funcs["fail"] = func(msg string) (string, error) { return "", errors.New(msg) }
	funcs["lookup"] = func(apiVersion, kind, namespace, name string) (map[string]interface{}, error) {
		return map[string]interface{}{}, nil
	}
	funcs["include"] = func(name string, data interface{}) (string, error) {
		includeDepth[name]++
		defer func() { includeDepth[name]-- }()
		if includeDepth[name] > 1000 {
			return "", fmt.Errorf("rendering template has a nested reference name: %s", name)
		}
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, name, data); err != nil {
			return "", err
		}
		return buf.String(), nil
	}
	funcs["tpl"] = func(text string, data interface{}) (string, error) {
		t, err := root.Clone()
		if err != nil {
			return "", err
		}
		t, err = t.New("tpl").Parse(text)
		if err != nil {
			return "", fmt.Errorf("cannot parse template %q: %w", text, err)
		}
		var buf bytes.Buffer
		if err := t.Execute(&buf, data); err != nil {
			return "", fmt.Errorf("error during tpl function execution for %q: %w", text, err)
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
	root.Funcs(funcs)
	for _, rel := range templates {
		b, err := os.ReadFile(filepath.Join(chartDir, rel))
		if err != nil {
			return "", err
		}
		if _, err := root.New(chartName + "/" + rel).Parse(string(b)); err != nil {
			return "", err
		}
	}

	caps := Capabilities{
		KubeVersion: KubeVersion{Version: "v" + kv.String(), Major: strconv.FormatUint(kv.Major(), 10), Minor: strconv.FormatUint(kv.Minor(), 10), GitVersion: "v" + kv.String()},
		APIVersions: apiVersions,
		HelmVersion: map[string]string{"Version": "v3.15.0"},
	}
	release := map[string]interface{}{"Name": name, "Namespace": ns, "Revision": 1, "IsInstall": true, "IsUpgrade": false, "Service": "Helm"}

	var out strings.Builder
	var notes string
	for _, rel := range templates {
		base := path.Base(rel)
		isNotes := rel == "templates/NOTES.txt"
		if strings.HasPrefix(base, "_") || (!isNotes && !strings.HasSuffix(base, ".yaml") && !strings.HasSuffix(base, ".yml") && !strings.HasSuffix(base, ".tpl")) {
			continue
		}
		if strings.HasSuffix(base, ".tpl") {
			continue
		}
		tname := chartName + "/" + rel
		data := map[string]interface{}{
			"Values": vals, "Release": release, "Chart": chart, "Capabilities": caps, "Files": files,
			"Template": map[string]interface{}{"Name": tname, "BasePath": chartName + "/templates"},
		}
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, tname, data); err != nil {
			return "", err
		}
		text := strings.ReplaceAll(buf.String(), "<no value>", "")
		if isNotes {
			notes = text
			continue
		}
		for _, doc := range splitDocs(text) {
			out.WriteString("---\n# Source: " + tname + "\n" + doc + "\n")
		}
	}
	if withNotes {
		out.WriteString("\nNOTES:\n" + notes + "\n")
	}
	return out.String(), nil
}

// splitDocs cuts a rendered file at its `---` lines and drops documents that
// hold nothing but whitespace and comments (Helm does not send those).
func splitDocs(text string) []string {
	var docs []string
	var cur []string
	flush := func() {
		content := false
		for _, l := range cur {
			t := strings.TrimSpace(l)
			if t != "" && !strings.HasPrefix(t, "#") {
				content = true
				break
			}
		}
		if content {
			docs = append(docs, strings.TrimRight(strings.Join(cur, "\n"), "\n \t"))
		}
		cur = nil
	}
	for _, l := range strings.Split(text, "\n") {
		if strings.TrimRight(l, " \t") == "---" {
			flush()
			continue
		}
		cur = append(cur, l)
	}
	flush()
	return docs
}

func addSymlinkedDirs(chartDir string, files Files) error {
	return filepath.Walk(chartDir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.Mode()&os.ModeSymlink == 0 {
			return nil
		}
		st, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("dangling symlink %s: %w", p, err)
		}
		if !st.IsDir() {
			return nil
		}
		return filepath.Walk(p+string(os.PathSeparator), func(q string, qi os.FileInfo, err error) error {
			if err != nil || qi.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(chartDir, q)
			b, err := os.ReadFile(q)
			if err != nil {
				return err
			}
			files[filepath.ToSlash(rel)] = b
			return nil
		})
	})
}
