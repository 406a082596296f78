package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"os"
	"strconv"

	"github.com/ddpm-go/ddpm/img/plot"
	"github.com/ddpm-go/ddpm/schedule"
)

// scheduleOptions are the flags of "ddpm schedule".
type scheduleOptions struct {
	Spec   schedule.Spec
	Config string // diffusers scheduler_config.json, overrides Spec
	JSON   bool
	Out    string
	Width  int
	Height int
}

const scheduleExamples = `  ddpm schedule --schedule linear --timesteps 1000 --json > linear.json
  ddpm schedule --schedule cosine --out cosine.png
  ddpm schedule --config scheduler_config.json --json`

func runSchedule(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o scheduleOptions
	fs := newFlagSet("schedule", "schedule [--schedule NAME] [--timesteps T] [--json | --out FILE.png]", scheduleExamples, stderr)
	kind := fs.String("schedule", "linear", "beta schedule: linear, cosine, scaled-linear, sigmoid")
	fs.IntVar(&o.Spec.T, "timesteps", 1000, "number of diffusion steps T (>= 1)")
	fs.Float64Var(&o.Spec.BetaStart, "beta-start", 0, "first beta (0 = the schedule's default; linear defaults scale with 1000/T)")
	fs.Float64Var(&o.Spec.BetaEnd, "beta-end", 0, "last beta (0 = the schedule's default)")
	fs.StringVar(&o.Config, "config", "", "read the schedule from a diffusers scheduler_config.json instead")
	fs.BoolVar(&o.JSON, "json", false, "print the tables as one JSON object instead of plotting")
	fs.StringVar(&o.Out, "out", "schedule.png", "PNG file for the plot of alphas_cumprod and log SNR")
	fs.IntVar(&o.Width, "width", 800, "plot width in pixels (200..8000)")
	fs.IntVar(&o.Height, "height", 500, "plot height in pixels (150..8000)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.JSON && (set["out"] || set["width"] || set["height"]) {
		return usageError{"schedule: --json prints the tables; --out, --width and --height are for the PNG plot: give one or the other"}
	}
	if o.Config != "" && (set["schedule"] || set["timesteps"] || set["beta-start"] || set["beta-end"]) {
		return usageError{"schedule: --config reads the whole schedule from the file: drop --schedule, --timesteps, --beta-start and --beta-end"}
	}
	k, err := schedule.ParseKind(*kind)
	if err != nil {
		return usageError{"schedule: --schedule: " + err.Error()}
	}
	if k == schedule.Custom {
		return usageError{"schedule: --schedule custom needs --config with trained_betas"}
	}
	o.Spec.Kind = k
	if o.Width < 200 || o.Width > 8000 || o.Height < 150 || o.Height > 8000 {
		return usageError{fmt.Sprintf("schedule: --width %d --height %d: allowed are 200..8000 and 150..8000", o.Width, o.Height)}
	}
	return scheduleRun(ctx, o, stdout, stderr)
}

func scheduleRun(ctx context.Context, o scheduleOptions, stdout, stderr io.Writer) error {
	spec := o.Spec
	if o.Config != "" {
		data, err := os.ReadFile(o.Config)
		if err != nil {
			return fmt.Errorf("schedule: %w", err)
		}
		c, err := schedule.ParseDiffusersConfig(data)
		if err != nil {
			return fmt.Errorf("schedule: %s: %w", o.Config, err)
		}
		if spec, err = c.Spec(); err != nil {
			return fmt.Errorf("schedule: %s: %w", o.Config, err)
		}
	}
	s, err := schedule.New(spec)
	if err != nil {
		return usageError{err.Error()}
	}
	if o.JSON {
		return writeScheduleJSON(stdout, s)
	}
	img := plotSchedule(s, fmt.Sprintf("%s schedule, T = %d", spec.Kind, s.T()), o.Width, o.Height)
	f, err := os.Create(o.Out)
	if err != nil {
		return fmt.Errorf("schedule: %w", err)
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return fmt.Errorf("schedule: write %s: %w", o.Out, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("schedule: write %s: %w", o.Out, err)
	}
	fmt.Fprintf(stderr, "wrote %s\n", o.Out)
	return nil
}

// writeScheduleJSON prints the tables as one JSON object; encoding/json
// writes the shortest decimal that round-trips each float64.
func writeScheduleJSON(w io.Writer, s *schedule.Schedule) error {
	v := struct {
		Betas                       []float64 `json:"betas"`
		AlphasCumprod               []float64 `json:"alphas_cumprod"`
		AlphasCumprodPrev           []float64 `json:"alphas_cumprod_prev"`
		PosteriorVariance           []float64 `json:"posterior_variance"`
		PosteriorLogVarianceClipped []float64 `json:"posterior_log_variance_clipped"`
		PosteriorMeanCoef1          []float64 `json:"posterior_mean_coef1"`
		PosteriorMeanCoef2          []float64 `json:"posterior_mean_coef2"`
	}{s.Betas, s.AlphasCumprod, s.AlphasCumprodPrev, s.PosteriorVariance, s.PosteriorLogVarianceClipped, s.PosteriorMeanCoef1, s.PosteriorMeanCoef2}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("schedule: %w", err)
	}
	b = append(b, '\n')
	_, err = w.Write(b)
	return err
}

// plotSchedule draws alphas_cumprod (left axis, 0..1) and log SNR (right
// axis) against t, with axes, ticks, grid, title and legend.
func plotSchedule(s *schedule.Schedule, title string, w, h int) *image.RGBA {
	cv := plot.NewCanvas(w, h)
	left, right, top, bottom := 70, w-70, 40, h-50
	T := s.T()
	snr := s.LogSNR()
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range snr {
		lo, hi = math.Min(lo, v), math.Max(hi, v)
	}
	lo, hi, step := plot.NiceRange(lo, hi)
	xMax := float64(max(T-1, 1))
	px := func(t float64) float64 { return float64(left) + t/xMax*float64(right-left) }
	pyL := func(v float64) float64 { return float64(bottom) - v*float64(bottom-top) }
	pyR := func(v float64) float64 { return float64(bottom) - (v-lo)/(hi-lo)*float64(bottom-top) }

	// Grid and ticks: left axis every 0.2, x axis at nice steps.
	for k := 0; k <= 5; k++ {
		y := int(math.Round(pyL(float64(k) / 5)))
		cv.HLine(left, right, y, plot.GridC)
		cv.Label(left-8, y+4, strconv.FormatFloat(float64(k)/5, 'f', 1, 64), plot.Blue, plot.AlignRight)
	}
	for v := lo; v <= hi+step/2; v += step {
		y := int(math.Round(pyR(v)))
		cv.HLine(right, right+5, y, plot.Ink)
		cv.Label(right+8, y+4, strconv.FormatFloat(v, 'g', 4, 64), plot.Orange, plot.AlignLeft)
	}
	_, _, xs := plot.NiceRange(0, xMax)
	for t := 0.0; t <= xMax+xs/2; t += xs {
		x := int(math.Round(px(t)))
		cv.VLine(x, top, bottom, plot.GridC)
		cv.VLine(x, bottom, bottom+5, plot.Ink)
		cv.Label(x, bottom+18, strconv.FormatFloat(t, 'f', -1, 64), plot.Ink, plot.AlignCenter)
	}
	cv.Box(left, top, right, bottom, plot.Ink)
	cv.Label((left+right)/2, h-12, "timestep t (0-indexed)", plot.Ink, plot.AlignCenter)
	cv.Label((left+right)/2, top-14, title, plot.Ink, plot.AlignCenter)
	cv.Label(8, top-14, "alphas_cumprod", plot.Blue, plot.AlignLeft)
	cv.Label(w-8, top-14, "log SNR", plot.Orange, plot.AlignRight)

	curve := func(f func(t int) (float64, float64), c color.RGBA) {
		for t := 1; t < T; t++ {
			x0, y0 := f(t - 1)
			x1, y1 := f(t)
			cv.Line(x0, y0, x1, y1, 1.3, c)
		}
		if T == 1 {
			x, y := f(0)
			cv.Line(x, y, x+1, y, 1.3, c)
		}
	}
	curve(func(t int) (float64, float64) { return px(float64(t)), pyL(s.AlphasCumprod[t]) }, plot.Blue)
	curve(func(t int) (float64, float64) { return px(float64(t)), pyR(snr[t]) }, plot.Orange)

	// Legend, top right inside the axes.
	lx, ly := right-200, top+12
	cv.Fill(image.Rect(lx-8, ly-8, right-10, ly+38), plot.White)
	for i, e := range []struct {
		name string
		c    color.RGBA
	}{{"alphas_cumprod (left)", plot.Blue}, {"log SNR (right)", plot.Orange}} {
		y := float64(ly + 6 + 20*i)
		cv.Line(float64(lx), y, float64(lx+22), y, 1.3, e.c)
		cv.Label(lx+28, int(y)+4, e.name, plot.Ink, plot.AlignLeft)
	}
	return cv.RGBA
}
