package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The cluster load test (-cluster): redis-server, one api and 1 or 2
// worker processes of ddpm serve on loopback, driven by this program's own
// HTTP clients (no hey needed). It prints the throughput of 1 worker
// against 2 workers, each beside the in-memory single process at the same
// load, and the latency Redis adds to one job (sequential requests, one
// denoising step, no generator delay).

// clusterOptions are the -cluster run's settings.
type clusterOptions struct {
	workers  []int         // worker counts to compare, e.g. 1,2
	requests int           // requests per throughput run
	conc     int           // concurrent clients of a throughput run
	seq      int           // sequential requests of the overhead run
	timeout  time.Duration // per request
}

// proc is a process this program started.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// startRedis runs redis-server without persistence on a free loopback port.
func startRedis() (string, *proc, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", nil, errors.New("redis-server is not installed (Debian: apt-get install redis-server)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir, err := os.MkdirTemp("", "ddpm-load-redis")
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--loglevel", "warning")
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start redis-server: %w", err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); os.RemoveAll(dir); close(p.done) }()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			c.Close()
			return "redis://" + addr + "/0", p, nil
		}
	}
	p.stop()
	return "", nil, errors.New("redis-server did not listen within 10 s")
}

// startServe runs ddpm serve with args and returns its base URL.
func startServe(o options, args ...string) (string, *proc, error) {
	args = append([]string{"serve", "--addr", "127.0.0.1:0", "--queue", "1024", "--timeout", "10m",
		"--max-steps", strconv.Itoa(max(o.steps, 1000)), "--max-batch", strconv.Itoa(o.maxBatch)}, args...)
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
	p := &proc{cmd: cmd, done: make(chan struct{})}
	base := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if _, rest, ok := strings.Cut(sc.Text(), "listening on "); ok {
				base <- strings.Fields(rest)[0]
			}
		}
	}()
	go func() { _ = cmd.Wait(); close(p.done) }()
	select {
	case b := <-base:
		return b, p, nil
	case <-p.done:
		return "", nil, fmt.Errorf("ddpm serve %v exited at start", args)
	case <-time.After(2 * time.Minute):
		p.stop()
		return "", nil, errors.New("ddpm serve printed no listening address in 2 minutes")
	}
}

// loadResult is one driven run.
type loadResult struct {
	ok, failed int
	wall       time.Duration
	lat        []time.Duration // of the 200 answers, sorted
}

func (r loadResult) rps() float64 { return float64(r.ok) / r.wall.Seconds() }

// quantile is the nearest-rank q-quantile (0..1) of sorted xs.
func quantile(xs []time.Duration, q float64) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	k := int(float64(len(xs))*q+0.999999) - 1
	return xs[max(0, min(k, len(xs)-1))]
}

// drive sends n POST /v1/images/generations with body from c clients.
func drive(base, body string, n, c int, timeout time.Duration) loadResult {
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{MaxIdleConnsPerHost: c}}
	next := make(chan struct{}, n)
	for range n {
		next <- struct{}{}
	}
	close(next)
	var mu sync.Mutex
	var r loadResult
	var wg sync.WaitGroup
	start := time.Now()
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				t0 := time.Now()
				ok := post(client, base, body)
				d := time.Since(t0)
				mu.Lock()
				if ok {
					r.ok++
					r.lat = append(r.lat, d)
				} else {
					r.failed++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	r.wall = time.Since(start)
	sort.Slice(r.lat, func(i, j int) bool { return r.lat[i] < r.lat[j] })
	return r
}

func post(client *http.Client, base, body string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), client.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", base+"/v1/images/generations", strings.NewReader(body))
	if err != nil {
		return false
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == http.StatusOK
}

// topology is a set of processes serving one base URL.
type topology struct {
	name  string
	base  string
	procs []*proc
}

func (t topology) stop() {
	for i := len(t.procs) - 1; i >= 0; i-- {
		t.procs[i].stop()
	}
}

// startCluster starts redis-server, one api and w workers.
func startCluster(o options, w int) (topology, error) {
	url, rp, err := startRedis()
	if err != nil {
		return topology{}, err
	}
	t := topology{name: fmt.Sprintf("api + %d worker(s)", w), procs: []*proc{rp}}
	common := []string{"--redis", url}
	for i := range w {
		_, p, err := startServe(o, append(common, "--role", "worker")...)
		if err != nil {
			t.stop()
			return topology{}, fmt.Errorf("worker %d: %w", i+1, err)
		}
		t.procs = append(t.procs, p)
	}
	base, p, err := startServe(o, append(common, "--role", "api")...)
	if err != nil {
		t.stop()
		return topology{}, fmt.Errorf("api: %w", err)
	}
	t.base, t.procs = base, append(t.procs, p)
	return t, nil
}

// startAllInOne starts redis-server and one --role all process.
func startAllInOne(o options) (topology, error) {
	url, rp, err := startRedis()
	if err != nil {
		return topology{}, err
	}
	base, p, err := startServe(o, "--redis", url, "--role", "all")
	if err != nil {
		rp.stop()
		return topology{}, err
	}
	return topology{name: "one process, --role all (Redis)", base: base, procs: []*proc{rp, p}}, nil
}

func startMemory(o options) (topology, error) {
	base, p, err := startServe(o)
	if err != nil {
		return topology{}, err
	}
	return topology{name: "one process, in memory", base: base, procs: []*proc{p}}, nil
}

// runCluster prints the cluster tables.
func runCluster(o options, co clusterOptions) error {
	body := fmt.Sprintf(`{"steps":%d,"sampler":%q}`, o.steps, o.sampler)
	what := "TEST-ONLY fake generator (sleeps: " + o.fakeStep.String() + " per step + " + o.fakeImage.String() + " per image per step)"
	if !o.fake {
		what = "model " + o.model + " on " + o.device
		if o.model == "" {
			what = "embedded model on " + o.device
		}
	}
	fmt.Printf("cluster load test: %s, %d steps %s, max batch %d, %d requests of n=1 from %d clients\n\n",
		what, o.steps, o.sampler, o.maxBatch, co.requests, co.conc)
	fmt.Println("| server | images/s | p50 s | p99 s | failed |")
	fmt.Println("| --- | --- | --- | --- | --- |")
	row := func(t topology, r loadResult) {
		fmt.Printf("| %s | %.2f | %.3f | %.3f | %d |\n", t.name, r.rps(), quantile(r.lat, 0.5).Seconds(), quantile(r.lat, 0.99).Seconds(), r.failed)
	}
	bad := 0
	starts := []func() (topology, error){func() (topology, error) { return startMemory(o) }}
	for _, w := range co.workers {
		starts = append(starts, func() (topology, error) { return startCluster(o, w) })
	}
	var rates []float64
	for _, start := range starts {
		t, err := start()
		if err != nil {
			return err
		}
		drive(t.base, body, 2, 2, co.timeout) // warm-up
		r := drive(t.base, body, co.requests, co.conc, co.timeout)
		t.stop()
		row(t, r)
		rates = append(rates, r.rps())
		bad += r.failed
	}
	if len(rates) >= 3 && rates[1] > 0 {
		fmt.Printf("\n%d workers / 1 worker: %.2fx\n", co.workers[len(co.workers)-1], rates[len(rates)-1]/rates[1])
	}

	// The latency Redis adds to one job: one step, no delay, one client.
	fmt.Printf("\nper-job latency, %d sequential requests, 1 step, no generator delay:\n\n", co.seq)
	fmt.Println("| server | p50 ms | p90 ms | mean ms | failed |")
	fmt.Println("| --- | --- | --- | --- | --- |")
	quick := o
	quick.fake, quick.fakeStep, quick.fakeImage = true, 0, 0
	seqBody := `{"steps":1,"sampler":"ddim"}`
	var p50s []time.Duration
	for _, start := range []func() (topology, error){
		func() (topology, error) { return startMemory(quick) },
		func() (topology, error) { return startAllInOne(quick) },
		func() (topology, error) { return startCluster(quick, 1) },
	} {
		t, err := start()
		if err != nil {
			return err
		}
		drive(t.base, seqBody, 5, 1, co.timeout)
		r := drive(t.base, seqBody, co.seq, 1, co.timeout)
		t.stop()
		var sum time.Duration
		for _, d := range r.lat {
			sum += d
		}
		mean := time.Duration(0)
		if len(r.lat) > 0 {
			mean = sum / time.Duration(len(r.lat))
		}
		fmt.Printf("| %s | %.2f | %.2f | %.2f | %d |\n", t.name, ms(quantile(r.lat, 0.5)), ms(quantile(r.lat, 0.9)), ms(mean), r.failed)
		p50s = append(p50s, quantile(r.lat, 0.5))
		bad += r.failed
	}
	fmt.Printf("\nRedis adds %.2f ms per job in one process (--role all) and %.2f ms with a separate api and worker (p50 over in-memory)\n",
		ms(p50s[1]-p50s[0]), ms(p50s[2]-p50s[0]))
	if bad > 0 {
		return fmt.Errorf("%d requests failed", bad)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
