package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ddpm-go/ddpm/server/redistest"
	"github.com/redis/go-redis/v9"
)

// replica is one "ddpm serve" process of a cluster test.
type replica struct {
	name string
	base string // http://127.0.0.1:PORT
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
	err  error // Wait's result, after done
}

// syncBuffer collects a process's stderr for the test's failure messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startReplica runs "ddpm serve --addr 127.0.0.1:0 args..." and waits for
// its listening line (at most 60 s: a worker loads its model first). The
// process is killed when the test ends if it still runs.
func startReplica(t *testing.T, bin, name string, args ...string) *replica {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--addr", "127.0.0.1:0", "--drain-timeout", "5s"}, args...)...)
	r := &replica{name: name, cmd: cmd, log: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = r.log
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if _, rest, ok := strings.Cut(sc.Text(), "listening on "); ok {
				lines <- strings.Fields(rest)[0]
			}
		}
	}()
	go func() { r.err = cmd.Wait(); close(r.done) }()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			_ = cmd.Process.Kill()
			<-r.done
		}
	})
	select {
	case r.base = <-lines:
	case <-r.done:
		t.Fatalf("%s exited at start: %v\n%s", name, r.err, r.log)
	case <-time.After(60 * time.Second):
		t.Fatalf("%s printed no listening line in 60 s:\n%s", name, r.log)
	}
	return r
}

// stop sends SIGTERM and expects a clean exit within 20 s.
func (r *replica) stop(t *testing.T) {
	t.Helper()
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
		if r.err != nil {
			t.Errorf("%s: exit after SIGTERM: %v\n%s", r.name, r.err, r.log)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("%s did not stop 20 s after SIGTERM", r.name)
	}
}

// clusterClient talks to the replicas with bounded requests.
type clusterClient struct {
	t *testing.T
	c *http.Client
}

// call sends one request and returns the status and body.
func (cc clusterClient) call(method, url, body string) (int, []byte) {
	cc.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		cc.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := cc.c.Do(req)
	if err != nil {
		cc.t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// jobView is the part of a job status the tests read.
type jobView struct {
	ID    string `json:"id"`
	State string `json:"state"`
	Step  int    `json:"step"`
	Error *struct {
		Message string `json:"message"`
		Type    string `json:"type"`
	} `json:"error"`
	Result *struct {
		Data []struct {
			B64JSON string `json:"b64_json"`
			Seed    int64  `json:"seed"`
		} `json:"data"`
	} `json:"result"`
}

// await long-polls a job on base until it is final (at most limit).
func (cc clusterClient) await(base, id string, limit time.Duration) jobView {
	cc.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		code, b := cc.call("GET", base+"/v1/jobs/"+id+"?wait=5", "")
		var v jobView
		if code != 200 || json.Unmarshal(b, &v) != nil {
			cc.t.Fatalf("GET %s on %s: %d %.300s", id, base, code, b)
		}
		if v.State == "succeeded" || v.State == "failed" || v.State == "cancelled" {
			return v
		}
		if time.Now().After(deadline) {
			cc.t.Fatalf("job %s still %s after %v", id, v.State, limit)
		}
	}
}

// syncImages runs body through the api's OpenAI endpoint and returns the
// images' base64.
func (cc clusterClient) syncImages(base, body string) []string {
	cc.t.Helper()
	code, b := cc.call("POST", base+"/v1/images/generations", body)
	var r struct {
		Data []struct {
			B64JSON string `json:"b64_json"`
		} `json:"data"`
	}
	if code != 200 || json.Unmarshal(b, &r) != nil {
		cc.t.Fatalf("sync generation %s: %d %.300s", body, code, b)
	}
	out := make([]string, len(r.Data))
	for i, d := range r.Data {
		out[i] = d.B64JSON
	}
	return out
}

// killBusy waits until worker w (by pid, which its Redis owner id holds)
// holds at least minHeld of ids, one of them at step >= minStep, then
// kills it with SIGKILL. It returns the jobs the worker held.
func killBusy(t *testing.T, rdb *redis.Client, w *replica, ids []string, minHeld, minStep int) []string {
	t.Helper()
	ctx := context.Background()
	tag := fmt.Sprintf("-%d-", w.cmd.Process.Pid)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var held []string
		busy := false
		for _, id := range ids {
			h, err := rdb.HMGet(ctx, "ddpm:job:"+id, "state", "owner", "step").Result()
			if err != nil {
				t.Fatal(err)
			}
			owner, _ := h[1].(string)
			if h[0] == "running" && strings.Contains(owner, tag) {
				held = append(held, id)
				s, _ := h[2].(string)
				if k, _ := strconv.Atoi(s); k >= minStep {
					busy = true
				}
			}
		}
		if busy && len(held) >= minHeld {
			if err := w.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			<-w.done
			// A job may have finished between the poll and the kill:
			// only those still running under w were taken from it.
			var taken []string
			for _, id := range held {
				h, err := rdb.HMGet(ctx, "ddpm:job:"+id, "state", "owner").Result()
				if err != nil {
					t.Fatal(err)
				}
				if owner, _ := h[1].(string); h[0] == "running" && strings.Contains(owner, tag) {
					taken = append(taken, id)
				}
			}
			if len(taken) == 0 {
				t.Fatalf("%s finished all %d of its jobs before the kill", w.name, len(held))
			}
			return taken
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never held %d jobs with one at step >= %d:\n%s", w.name, minHeld, minStep, w.log)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestServeCluster runs redis-server, one api and two worker processes of
// the real binary on loopback, kills a busy worker with SIGKILL and
// expects every job to succeed exactly once with the images of an
// undisturbed run; then kills and restarts Redis under the api.
func TestServeCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs processes; skipped with -short")
	}
	rs := redistest.Start(t)
	bin := buildDDPM(t)
	t.Run("test-only fake", func(t *testing.T) { clusterRun(t, bin, rs, true) })
	t.Run("embedded model", func(t *testing.T) { clusterRun(t, bin, rs, false) })
}

func clusterRun(t *testing.T, bin string, rs *redistest.Server, fake bool) {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rdb.Close()
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	common := []string{"--redis", rs.URL, "--claim-idle", "1s"}
	model := []string{"--test-fake-model", "--test-fake-step-delay", "10ms"}
	jobs, n, steps, minHeld, minStep := 12, 2, 40, 2, 5
	if !fake {
		model = []string{"--device", "cpu"}
		jobs, n, steps, minHeld, minStep = 4, 1, 60, 1, 5
	}
	api := startReplica(t, bin, "api", append(append([]string{"--role", "api", "--max-batch", "4"}, common...), model...)...)
	w1 := startReplica(t, bin, "worker 1", append(append([]string{"--role", "worker", "--max-batch", "4"}, common...), model...)...)
	w2 := startReplica(t, bin, "worker 2", append(append([]string{"--role", "worker", "--max-batch", "4"}, common...), model...)...)
	cc := clusterClient{t: t, c: &http.Client{Timeout: 90 * time.Second}}

	bodies := make([]string, jobs)
	ids := make([]string, jobs)
	for i := range ids {
		bodies[i] = fmt.Sprintf(`{"n":%d,"steps":%d,"seed":%d}`, n, steps, 1000+10*i)
		code, b := cc.call("POST", api.base+"/v1/jobs", bodies[i])
		var v jobView
		if code != 202 || json.Unmarshal(b, &v) != nil {
			t.Fatalf("create %d: %d %s", i, code, b)
		}
		ids[i] = v.ID
	}
	held := killBusy(t, rdb, w1, ids, minHeld, minStep)
	killed := time.Now()
	t.Logf("killed %s (SIGKILL) while it ran %d jobs", w1.name, len(held))

	// Every job succeeds, once, readable from the api and the survivor.
	results := map[string]jobView{}
	var lastRerun time.Duration
	for _, id := range ids {
		v := cc.await(api.base, id, 60*time.Second)
		if v.State != "succeeded" || v.Result == nil || len(v.Result.Data) != n {
			t.Fatalf("job %s: %s %+v\napi:\n%s\nworker 2:\n%s", id, v.State, v.Error, api.log, w2.log)
		}
		results[id] = v
		for _, h := range held {
			if h == id {
				lastRerun = max(lastRerun, time.Since(killed))
			}
		}
		v2 := cc.await(w2.base, id, 5*time.Second)
		if v2.Result == nil || v2.Result.Data[0].B64JSON != v.Result.Data[0].B64JSON {
			t.Errorf("job %s reads differently on the surviving worker", id)
		}
	}
	t.Logf("all %d jobs succeeded; the killed worker's %d jobs were done %v after the kill (--claim-idle 1s)",
		jobs, len(held), lastRerun.Round(10*time.Millisecond))
	for _, id := range held {
		a, err := rdb.HGet(ctx, "ddpm:job:"+id, "attempts").Int()
		if err != nil || a != 2 {
			t.Errorf("job %s of the killed worker: attempts %d (%v), want 2", id, a, err)
		}
	}
	// Re-run jobs have the bytes of an undisturbed run with the same seeds,
	// made synchronously through the api's OpenAI endpoint.
	for i, id := range ids {
		rerun := false
		for _, h := range held {
			rerun = rerun || h == id
		}
		if !rerun && (!fake || i%4 != 0) {
			continue
		}
		ref := cc.syncImages(api.base, bodies[i])
		for k, b := range ref {
			if b != results[id].Result.Data[k].B64JSON {
				t.Errorf("job %s (re-run %v) image %d differs from an undisturbed run with the same seeds", id, rerun, k)
			}
		}
	}
	code, b := cc.call("GET", w2.base+"/metrics", "")
	if code != 200 || !strings.Contains(string(b), "ddpm_cluster_jobs_claimed_total") || strings.Contains(string(b), "ddpm_cluster_jobs_claimed_total 0\n") {
		t.Errorf("surviving worker's metrics: claimed_total missing or 0")
	}
	if !fake {
		api.stop(t)
		w2.stop(t)
		return
	}

	// Redis killed and restarted: the api answers 503 meanwhile, then works.
	rs.Kill()
	down := time.Now()
	if code, _ := cc.call("GET", api.base+"/readyz", ""); code != 503 {
		t.Errorf("readyz with Redis down: %d", code)
	}
	var first503, recovered time.Time
	restarted := false
	codes := map[int]int{}
	for time.Since(down) < 30*time.Second {
		code, b := cc.call("POST", api.base+"/v1/jobs", `{"steps":2,"seed":7}`)
		codes[code]++
		switch code {
		case 503:
			var e struct {
				Error struct{ Type string } `json:"error"`
			}
			if json.Unmarshal(b, &e) != nil || e.Error.Type != "service_unavailable" {
				t.Errorf("503 body %s", b)
			}
			if first503.IsZero() {
				first503 = time.Now()
			}
		case 202:
			if !restarted {
				t.Fatalf("202 while Redis was down")
			}
			recovered = time.Now()
		default:
			t.Fatalf("status %d with Redis down or restarting: %s", code, b)
		}
		if !recovered.IsZero() {
			var v jobView
			_ = json.Unmarshal(b, &v)
			if v := cc.await(api.base, v.ID, 20*time.Second); v.State != "succeeded" {
				t.Errorf("job after the restart: %+v", v)
			}
			break
		}
		if !restarted && time.Since(down) > time.Second {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := rs.Restart(rctx); err != nil {
				t.Fatal(err)
			}
			cancel()
			restarted = true
			t.Logf("Redis restarted %v after the kill", time.Since(down).Round(time.Millisecond))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if recovered.IsZero() {
		t.Fatalf("no recovery: %v\napi:\n%s", codes, api.log)
	}
	if code, _ := cc.call("GET", api.base+"/readyz", ""); code != 200 {
		t.Errorf("readyz after recovery: %d", code)
	}
	t.Logf("Redis down: api answered %v; 503 from %v to %v after the kill (first 202)", codes,
		first503.Sub(down).Round(time.Millisecond), recovered.Sub(down).Round(time.Millisecond))
	api.stop(t)
	w2.stop(t)
}
