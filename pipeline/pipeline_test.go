package pipeline

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/weights"
)

// fixture is the diffusers pipeline folder of cmd/ddpm's tests.
var fixture = filepath.Join("..", "cmd", "ddpm", "testdata", "diffusers-pipeline")

// TestOpenPipelineScheduler opens the fixture pipeline on the CPU: its
// DDPMScheduler config becomes Pipeline.Scheduler, and the diffusion
// process has its training schedule.
func TestOpenPipelineScheduler(t *testing.T) {
	p, err := Open(context.Background(), fixture, Options{Device: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Scheduler == nil || p.Scheduler.ClassName != diffusion.ClassDDPM || p.Scheduler.VarianceType == nil || *p.Scheduler.VarianceType != "fixed_small" {
		t.Fatalf("Scheduler = %+v, want the folder's DDPMScheduler (fixed_small)", p.Scheduler)
	}
	if p.Diffusion.T() != 1000 || p.Classes() != 10 {
		t.Errorf("T = %d, classes = %d; want 1000, 10", p.Diffusion.T(), p.Classes())
	}
	src, err := weights.OpenDefault()
	if err != nil {
		t.Fatal(err)
	}
	if sc, err := SchedulerFor(src); err != nil || (sc != nil) != (len(src.SchedulerConfig) > 0) {
		t.Errorf("embedded model: scheduler %+v, %v", sc, err)
	}
}

// TestSchedulerForEveryRun parses every fixture run's config (DPMSolver's
// -Infinity included) and builds the diffusion process from it.
func TestSchedulerForEveryRun(t *testing.T) {
	runs, err := filepath.Glob(filepath.Join(fixture, "runs", "*", "scheduler_config.json"))
	if err != nil || len(runs) < 12 {
		t.Fatalf("%d run configs: %v", len(runs), err)
	}
	for _, path := range runs {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		src := &weights.Source{Path: path, Model: weights.Model{SchedulerConfig: data}}
		sc, err := SchedulerFor(src)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		if _, err := diffusion.NewScheduler(*sc, 10); err != nil {
			t.Errorf("%s: %v", path, err)
		}
		d, err := DiffusionFor(src)
		if err != nil {
			t.Errorf("%s: DiffusionFor: %v", path, err)
			continue
		}
		if b := d.Schedule().Betas; d.T() != 1000 || b[0] != 1e-4 || b[999] != 0.02 {
			t.Errorf("%s: T %d, betas %v .. %v", path, d.T(), b[0], b[999])
		}
	}
	if sc, err := SchedulerFor(&weights.Source{}); sc != nil || err != nil {
		t.Errorf("no scheduler config: %+v, %v", sc, err)
	}
}

func TestSchedulerForErrors(t *testing.T) {
	for _, c := range []struct{ json, want string }{
		{`{"_class_name": "FancyScheduler"}`, "FancyScheduler"},
		{`{"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpm9"}`, "algorithm_type"},
		{`{"_class_name": "EulerDiscreteScheduler", "timestep_spacing": "middle"}`, "timestep_spacing"},
		{`{"_class_name": "DDIMScheduler", "beta_schedule": "quadratic"}`, "beta_schedule"},
		{`{"beta_start": 0.001}`, "_class_name"},
		{`not json`, "JSON"},
	} {
		src := &weights.Source{Path: "pipe", Model: weights.Model{SchedulerConfig: []byte(c.json)}}
		_, err := SchedulerFor(src)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "pipe") {
			t.Errorf("%s: err = %v, want one naming the model and %q", c.json, err, c.want)
		}
		if _, err := DiffusionFor(src); err == nil {
			t.Errorf("%s: DiffusionFor accepted it", c.json)
		}
	}
}
