// Package helm holds the Helm chart of ddpm (deploy/helm/ddpm) and its
// test, which renders and lints the chart with Helm run as a Go program
// ("go run helm.sh/helm/v3/cmd/helm@v3.22.0"), so no cluster and no
// installed helm are needed.
package helm

import (
	"bytes"
	"context"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// helmModule is the Helm the chart is checked with.
const helmModule = "helm.sh/helm/v3/cmd/helm@v3.22.0"

// helm runs Helm with args in this directory and returns its output.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", append([]string{"run", helmModule}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// needHelm skips the test when Helm cannot be built or run at all (no
// module proxy and no cache): a reason that is not the chart's.
func needHelm(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds Helm with go run; skipped with -short")
	}
	if out, err := helm(t, "version", "--short"); err != nil {
		t.Skipf("cannot run Helm as a Go program (offline?): %v\n%s", err, out)
	}
}

// manifest is one rendered document.
type manifest struct {
	kind, name, text string
}

var (
	kindRE = regexp.MustCompile(`(?m)^kind: (\S+)$`)
	nameRE = regexp.MustCompile(`(?m)^metadata:\n  name: (\S+)$`)
)

// split cuts helm template's output into its documents.
func split(out string) []manifest {
	var ms []manifest
	for _, doc := range strings.Split(out, "\n---\n") {
		k, n := kindRE.FindStringSubmatch(doc), nameRE.FindStringSubmatch(doc)
		if k == nil || n == nil {
			continue
		}
		ms = append(ms, manifest{kind: k[1], name: n[1], text: doc})
	}
	return ms
}

func find(ms []manifest, kind, name string) *manifest {
	for i := range ms {
		if ms[i].kind == kind && ms[i].name == name {
			return &ms[i]
		}
	}
	return nil
}

func count(ms []manifest, kind string) int {
	n := 0
	for _, m := range ms {
		if m.kind == kind {
			n++
		}
	}
	return n
}

// has fails the test unless m's text contains every want.
func has(t *testing.T, m *manifest, wants ...string) {
	t.Helper()
	if m == nil {
		t.Errorf("manifest missing (wanted %q)", wants)
		return
	}
	for _, w := range wants {
		if !strings.Contains(m.text, w) {
			t.Errorf("%s %s lacks %q", m.kind, m.name, w)
		}
	}
}

func hasNot(t *testing.T, m *manifest, nots ...string) {
	t.Helper()
	for _, n := range nots {
		if m != nil && strings.Contains(m.text, n) {
			t.Errorf("%s %s has %q", m.kind, m.name, n)
		}
	}
}

func TestChart(t *testing.T) {
	needHelm(t)
	const chart = "ddpm"
	t.Run("lint", func(t *testing.T) {
		for _, set := range []string{"apiKey.value=k", "redis.url=rediss://:pw@redis.example:6380/0,worker.autoscaling.keda.enabled=true,worker.gpu=0"} {
			if out, err := helm(t, "lint", "--strict", chart, "--set", set); err != nil {
				t.Errorf("helm lint --set %s: %v\n%s", set, err, out)
			}
		}
	})
	t.Run("defaults", func(t *testing.T) {
		out, err := helm(t, "template", "rel", chart, "--set", "apiKey.value=k")
		if err != nil {
			t.Fatalf("helm template: %v\n%s", err, out)
		}
		ms := split(out)
		for kind, want := range map[string]int{"Deployment": 3, "Service": 3, "PodDisruptionBudget": 2, "Secret": 2,
			"HorizontalPodAutoscaler": 0, "ScaledObject": 0} {
			if got := count(ms, kind); got != want {
				t.Errorf("%d %s, want %d", got, kind, want)
			}
		}
		probes := []string{"livenessProbe:\n            httpGet: {path: /healthz, port: http}",
			"readinessProbe:\n            httpGet: {path: /readyz, port: http}"}
		secrets := []string{"name: DDPM_API_KEY\n              valueFrom:\n                secretKeyRef:\n                  name: rel-ddpm-api-key",
			"name: DDPM_REDIS_URL\n              valueFrom:\n                secretKeyRef:\n                  name: rel-ddpm-redis-url"}
		api := find(ms, "Deployment", "rel-ddpm-api")
		has(t, api, append(append([]string{"- --role=api", "replicas: 2", "runAsNonRoot: true", "readOnlyRootFilesystem: true"}, probes...), secrets...)...)
		hasNot(t, api, "nvidia.com/gpu")
		worker := find(ms, "Deployment", "rel-ddpm-worker")
		has(t, worker, append(append([]string{"- --role=worker", "- --device=cuda", "nvidia.com/gpu: 1", "startupProbe:",
			"key: nvidia.com/gpu", "terminationGracePeriodSeconds: 60"}, probes...), secrets...)...)
		has(t, find(ms, "Secret", "rel-ddpm-redis-url"), `redis-url: "redis://rel-ddpm-redis:6379/0"`)
		has(t, find(ms, "Service", "rel-ddpm-api"), "port: 80", "targetPort: http")
		has(t, find(ms, "Deployment", "rel-ddpm-redis"), "image: redis:7.2-alpine")
		has(t, find(ms, "PodDisruptionBudget", "rel-ddpm-api"), "minAvailable: 1")
		has(t, find(ms, "PodDisruptionBudget", "rel-ddpm-worker"), "maxUnavailable: 1")
	})
	t.Run("external redis, keda, model volume, cpu workers", func(t *testing.T) {
		out, err := helm(t, "template", "rel", chart, "--set", strings.Join([]string{
			"redis.url=rediss://:pw@redis.example:6380/0", "apiKey.existingSecret=my-keys", "apiKey.existingSecretKey=ddpm",
			"worker.autoscaling.keda.enabled=true", "worker.autoscaling.keda.address=redis.example:6380",
			"worker.autoscaling.keda.enableTLS=true", "worker.gpu=0", "worker.device=cpu",
			"model.path=/models/cifar10", "model.volume.persistentVolumeClaim.claimName=models", "api.autoscaling.enabled=true",
			"worker.nodeSelector.pool=gpu"}, ","))
		if err != nil {
			t.Fatalf("helm template: %v\n%s", err, out)
		}
		ms := split(out)
		if find(ms, "Deployment", "rel-ddpm-redis") != nil || count(ms, "Secret") != 1 {
			t.Errorf("an external Redis and an existing key secret still render the internal Redis or the key Secret")
		}
		has(t, find(ms, "Secret", "rel-ddpm-redis-url"), `redis-url: "rediss://:pw@redis.example:6380/0"`)
		worker := find(ms, "Deployment", "rel-ddpm-worker")
		has(t, worker, "- --model=/models/cifar10", "mountPath: /models", "claimName: models", "readOnly: true",
			"name: my-keys\n                  key: ddpm", "- --device=cpu", "pool: gpu")
		hasNot(t, worker, "nvidia.com/gpu: ", "\n  replicas:")
		has(t, find(ms, "ScaledObject", "rel-ddpm-worker"), "type: redis-streams", `stream: "ddpm:queue"`, "consumerGroup: workers",
			`address: "redis.example:6380"`, `enableTLS: "true"`, `streamLength: "16"`)
		has(t, find(ms, "HorizontalPodAutoscaler", "rel-ddpm-api"), "averageUtilization: 70")
		hasNot(t, find(ms, "Deployment", "rel-ddpm-api"), "\n  replicas:")
	})
	t.Run("refusals", func(t *testing.T) {
		for _, tc := range []struct{ set, want string }{
			{"worker.autoscaling.keda.enabled=true,worker.autoscaling.hpa.enabled=true", "enable keda or hpa, not both"},
			{"redis.internal.enabled=false", "set redis.url, redis.existingSecret, or redis.internal.enabled=true"},
		} {
			out, err := helm(t, "template", "rel", chart, "--set", tc.set)
			if err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("--set %s: err %v, output lacks %q:\n%.500s", tc.set, err, tc.want, out)
			}
		}
	})
	t.Run("worker hpa on the queue length", func(t *testing.T) {
		out, err := helm(t, "template", "rel", chart, "--set", "worker.autoscaling.hpa.enabled=true")
		if err != nil {
			t.Fatalf("helm template: %v\n%s", err, out)
		}
		has(t, find(split(out), "HorizontalPodAutoscaler", "rel-ddpm-worker"), "type: External", "name: ddpm_cluster_queue_length",
			`averageValue: "16"`)
	})
}
