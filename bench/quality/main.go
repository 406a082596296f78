// Command quality measures sample quality against the number of sampling
// steps for every solver (issue 9): for each (sampler, steps) it samples
// n class-conditional digits with a model (the embedded default by
// default; classes cycle 0..9, image i from seed+i), then scores them with
// package quality against MNIST's test split: how often the MNIST
// classifier reads the asked class, and the Fréchet distance on its
// features with the real-digit floor at the same count. It prints a
// markdown table and writes JSON and two plots.
//
//	go run ./bench/quality -n 1000 -steps 5,10,20,50 -out bench/quality/results
//
// Each row costs n*steps model evaluations (twice with guidance): on the
// 2-core development machine about 0.3 ms per image and step for the
// default model.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/data"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/img/plot"
	"github.com/ddpm-go/ddpm/pipeline"
	"github.com/ddpm-go/ddpm/quality"
	"github.com/ddpm-go/ddpm/quality/mnistclf"
)

// row is one measured configuration.
type row struct {
	Sampler  string  `json:"sampler"`
	Steps    int     `json:"steps"`
	Guidance float64 `json:"guidance,omitempty"`
	// ClassifierScale is the classifier guidance scale of a -classifier
	// row, where the model sees its null class and the classifier alone
	// steers towards the asked class.
	ClassifierScale *float64 `json:"classifier_scale,omitempty"`
	N               int      `json:"n"`
	Accuracy        float64  `json:"accuracy"`
	FD              float64  `json:"frechet_distance"`
	Floor           float64  `json:"floor"`
	Seconds         float64  `json:"seconds"`
}

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "quality:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("quality", flag.ContinueOnError)
	model := fs.String("model", "", "model source (default: the embedded model)")
	n := fs.Int("n", 1000, "digits per configuration (a multiple of 10)")
	stepsFlag := fs.String("steps", "5,10,20,50", "step counts, comma-separated")
	samplers := fs.String("samplers", "all", `"all" or a comma-separated list of sampler names`)
	full := fs.Bool("ddpm-full", true, "also DDPM over all of the model's timesteps")
	guidance := fs.String("guidance", "", "classifier-free guidance scales to add, comma-separated (rows of -guidance-sampler)")
	guidanceSampler := fs.String("guidance-sampler", "ddim", "sampler of the -guidance rows")
	batch := fs.Int("batch", 100, "images per sampling call")
	seed := fs.Uint64("seed", 1, "seed of image 0")
	out := fs.String("out", "", "folder for results.json and the plots (none when empty)")
	clfPath := fs.String("classifier", "", "noisy classifier (ddpm train-classifier checkpoint): add classifier-guidance rows,\nthe model given its null class (or unconditional) and the classifier steering")
	clfScales := fs.String("classifier-scales", "0,1,3,10", "classifier guidance scales")
	clfSampler := fs.String("classifier-sampler", "ddpm", "sampler of the classifier-guidance rows")
	clfSteps := fs.Int("classifier-steps", 50, "steps of the classifier-guidance rows")
	only := fs.Bool("classifier-only", false, "only the classifier-guidance rows")
	precision := fs.String("precision", "fp32", "CPU arithmetic: fp32, or bf16 (convolutions in bf16; needs AVX512_BF16 or AMX)")
	merge := fs.Bool("merge", false, "with -out: keep the rows of -out's results.json that this run does not measure again")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *n < 10 || *n%10 != 0 {
		return fmt.Errorf("-n %d: must be a positive multiple of 10", *n)
	}
	var steps []int
	for _, s := range strings.Split(*stepsFlag, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || v < 1 {
			return fmt.Errorf("-steps: %q is not a positive integer", s)
		}
		steps = append(steps, v)
	}
	names := diffusion.SamplerNames()
	if *samplers != "all" {
		names = strings.Split(*samplers, ",")
	}
	p, err := pipeline.Open(ctx, *model, pipeline.Options{Device: "cpu", GPU: cuda.Options{Precision: *precision}})
	if err != nil {
		return err
	}
	defer p.Close()
	clf, err := mnistclf.Pretrained()
	if err != nil {
		return err
	}
	ref, err := data.MNIST(data.Options{Split: data.Test, Size: p.Config.SampleSize, Resize: data.ResizePad})
	if err != nil {
		return err
	}
	train, err := data.MNIST(data.Options{Split: data.Train, Size: p.Config.SampleSize, Resize: data.ResizePad})
	if err != nil {
		return err
	}
	var guide *pipeline.Classifier
	if *clfPath != "" {
		if guide, err = pipeline.OpenClassifier(ctx, *clfPath, pipeline.Options{Device: "cpu"}); err != nil {
			return err
		}
		defer guide.Close()
		if err := guide.Check(p); err != nil {
			return err
		}
	}
	measure := func(sampler string, st int, g float64, cscale *float64) (row, error) {
		sm, err := diffusion.ParseSampler(sampler)
		if err != nil {
			return row{}, err
		}
		start := time.Now()
		all := diffusion.Batch{C: 1, H: p.Config.SampleSize, W: p.Config.SampleSize}
		labels := make([]int, 0, *n)
		for lo := 0; lo < *n; lo += *batch {
			k := min(*batch, *n-lo)
			o := diffusion.Options{Sampler: sm, Steps: st, Guidance: g, N: k, C: all.C, H: all.H, W: all.W}
			for i := lo; i < lo+k; i++ {
				o.Seeds = append(o.Seeds, *seed+uint64(i))
				o.Labels = append(o.Labels, i%10)
			}
			target := o.Labels
			if cscale != nil {
				o.Classifier = guide.Guidance(*cscale, target)
				o.Labels = nil
				if p.Config.NullClass != nil {
					o.Labels = make([]int, k)
					for i := range o.Labels {
						o.Labels[i] = -1
					}
				}
			}
			b, err := p.Diffusion.Sample(ctx, p.Model, o)
			if err != nil {
				return row{}, fmt.Errorf("%s, %d steps: %w", sampler, st, err)
			}
			for i, v := range b.Data { // as the PNGs a user scores: clamped to [-1, 1]
				b.Data[i] = max(-1, min(1, v))
			}
			all.N += k
			all.Data = append(all.Data, b.Data...)
			labels = append(labels, target...)
		}
		sc, err := quality.ScoreDigits(ctx, clf, all, labels, ref, "mnist test", train, *seed)
		if err != nil {
			return row{}, err
		}
		return row{Sampler: sampler, Steps: st, Guidance: g, ClassifierScale: cscale, N: *n, Accuracy: sc.Accuracy, FD: sc.FD, Floor: sc.Floor,
			Seconds: time.Since(start).Seconds()}, nil
	}
	var rows []row
	emit := func(r row) {
		rows = append(rows, r)
		g := fmt.Sprint(r.Guidance)
		if r.ClassifierScale != nil {
			g = fmt.Sprintf("classifier %g (null class)", *r.ClassifierScale)
		}
		fmt.Fprintf(stdout, "| %s | %d | %s | %.1f%% | %.2f | %.2f | %.2f | %.0f |\n", r.Sampler, r.Steps, g, 100*r.Accuracy, r.FD, r.Floor, r.FD/r.Floor, r.Seconds)
	}
	fmt.Fprintf(stdout, "model %s on %s; %d digits per row, classes 0-9 cycling, image i from seed %d+i\n\n", p.Source.Path, p.Device, *n, *seed)
	fmt.Fprintln(stdout, "| sampler | steps | guidance | accuracy | Fréchet distance | floor | ratio | seconds |")
	fmt.Fprintln(stdout, "| --- | --- | --- | --- | --- | --- | --- | --- |")
	if guide != nil {
		for _, cs := range strings.Split(*clfScales, ",") {
			v, err := strconv.ParseFloat(strings.TrimSpace(cs), 64)
			if err != nil || v < 0 {
				return fmt.Errorf("-classifier-scales: %q is not a scale >= 0", cs)
			}
			r, err := measure(*clfSampler, *clfSteps, 0, &v)
			if err != nil {
				return err
			}
			emit(r)
		}
	}
	if *only {
		names, *full, *guidance = nil, false, ""
	}
	for _, name := range names {
		for _, st := range steps {
			r, err := measure(strings.TrimSpace(name), st, 0, nil)
			if err != nil {
				return err
			}
			emit(r)
		}
	}
	if *full {
		r, err := measure("ddpm", p.Diffusion.T(), 0, nil)
		if err != nil {
			return err
		}
		emit(r)
	}
	if *guidance != "" {
		for _, gs := range strings.Split(*guidance, ",") {
			g, err := strconv.ParseFloat(strings.TrimSpace(gs), 64)
			if err != nil {
				return fmt.Errorf("-guidance: %q: %w", gs, err)
			}
			for _, st := range steps {
				r, err := measure(*guidanceSampler, st, g, nil)
				if err != nil {
					return err
				}
				emit(r)
			}
		}
	}
	if *out == "" {
		return nil
	}
	if *merge {
		var old []row
		if b, err := os.ReadFile(filepath.Join(*out, "results.json")); err == nil {
			if err := json.Unmarshal(b, &old); err != nil {
				return fmt.Errorf("-merge: %w", err)
			}
		}
		same := func(a, b row) bool {
			return a.Sampler == b.Sampler && a.Steps == b.Steps && a.Guidance == b.Guidance && (a.ClassifierScale == nil) == (b.ClassifierScale == nil)
		}
		for i, o := range old {
			for _, r := range rows {
				if same(o, r) {
					old[i] = r
				}
			}
		}
		for _, r := range rows {
			if !slices.ContainsFunc(old, func(o row) bool { return same(o, r) }) {
				old = append(old, r)
			}
		}
		rows = old
	}
	return write(*out, rows)
}

// write saves the rows as JSON and plots accuracy and Fréchet distance
// against the steps, one line per (sampler, guidance).
func write(dir string, rows []row) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(rows, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "results.json"), b, 0o644); err != nil {
		return err
	}
	acc := plot.Chart{Title: "class accuracy against sampling steps", XLabel: "steps", YLabel: "accuracy", LogX: true}
	fd := plot.Chart{Title: "Frechet distance (MNIST-classifier features) against steps", XLabel: "steps", YLabel: "FD", LogX: true, LogY: true}
	idx := map[string]int{}
	for _, r := range rows {
		key := r.Sampler
		if r.Guidance != 0 {
			key = fmt.Sprintf("%s w=%g", r.Sampler, r.Guidance)
		}
		if r.ClassifierScale != nil {
			continue // a table row; the plots are against steps
		}
		i, ok := idx[key]
		if !ok {
			i = len(acc.Series)
			idx[key] = i
			acc.Series = append(acc.Series, plot.Series{Name: key, Dots: true})
			fd.Series = append(fd.Series, plot.Series{Name: key, Dots: true})
		}
		acc.Series[i].X, acc.Series[i].Y = append(acc.Series[i].X, float64(r.Steps)), append(acc.Series[i].Y, r.Accuracy)
		fd.Series[i].X, fd.Series[i].Y = append(fd.Series[i].X, float64(r.Steps)), append(fd.Series[i].Y, r.FD)
	}
	acc.Width, acc.Height, fd.Width, fd.Height = 900, 500, 900, 500
	if err := acc.WritePNG(filepath.Join(dir, "accuracy.png")); err != nil {
		return err
	}
	return fd.WritePNG(filepath.Join(dir, "frechet.png"))
}
