package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/schedule"
)

func TestScheduleJSON(t *testing.T) {
	var out, errw bytes.Buffer
	if err := run(context.Background(), []string{"schedule", "--schedule", "linear", "--timesteps", "1000", "--json"}, &out, &errw); err != nil {
		t.Fatal(err)
	}
	if strings.Count(strings.TrimSpace(out.String()), "\n") != 0 {
		t.Error("output is not one line / one object")
	}
	var m map[string][]float64
	if err := json.Unmarshal(out.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	s := schedule.MustNew(schedule.Spec{Kind: schedule.Linear, T: 1000})
	want := map[string][]float64{
		"betas": s.Betas, "alphas_cumprod": s.AlphasCumprod, "alphas_cumprod_prev": s.AlphasCumprodPrev,
		"posterior_variance": s.PosteriorVariance, "posterior_log_variance_clipped": s.PosteriorLogVarianceClipped,
		"posterior_mean_coef1": s.PosteriorMeanCoef1, "posterior_mean_coef2": s.PosteriorMeanCoef2,
	}
	if len(m) != len(want) {
		t.Errorf("keys %d, want %d", len(m), len(want))
	}
	for k, w := range want {
		g := m[k]
		if len(g) != 1000 {
			t.Fatalf("%s has %d entries", k, len(g))
		}
		for i := range w {
			if g[i] != w[i] { // full float64 precision round trip
				t.Fatalf("%s[%d] = %v, want %v exactly", k, i, g[i], w[i])
			}
		}
	}
	if math.Abs(m["alphas_cumprod"][999]-4.04e-5) > 1e-7 {
		t.Errorf("alphas_cumprod[999] = %v", m["alphas_cumprod"][999])
	}
}

func TestSchedulePNG(t *testing.T) {
	dir := t.TempDir()
	for _, k := range []string{"linear", "cosine", "scaled-linear", "sigmoid"} {
		path := filepath.Join(dir, k+".png")
		var out, errw bytes.Buffer
		if err := run(context.Background(), []string{"schedule", "--schedule", k, "--timesteps", "200", "--out", path, "--width", "400", "--height", "300"}, &out, &errw); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if b := img.Bounds(); b.Dx() != 400 || b.Dy() != 300 {
			t.Errorf("%s: size %v", k, b)
		}
		// Both curve colours must appear.
		blue, orange := 0, 0
		for y := 0; y < 300; y++ {
			for x := 0; x < 400; x++ {
				r, g, b, _ := img.At(x, y).RGBA()
				c := [3]uint32{r >> 8, g >> 8, b >> 8}
				if c == [3]uint32{31, 119, 180} {
					blue++
				}
				if c == [3]uint32{230, 110, 20} {
					orange++
				}
			}
		}
		if blue < 100 || orange < 100 {
			t.Errorf("%s: %d blue and %d orange pixels", k, blue, orange)
		}
	}
	// T = 1 plots too.
	if err := run(context.Background(), []string{"schedule", "--timesteps", "1", "--out", filepath.Join(dir, "one.png")}, &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
		t.Errorf("T=1: %v", err)
	}
}

func TestScheduleConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "scheduler_config.json")
	if err := os.WriteFile(path, []byte(`{"num_train_timesteps":3,"trained_betas":[0.1,0.2,0.3]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"schedule", "--config", path, "--json"}, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"betas":[0.1,0.2,0.3]`) {
		t.Errorf("output %s", out.String())
	}
}

func TestScheduleBadFlags(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--schedule", "quadratic", "--json"}, "allowed"},
		{[]string{"--timesteps", "0", "--json"}, "timesteps"},
		{[]string{"--timesteps", "abc"}, "timesteps"},
		{[]string{"--beta-end", "2", "--json"}, "beta"},
		{[]string{"--width", "10"}, "width"},
		{[]string{"--schedule", "custom"}, "config"},
		{[]string{"extra"}, "unexpected"},
		{[]string{"--config", "/nonexistent/x.json", "--json"}, "nonexistent"},
		{[]string{"--json", "--out", "x.png"}, "one or the other"},
		{[]string{"--config", "c.json", "--timesteps", "10", "--json"}, "drop --schedule"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			var errw bytes.Buffer
			err := run(context.Background(), append([]string{"schedule"}, c.args...), &bytes.Buffer{}, &errw)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want mention of %q", err, c.want)
			}
			if exitCode(err) == 0 {
				t.Error("exit code 0")
			}
		})
	}
	var u usageError
	err := run(context.Background(), []string{"schedule", "--timesteps", "-1", "--json"}, &bytes.Buffer{}, &bytes.Buffer{})
	if !errors.As(err, &u) || exitCode(err) != 2 {
		t.Errorf("bad T: %v (exit %d), want a usage error", err, exitCode(err))
	}
}
