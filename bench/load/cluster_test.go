package main

import (
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	xs := make([]time.Duration, 10)
	for i := range xs {
		xs[i] = time.Duration(i+1) * time.Millisecond
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5 * time.Millisecond}, {0.99, 10 * time.Millisecond}, {0.1, time.Millisecond}, {1, 10 * time.Millisecond}, {0, time.Millisecond}} {
		if got := quantile(xs, tc.q); got != tc.want {
			t.Errorf("q%v = %v, want %v", tc.q, got, tc.want)
		}
	}
	if quantile(nil, 0.5) != 0 {
		t.Error("empty")
	}
}

// TestClusterDrive runs a small cluster (redis-server, api, one worker of
// the fake generator) and drives it: every request succeeds.
func TestClusterDrive(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not installed (Debian: apt-get install -y redis-server)")
	}
	bin := filepath.Join(t.TempDir(), "ddpm")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/ddpm").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	o := options{bin: bin, fake: true, fakeStep: time.Millisecond, steps: 3, sampler: "ddim", maxBatch: 4}
	top, err := startCluster(o, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer top.stop()
	r := drive(top.base, `{"steps":3}`, 16, 4, 30*time.Second)
	if r.ok != 16 || r.failed != 0 || len(r.lat) != 16 || r.rps() <= 0 {
		t.Errorf("%d ok, %d failed, %.2f images/s", r.ok, r.failed, r.rps())
	}
}
