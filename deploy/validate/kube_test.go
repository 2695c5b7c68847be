package validate

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
)

// strictCodecs decode with client-go's scheme and fail on unknown or
// duplicated fields, as `kubectl apply --validate=strict` does.
var strictCodecs = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict)

// decodeManifests decodes every YAML document of a file into its typed
// Kubernetes object.
func decodeManifests(name string, b []byte) ([]runtime.Object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var out []runtime.Object
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, i, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, _, err := strictCodecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, i, err)
		}
		out = append(out, obj)
	}
}

func stripComments(doc []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

func loadManifests(t *testing.T) []runtime.Object {
	t.Helper()
	files, err := filepath.Glob(repoPath("deploy", "kubernetes", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in deploy/kubernetes: %v", err)
	}
	var objs []runtime.Object
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		o, err := decodeManifests(filepath.Base(f), b)
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, o...)
	}
	return objs
}

// workload is a Deployment or StatefulSet seen as what it runs.
type workload struct {
	kind, name string
	replicas   int32
	selector   *metav1.LabelSelector
	pods       []labels.Set // the labels of each pod it runs
	spec       corev1.PodSpec
	claims     []string // StatefulSet volume claim templates
}

func (w workload) String() string { return w.kind + "/" + w.name }

func workloads(objs []runtime.Object) []workload {
	var out []workload
	for _, o := range objs {
		switch o := o.(type) {
		case *appsv1.Deployment:
			out = append(out, workload{kind: "Deployment", name: o.Name, replicas: ptrOr(o.Spec.Replicas, 1), selector: o.Spec.Selector,
				pods: []labels.Set{o.Spec.Template.Labels}, spec: o.Spec.Template.Spec})
		case *appsv1.StatefulSet:
			w := workload{kind: "StatefulSet", name: o.Name, replicas: ptrOr(o.Spec.Replicas, 1), selector: o.Spec.Selector, spec: o.Spec.Template.Spec}
			// The controller adds each pod's name as a label.
			for i := range w.replicas {
				l := labels.Merge(o.Spec.Template.Labels, labels.Set{"statefulset.kubernetes.io/pod-name": fmt.Sprintf("%s-%d", o.Name, i)})
				w.pods = append(w.pods, l)
			}
			for _, c := range o.Spec.VolumeClaimTemplates {
				w.claims = append(w.claims, c.Name)
			}
			out = append(out, w)
		}
	}
	return out
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// selected returns the workloads with a pod that sel selects, and how many
// of their pods it selects.
func selected(ws []workload, sel labels.Selector) (out []workload, pods int) {
	for _, w := range ws {
		n := 0
		for _, p := range w.pods {
			if sel.Matches(p) {
				n++
			}
		}
		if n > 0 {
			out = append(out, w)
			pods += n
		}
	}
	return out, pods
}

func hasPort(spec corev1.PodSpec, port intstr.IntOrString) bool {
	for _, c := range spec.Containers {
		for _, p := range c.Ports {
			if (port.Type == intstr.String && p.Name == port.StrVal) || (port.Type == intstr.Int && p.ContainerPort == port.IntVal) {
				return true
			}
		}
	}
	return false
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// checkManifests checks what the API server does not: that the objects
// refer to each other correctly, and that vigil is configured as it runs.
func checkManifests(objs []runtime.Object) []error {
	var errs []error
	fail := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	ws := workloads(objs)
	services := map[string]*corev1.Service{}
	configs := map[string]map[string]string{} // "ConfigMap/name" → data
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.Service:
			services[o.Name] = o
		case *corev1.ConfigMap:
			configs["ConfigMap/"+o.Name] = o.Data
		case *corev1.Secret:
			configs["Secret/"+o.Name] = o.StringData
		}
	}

	for _, w := range ws {
		sel, err := metav1.LabelSelectorAsSelector(w.selector)
		if err != nil || sel.Empty() || !sel.Matches(w.pods[0]) {
			fail("%s: selector %v does not select its own pods (%v)", w, w.selector, err)
		}
		volumes := slices.Clone(w.claims)
		for _, v := range w.spec.Volumes {
			volumes = append(volumes, v.Name)
		}
		for _, c := range w.spec.Containers {
			probes := map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe}
			wantPath := map[string]string{"liveness": "/healthz", "readiness": "/readyz", "startup": "/healthz"}
			for kind, p := range probes {
				switch {
				case p == nil || p.HTTPGet == nil:
					fail("%s: container %s has no HTTP %s probe", w, c.Name, kind)
				case p.HTTPGet.Path != wantPath[kind]:
					fail("%s: %s probe on %s, want %s", w, kind, p.HTTPGet.Path, wantPath[kind])
				case !hasPort(w.spec, p.HTTPGet.Port):
					fail("%s: %s probe port %s is no container port", w, kind, p.HTTPGet.Port.String())
				}
			}
			for _, m := range c.VolumeMounts {
				if !slices.Contains(volumes, m.Name) {
					fail("%s: mount %s names no volume or claim template", w, m.Name)
				}
			}
			// Variables the container sees, in order: envFrom, then env; a
			// $(VAR) expands only from those defined before it.
			defined := map[string]bool{}
			var names []string
			for _, ef := range c.EnvFrom {
				key := ""
				switch {
				case ef.ConfigMapRef != nil:
					key = "ConfigMap/" + ef.ConfigMapRef.Name
				case ef.SecretRef != nil:
					key = "Secret/" + ef.SecretRef.Name
				}
				data, ok := configs[key]
				if !ok {
					fail("%s: envFrom %s is not in the manifests", w, key)
				}
				for k := range data {
					defined[k] = true
					names = append(names, k)
				}
			}
			for _, e := range c.Env {
				for _, m := range envRef.FindAllStringSubmatch(e.Value, -1) {
					if !defined[m[1]] {
						fail("%s: %s uses $(%s) before it is defined", w, e.Name, m[1])
					}
				}
				defined[e.Name] = true
				names = append(names, e.Name)
			}
			for _, n := range names {
				if strings.HasPrefix(n, "VIGIL_") && !documentedEnvNames[n] {
					fail("%s sets %s, which docs/config.md does not list", w, n)
				}
			}
		}
	}

	for _, s := range services {
		if len(s.Spec.Selector) == 0 {
			fail("Service %s has no selector", s.Name)
			continue
		}
		matched, _ := selected(ws, labels.SelectorFromSet(s.Spec.Selector))
		if len(matched) == 0 {
			fail("Service %s selects no pod (selector %v)", s.Name, s.Spec.Selector)
		}
		for _, w := range matched {
			for _, p := range s.Spec.Ports {
				target := p.TargetPort
				if target.Type == intstr.Int && target.IntVal == 0 {
					target = intstr.FromInt32(p.Port)
				}
				if !hasPort(w.spec, target) {
					fail("Service %s port %s targets %s, which %s does not expose", s.Name, p.Name, target.String(), w)
				}
			}
		}
	}

	for _, o := range objs {
		switch o := o.(type) {
		case *appsv1.StatefulSet:
			svc := services[o.Spec.ServiceName]
			if svc == nil || svc.Spec.ClusterIP != corev1.ClusterIPNone {
				fail("StatefulSet %s: serviceName %q is no headless Service", o.Name, o.Spec.ServiceName)
			} else if m, _ := selected(ws, labels.SelectorFromSet(svc.Spec.Selector)); !slices.ContainsFunc(m, func(w workload) bool { return w.name == o.Name }) {
				fail("StatefulSet %s: its Service %s does not select its pods", o.Name, svc.Name)
			}
		case *autoscalingv2.HorizontalPodAutoscaler:
			ref := o.Spec.ScaleTargetRef
			if !slices.ContainsFunc(ws, func(w workload) bool { return w.kind == ref.Kind && w.name == ref.Name && ref.APIVersion == "apps/v1" }) {
				fail("HorizontalPodAutoscaler %s targets %s/%s (%s), which is not in the manifests", o.Name, ref.Kind, ref.Name, ref.APIVersion)
			}
			if min := ptrOr(o.Spec.MinReplicas, 1); min < 1 || min > o.Spec.MaxReplicas {
				fail("HorizontalPodAutoscaler %s: min %d, max %d", o.Name, min, o.Spec.MaxReplicas)
			}
		case *policyv1.PodDisruptionBudget:
			sel, err := metav1.LabelSelectorAsSelector(o.Spec.Selector)
			if err != nil {
				fail("PodDisruptionBudget %s: %v", o.Name, err)
				continue
			}
			matched, pods := selected(ws, sel)
			if len(matched) != 1 {
				fail("PodDisruptionBudget %s selects %d workloads, want 1", o.Name, len(matched))
				continue
			}
			if m := o.Spec.MinAvailable; m != nil && m.Type == intstr.Int && int(m.IntVal) >= pods {
				fail("PodDisruptionBudget %s: minAvailable %d of %d pods blocks every disruption", o.Name, m.IntVal, pods)
			}
		}
	}
	return errs
}

// documentedEnvNames is docs/config.md's variables, set by TestKubernetes.
var documentedEnvNames map[string]bool

func containerEnv(spec corev1.PodSpec) map[string]string {
	out := map[string]string{}
	for _, e := range spec.Containers[0].Env {
		out[e.Name] = e.Value
	}
	return out
}

func TestKubernetes(t *testing.T) {
	documentedEnvNames = documentedEnv(t)
	objs := loadManifests(t)
	for _, err := range checkManifests(objs) {
		t.Error(err)
	}

	// What vigil needs of the two workloads.
	var meter *appsv1.StatefulSet
	var ingest *appsv1.Deployment
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[fmt.Sprintf("%T", o)]++
		switch o := o.(type) {
		case *appsv1.StatefulSet:
			meter = o
		case *appsv1.Deployment:
			ingest = o
		}
	}
	for _, k := range []string{"*v1.StatefulSet", "*v1.Deployment", "*v2.HorizontalPodAutoscaler", "*v1.PodDisruptionBudget", "*v1.Service", "*v1.ConfigMap", "*v1.Secret"} {
		if kinds[k] == 0 {
			t.Errorf("no %s in deploy/kubernetes", k)
		}
	}
	if meter == nil || ingest == nil {
		t.Fatal("want a meter StatefulSet and an ingest Deployment")
	}
	replicas := ptrOr(meter.Spec.Replicas, 1)
	if replicas != 3 && replicas != 5 {
		t.Errorf("meter voters: %d, want 3 or 5", replicas)
	}
	if len(meter.Spec.VolumeClaimTemplates) == 0 {
		t.Error("the meter StatefulSet has no persistent volume claim")
	}
	// After a full stop pod 0 alone has no quorum: pods must start together.
	if meter.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("meter podManagementPolicy %q, want Parallel", meter.Spec.PodManagementPolicy)
	}
	menv := containerEnv(meter.Spec.Template.Spec)
	if menv["VIGIL_ROLES"] != "meter" || menv["VIGIL_NODE_ID"] != "$(POD_NAME)" {
		t.Errorf("meter env: roles %q, node id %q", menv["VIGIL_ROLES"], menv["VIGIL_NODE_ID"])
	}
	// Pods 1.. join through pod 0, which bootstraps.
	c := meter.Spec.Template.Spec.Containers[0]
	peer := func(i int) string { return fmt.Sprintf("%s-%d.%s:8080", meter.Name, i, meter.Spec.ServiceName) }
	withState := t.TempDir()
	if err := os.MkdirAll(filepath.Join(withState, "meter", "raft"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		pod      int
		data, up string // VIGIL_DATA, the voter that answers
		want     string // VIGIL_JOIN|args
	}{
		{0, t.TempDir(), "", "|serve"},                         // a new cluster: bootstrap
		{0, t.TempDir(), "-2.", peer(2) + "|serve"},            // lost its volume: join
		{0, withState, "-1.", "|serve"},                        // a restart on its own state
		{1, t.TempDir(), "", peer(0) + "|serve"},               // the others join pod 0
		{int(replicas) - 1, withState, "", peer(0) + "|serve"}, // (ignored with state)
	} {
		pod := fmt.Sprintf("%s-%d", meter.Name, tc.pod)
		if got := runStartScript(t, c, pod, tc.data, tc.up); got != tc.want {
			t.Errorf("pod %s (data %s, %q answering) starts `vigil` with VIGIL_JOIN|args %q, want %q", pod, tc.data, tc.up, got, tc.want)
		}
	}
	// Each voter advertises its raft address through a Service of its own,
	// named as the pod, whose IP outlives the pod's.
	if menv["VIGIL_RAFT_ADVERTISE"] != "$(POD_NAME).$(POD_NAMESPACE).svc:8300" {
		t.Errorf("meter VIGIL_RAFT_ADVERTISE %q", menv["VIGIL_RAFT_ADVERTISE"])
	}
	for i := range replicas {
		name := fmt.Sprintf("%s-%d", meter.Name, i)
		found := false
		for _, o := range objs {
			if s, ok := o.(*corev1.Service); ok && s.Name == name {
				found = s.Spec.Selector["statefulset.kubernetes.io/pod-name"] == name &&
					slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == 8300 })
			}
		}
		if !found {
			t.Errorf("no Service %s selecting pod %s on raft port 8300", name, name)
		}
	}
	ienv := containerEnv(ingest.Spec.Template.Spec)
	if ienv["VIGIL_ROLES"] != "ingest" || ienv["VIGIL_JOIN"] != meter.Spec.ServiceName+":8080" {
		t.Errorf("ingest env: roles %q, join %q (want the meter Service %s:8080)", ienv["VIGIL_ROLES"], ienv["VIGIL_JOIN"], meter.Spec.ServiceName)
	}
}

// The checks bite: a strict decode refuses an unknown field, and broken
// references are found.
func TestKubernetesChecksCatchMistakes(t *testing.T) {
	documentedEnvNames = documentedEnv(t)
	b := readFile(t, "deploy", "kubernetes", "ingest.yaml")
	bad := strings.Replace(string(b), "  replicas: 2\n", "  replicas: 2\n  replicaz: 3\n", 1)
	if _, err := decodeManifests("ingest.yaml", []byte(bad)); err == nil || !strings.Contains(err.Error(), "replicaz") {
		t.Errorf("an unknown field: %v, want an error naming it", err)
	}

	cases := map[string]struct {
		break_ func(objs []runtime.Object)
		want   string
	}{
		"service selector": {func(objs []runtime.Object) {
			for _, o := range objs {
				if s, ok := o.(*corev1.Service); ok && s.Name == "vigil-ingest" {
					s.Spec.Selector["app.kubernetes.io/component"] = "ingets"
				}
			}
		}, "Service vigil-ingest selects no pod"},
		"hpa target": {func(objs []runtime.Object) {
			for _, o := range objs {
				if h, ok := o.(*autoscalingv2.HorizontalPodAutoscaler); ok {
					h.Spec.ScaleTargetRef.Name = "vigil"
				}
			}
		}, "HorizontalPodAutoscaler vigil-ingest targets Deployment/vigil"},
		"probe port": {func(objs []runtime.Object) {
			for _, o := range objs {
				if d, ok := o.(*appsv1.Deployment); ok {
					d.Spec.Template.Spec.Containers[0].ReadinessProbe.HTTPGet.Port = intstr.FromString("htp")
				}
			}
		}, "readiness probe port htp is no container port"},
		"pdb": {func(objs []runtime.Object) {
			for _, o := range objs {
				if p, ok := o.(*policyv1.PodDisruptionBudget); ok && p.Name == "vigil-meter" {
					p.Spec.MinAvailable = ptr(intstr.FromInt32(3))
				}
			}
		}, "minAvailable 3 of 3 pods"},
		"env order": {func(objs []runtime.Object) {
			for _, o := range objs {
				if d, ok := o.(*appsv1.Deployment); ok {
					env := d.Spec.Template.Spec.Containers[0].Env
					d.Spec.Template.Spec.Containers[0].Env = append(env[1:], env[0]) // POD_NAME last
				}
			}
		}, "uses $(POD_NAME) before it is defined"},
		"unknown variable": {func(objs []runtime.Object) {
			for _, o := range objs {
				if c, ok := o.(*corev1.ConfigMap); ok {
					c.Data["VIGIL_S3_ENDPOINTS"] = "x"
				}
			}
		}, "VIGIL_S3_ENDPOINTS, which docs/config.md does not list"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			objs := loadManifests(t)
			c.break_(objs)
			var msgs []string
			for _, err := range checkManifests(objs) {
				msgs = append(msgs, err.Error())
			}
			if !slices.ContainsFunc(msgs, func(m string) bool { return strings.Contains(m, c.want) }) {
				t.Errorf("want an error containing %q, got %q", c.want, msgs)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// runStartScript runs the container's command as pod would, with a vigil
// on PATH that prints VIGIL_JOIN and its arguments, and returns that. Its
// curl answers only for URLs that contain up (no request leaves the test).
func runStartScript(t *testing.T, c corev1.Container, pod, data, up string) string {
	t.Helper()
	sh := requireBinary(t, "sh")
	dir := t.TempDir()
	stubs := map[string]string{
		"vigil": "#!/bin/sh\nprintf '%s|%s' \"$VIGIL_JOIN\" \"$*\"\n",
		"curl":  "#!/bin/sh\n[ -n \"$UP\" ] && case \"$*\" in *\"$UP\"*) exit 0;; esac\nexit 7\n",
	}
	for name, stub := range stubs {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(stub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if len(c.Command) < 2 || c.Command[0] != "/bin/sh" {
		t.Fatalf("container %s: command %q is not /bin/sh -c", c.Name, c.Command)
	}
	cmd := exec.Command(sh, append(c.Command[1:], c.Args...)...)
	cmd.Env = []string{"PATH=" + dir + ":/usr/bin:/bin", "POD_NAME=" + pod, "VIGIL_DATA=" + data, "UP=" + up}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("start script of %s: %v\n%s", pod, err, out)
	}
	return string(out)
}
