// Command load is the load test of "ddpm serve": it starts the server on a
// loopback port, drives POST /v1/images/generations with hey at several
// concurrency levels, once with dynamic batching (--max-batch N) and once
// with batch size 1, and prints a Markdown table of images/s, p50/p99
// latency and the count of 5xx answers, plus the images/s of one direct
// batched Generate call (no HTTP, no queue) for the same model and
// settings. It exits non-zero when any answer was a 5xx.
//
// Usage (see run.sh, which builds the binary first):
//
//	go run ./bench/load -bin /tmp/ddpm [-model PATH | -fake] [-steps 10] [-max-batch 8] [-conc 1,8,32]
//
// Everything stays on 127.0.0.1, and every run is bounded by -requests and
// hey's per-request timeout.
//
// With -cluster it measures ddpm serve on Redis instead (cluster.go):
// redis-server, one api and 1 or 2 worker processes, driven by this
// program's own clients (hey is not needed), beside the in-memory process,
// and the per-job latency Redis adds:
//
//	go run ./bench/load -bin /tmp/ddpm -cluster -fake [-workers 1,2] [-cluster-requests 96] [-cluster-conc 24]
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/server"
)

type options struct {
	bin        string
	model      string
	fake       bool
	lab        bool
	fakeStep   time.Duration
	fakeImage  time.Duration
	steps      int
	sampler    string
	maxBatch   int
	conc       []int
	perClient  int
	minReq     int
	directReps int
	device     string
	cluster    bool
}

func main() {
	var o options
	var conc string
	flag.StringVar(&o.bin, "bin", "", "path of the ddpm binary (required)")
	flag.StringVar(&o.model, "model", "", "model path passed to ddpm serve (empty: the embedded default)")
	flag.BoolVar(&o.fake, "fake", false, "serve the TEST-ONLY fake generator instead of a model")
	flag.BoolVar(&o.lab, "lab", false, "serve the shared fixture UNet (unet.Load) in this process (no -bin needed)")
	flag.DurationVar(&o.fakeStep, "fake-step-delay", 10*time.Millisecond, "fake cost per batch step")
	flag.DurationVar(&o.fakeImage, "fake-image-delay", 2*time.Millisecond, "fake cost per image per step")
	flag.IntVar(&o.steps, "steps", 10, "denoising steps per request")
	flag.StringVar(&o.sampler, "sampler", "ddim", "sampler")
	flag.IntVar(&o.maxBatch, "max-batch", 8, "max batch of the batching run")
	flag.StringVar(&conc, "conc", "1,8,32", "concurrency levels")
	flag.IntVar(&o.perClient, "per-client", 4, "requests per concurrent client")
	flag.IntVar(&o.minReq, "min-requests", 16, "least requests per level")
	flag.IntVar(&o.directReps, "direct-reps", 3, "direct batched calls to time")
	flag.StringVar(&o.device, "device", "auto", "device passed to ddpm serve and the direct call")
	flag.BoolVar(&o.cluster, "cluster", false, "measure ddpm serve on Redis (api + workers) instead; needs redis-server, not hey")
	var co clusterOptions
	workers := flag.String("workers", "1,2", "with -cluster: worker counts to compare")
	flag.IntVar(&co.requests, "cluster-requests", 96, "with -cluster: requests per throughput run")
	flag.IntVar(&co.conc, "cluster-conc", 24, "with -cluster: concurrent clients of a throughput run")
	flag.IntVar(&co.seq, "seq", 200, "with -cluster: sequential requests of the per-job latency run")
	flag.DurationVar(&co.timeout, "request-timeout", 5*time.Minute, "with -cluster: per-request limit")
	flag.Parse()
	for _, f := range strings.Split(*workers, ",") {
		w, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || w < 1 || w > 8 {
			fatalf("-workers %q: want comma-separated counts from 1 to 8", *workers)
		}
		co.workers = append(co.workers, w)
	}
	if o.cluster {
		if o.bin == "" {
			fatalf("-cluster needs -bin (run.sh builds it)")
		}
		if err := runCluster(o, co); err != nil {
			fatalf("%v", err)
		}
		return
	}
	for _, f := range strings.Split(conc, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || c < 1 {
			fatalf("-conc %q: want comma-separated positive integers", conc)
		}
		o.conc = append(o.conc, c)
	}
	if o.bin == "" && !o.lab {
		fatalf("-bin is required (run.sh builds it)")
	}
	if _, err := exec.LookPath("hey"); err != nil {
		fatalf("hey is not installed (Debian: apt-get install hey)")
	}
	if err := run(o); err != nil {
		fatalf("%v", err)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "load: "+format+"\n", args...)
	os.Exit(1)
}

// result is one hey run.
type result struct {
	conc, requests int
	rps            float64
	p50, p99       float64 // seconds
	codes          map[int]int
	errors         int
	wall           float64
}

func run(o options) error {
	body := fmt.Sprintf(`{"steps":%d,"sampler":%q}`, o.steps, o.sampler)
	gen, closeGen, err := generator(o)
	if err != nil {
		return err
	}
	defer closeGen()
	direct, info, err := directBatch(o, gen)
	if err != nil {
		return fmt.Errorf("direct call: %w", err)
	}
	fmt.Printf("model %s on %s, %d steps %s, max batch %d\n\n", info.Name, info.Device, o.steps, o.sampler, o.maxBatch)
	modes := []struct {
		name  string
		batch int
	}{{fmt.Sprintf("dynamic batching (max %d)", o.maxBatch), o.maxBatch}, {"batch size 1", 1}}
	var rows []string
	bad := 0
	best := 0.0
	for _, m := range modes {
		var base string
		var stop func() error
		if o.lab {
			base, stop, err = startInProcess(gen, m.batch)
		} else {
			base, stop, err = startServer(o, m.batch)
		}
		if err != nil {
			return err
		}
		// Warm-up: one request, so that lazy initialisation is not timed.
		if _, err := hey(base, body, 1, 1); err != nil {
			stop()
			return err
		}
		for _, c := range o.conc {
			n := max(o.minReq, o.perClient*c)
			r, err := hey(base, body, n, c)
			if err != nil {
				stop()
				return err
			}
			five := 0
			var codes []string
			for code, k := range r.codes {
				if code >= 500 {
					five += k
				}
				codes = append(codes, fmt.Sprintf("%d x%d", code, k))
			}
			bad += five + r.errors
			if m.batch == o.maxBatch {
				best = max(best, r.rps)
			}
			rows = append(rows, fmt.Sprintf("| %s | %d | %d | %.2f | %.3f | %.3f | %d | %s |",
				m.name, c, n, r.rps, r.p50, r.p99, five+r.errors, strings.Join(codes, ", ")))
			fmt.Fprintf(os.Stderr, "  %s, %d clients: %.2f images/s\n", m.name, c, r.rps)
		}
		if err := stop(); err != nil {
			return fmt.Errorf("stopping the server: %w", err)
		}
	}
	fmt.Println("| server | clients | requests | images/s | p50 s | p99 s | 5xx+errors | codes |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, r := range rows {
		fmt.Println(r)
	}
	fmt.Printf("\ndirect Generate call, batch %d, no HTTP: %.2f images/s\n", o.maxBatch, direct)
	if labSample != nil && o.sampler == "ddim" {
		if v, err := labSample(o.maxBatch, o.steps, o.directReps); err == nil {
			fmt.Printf("plain diffusion.Sample of %d images (one seed per batch): %.2f images/s\n", o.maxBatch, v)
		}
	}
	fmt.Printf("best served images/s with batching / direct: %.2f (target >= 0.8)\n", best/direct)
	if bad > 0 {
		return fmt.Errorf("%d answers were 5xx or failed", bad)
	}
	return nil
}

// directBatch times o.directReps calls of Generate with o.maxBatch items.
func directBatch(o options, gen server.Generator) (float64, server.ModelInfo, error) {
	info := gen.Info()
	sm, err := diffusion.ParseSampler(o.sampler)
	if err != nil {
		return 0, info, err
	}
	set := server.Settings{Steps: o.steps, Sampler: sm, Guidance: info.DefaultGuidance}
	items := make([]server.Item, o.maxBatch)
	for i := range items {
		items[i] = server.Item{Seed: int64(i), Class: -1}
	}
	ctx := context.Background()
	if _, err := gen.Generate(ctx, set, items, nil); err != nil { // warm-up
		return 0, info, err
	}
	start := time.Now()
	for range o.directReps {
		if _, err := gen.Generate(ctx, set, items, nil); err != nil {
			return 0, info, err
		}
	}
	return float64(o.directReps*o.maxBatch) / time.Since(start).Seconds(), info, nil
}

// startServer runs ddpm serve on a free loopback port and returns its base
// URL and a function that stops it with SIGTERM and waits.
func startServer(o options, batch int) (string, func() error, error) {
	args := []string{"serve", "--addr", "127.0.0.1:0", "--max-batch", strconv.Itoa(batch), "--queue", "1024",
		"--timeout", "10m", "--max-steps", strconv.Itoa(max(o.steps, 1000))}
	if o.fake {
		args = append(args, "--test-fake-model", "--test-fake-step-delay", o.fakeStep.String(),
			"--test-fake-image-delay", o.fakeImage.String())
	} else {
		args = append(args, "--device", o.device)
		if o.model != "" {
			args = append(args, "--model", o.model)
		}
	}
	cmd := exec.Command(o.bin, args...)
	cmd.Stderr = io.Discard
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start %s: %w", o.bin, err)
	}
	sc := bufio.NewScanner(out)
	base := ""
	for sc.Scan() {
		if _, rest, ok := strings.Cut(sc.Text(), "listening on "); ok {
			base = strings.Fields(rest)[0]
			break
		}
	}
	if base == "" {
		cmd.Process.Kill()
		cmd.Wait()
		return "", nil, errors.New("the server printed no listening address (does --model load?)")
	}
	go io.Copy(io.Discard, out)
	stop := func() error {
		cmd.Process.Signal(syscall.SIGTERM)
		return cmd.Wait()
	}
	return base, stop, nil
}

// hey runs n POST requests with c clients. Latencies and status codes come
// from hey's CSV output (one row per answered request; failed requests have
// no row); images/s is the count of 200 answers over the wall time of the
// whole run.
func hey(base, body string, n, c int) (result, error) {
	cmd := exec.Command("hey", "-n", strconv.Itoa(n), "-c", strconv.Itoa(c), "-t", "600", "-m", "POST",
		"-T", "application/json", "-d", body, "-o", "csv", base+"/v1/images/generations")
	start := time.Now()
	outb, err := cmd.Output()
	wall := time.Since(start).Seconds()
	if err != nil {
		return result{}, fmt.Errorf("hey: %v\n%s", err, outb)
	}
	r := result{conc: c, requests: n, codes: map[int]int{}, wall: wall}
	var lat []float64
	for i, line := range strings.Split(strings.TrimSpace(string(outb)), "\n") {
		f := strings.Split(line, ",")
		if i == 0 || len(f) < 7 {
			continue
		}
		t, err1 := strconv.ParseFloat(f[0], 64)
		code, err2 := strconv.Atoi(f[6])
		if err1 != nil || err2 != nil {
			return r, fmt.Errorf("hey: bad CSV line %q", line)
		}
		lat = append(lat, t)
		r.codes[code]++
	}
	r.errors = n - len(lat)
	sort.Float64s(lat)
	r.p50, r.p99 = percentile(lat, 50), percentile(lat, 99)
	r.rps = float64(r.codes[200]) / wall
	return r, nil
}

// percentile is the nearest-rank p-th percentile of sorted xs.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	k := int(math.Ceil(p/100*float64(len(xs)))) - 1
	return xs[max(0, min(k, len(xs)-1))]
}
