package server

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/server/redistest"
	"github.com/redis/go-redis/v9"
)

// newClusterTest returns a cluster replica on rs, closed when the test
// ends. Claims are fast (ClaimIdle 400ms) unless c sets them.
func newClusterTest(t *testing.T, rs *redistest.Server, gen Generator, opts Options, c ClusterOptions) *Server {
	t.Helper()
	c.RedisURL = rs.URL
	if c.ClaimIdle == 0 {
		c.ClaimIdle = 400 * time.Millisecond
	}
	if gen == nil && c.Model.Name == "" {
		c.Model = NewFakeGenerator(8, 1, digits).Info()
	}
	s, err := NewCluster(gen, opts, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func decodeStatus(t *testing.T, w *httptest.ResponseRecorder) JobStatus {
	t.Helper()
	var st JobStatus
	if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil {
		t.Fatalf("status %d, body %.300s: %v", w.Code, w.Body, err)
	}
	return st
}

// waitJob long-polls job id on h until it is final (at most 20 s).
func waitJob(t *testing.T, h http.Handler, id string) JobStatus {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		w := do(t, h, "GET", "/v1/jobs/"+id+"?wait=5", "")
		if w.Code != http.StatusOK {
			t.Fatalf("GET job %s: %d %s", id, w.Code, w.Body)
		}
		st := decodeStatus(t, w)
		if st.State.final() {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s still %s after 20 s", id, st.State)
		}
	}
}

func TestParseRole(t *testing.T) {
	for in, want := range map[string]Role{"all": RoleAll, "API": RoleAPI, " worker ": RoleWorker} {
		if r, err := ParseRole(in); err != nil || r != want {
			t.Errorf("ParseRole(%q) = %q, %v", in, r, err)
		}
	}
	if _, err := ParseRole("gpu"); err == nil {
		t.Error("ParseRole(gpu): no error")
	}
}

func TestWireRequestRoundTrip(t *testing.T) {
	g := genRequest{settings: Settings{Steps: 7, Sampler: diffusion.SamplerDDIM, Eta: 0.5, Guidance: 3},
		seeds: []int64{1<<62 + 3, -5}, classes: []int{2, 9}, classSource: ClassFromPrompt}
	b, err := json.Marshal(toWire(g))
	if err != nil {
		t.Fatal(err)
	}
	var w wireRequest
	if err := json.Unmarshal(b, &w); err != nil {
		t.Fatal(err)
	}
	back, err := w.gen()
	if err != nil || !reflect.DeepEqual(back, g) {
		t.Fatalf("round trip: %+v, %v; want %+v", back, err, g)
	}
	if _, err := (wireRequest{Sampler: "ddim", Seeds: []int64{1}}).gen(); err == nil {
		t.Error("seeds without classes: no error")
	}
	e := &APIError{Status: 504, Type: TypeTimeout, Message: "m", Code: "c"}
	if got := decodeError(encodeError(e)); !reflect.DeepEqual(got, e) {
		t.Errorf("error round trip %+v", got)
	}
}

func TestClusterOptionsCheck(t *testing.T) {
	gen := NewFakeGenerator(8, 1, nil)
	for name, c := range map[string]ClusterOptions{
		"no url":       {},
		"bad url":      {RedisURL: "http://x"},
		"bad role":     {RedisURL: "redis://127.0.0.1:1/0", Role: "gpu"},
		"heartbeat":    {RedisURL: "redis://127.0.0.1:1/0", ClaimIdle: time.Second, Heartbeat: 2 * time.Second},
		"ttl":          {RedisURL: "redis://127.0.0.1:1/0", ResultTTL: time.Millisecond},
		"attempts":     {RedisURL: "redis://127.0.0.1:1/0", MaxAttempts: -1},
		"worker w/o g": {RedisURL: "redis://127.0.0.1:1/0", Role: RoleWorker},
	} {
		g := Generator(gen)
		if name == "worker w/o g" {
			g = nil
		}
		if s, err := NewCluster(g, Options{}, c); err == nil {
			s.Close()
			t.Errorf("%s: no error", name)
		}
	}
}

// TestClusterJobLifecycle runs every endpoint of an all-role replica and
// checks the images equal the in-memory server's for the same seeds.
func TestClusterJobLifecycle(t *testing.T) {
	rs := redistest.Start(t)
	f, _ := slowFake(time.Millisecond)
	s := newClusterTest(t, rs, f, Options{}, ClusterOptions{})
	h := s.Handler()
	body := `{"n":2,"steps":5,"seed":9,"class_label":3}`
	w := do(t, h, "POST", "/v1/jobs", body)
	if w.Code != http.StatusAccepted {
		t.Fatalf("create: %d %s", w.Code, w.Body)
	}
	st := decodeStatus(t, w)
	if !strings.HasPrefix(st.ID, "job_") || st.TotalSteps != 5 || st.QueuePosition == nil || w.Header().Get("Location") != "/v1/jobs/"+st.ID {
		t.Fatalf("job %+v, Location %q", st, w.Header().Get("Location"))
	}
	st = waitJob(t, h, st.ID)
	if st.State != StateSucceeded || st.Step != 5 || st.Result == nil || len(st.Result.Data) != 2 ||
		*st.Result.Data[0].ClassLabel != 3 || st.Result.Data[1].Seed != 10 {
		t.Fatalf("finished job %+v", st)
	}
	// The same request on the in-memory server gives the same bytes.
	mem := newTest(t, NewFakeGenerator(8, 1, digits), Options{})
	ref := decodeImages(t, do(t, mem.Handler(), "POST", "/v1/images/generations", body).Body.Bytes())
	for i := range ref.Data {
		if ref.Data[i].B64JSON != st.Result.Data[i].B64JSON {
			t.Errorf("image %d differs from the in-memory server's", i)
		}
	}
	// DELETE of a finished job leaves it succeeded.
	w = do(t, h, "DELETE", "/v1/jobs/"+st.ID, "")
	if st2 := decodeStatus(t, w); w.Code != 200 || st2.State != StateSucceeded {
		t.Errorf("delete finished: %d %s", w.Code, st2.State)
	}
	// Synchronous endpoints wait on the shared job.
	w = do(t, h, "POST", "/v1/images/generations", body)
	if w.Code != 200 {
		t.Fatalf("generations: %d %s", w.Code, w.Body)
	}
	if got := decodeImages(t, w.Body.Bytes()); got.Data[1].B64JSON != ref.Data[1].B64JSON {
		t.Error("sync image differs")
	}
	w = do(t, h, "POST", "/v1/generate", `{"n":1,"steps":2,"seed":1}`)
	if w.Code != 200 || w.Header().Get("Content-Type") != "image/png" || w.Header().Get("X-DDPM-Seeds") != "1" {
		t.Fatalf("generate: %d %v", w.Code, w.Header())
	}
	// Unknown job, bad wait.
	w = do(t, h, "GET", "/v1/jobs/job_nope", "")
	if e := apiErr(t, w); w.Code != 404 || e.Code == nil || *e.Code != "job_not_found" {
		t.Errorf("unknown job: %d %+v", w.Code, e)
	}
	if w = do(t, h, "GET", "/v1/jobs/"+st.ID+"?wait=99", ""); w.Code != 400 {
		t.Errorf("wait=99: %d", w.Code)
	}
	// Health, readiness, metrics.
	if w = do(t, h, "GET", "/readyz", ""); w.Code != 200 {
		t.Errorf("readyz: %d %s", w.Code, w.Body)
	}
	w = do(t, h, "GET", "/metrics", "")
	for _, want := range []string{`ddpm_role_info{role="all"} 1`, "ddpm_cluster_queue_length", "ddpm_redis_up", "ddpm_cluster_jobs_claimed_total"} {
		if !strings.Contains(w.Body.String(), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// sseEvents reads server-sent events from url until "done" or "error"
// and returns their names and data.
func sseEvents(t *testing.T, url string) (names []string, data []JobStatus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("events: %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	name := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			var st JobStatus
			_ = json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &st)
			names, data = append(names, name), append(data, st)
			if name == "done" || name == "error" {
				return names, data
			}
		}
	}
	t.Fatalf("event stream ended without done: %v (%v)", names, sc.Err())
	return nil, nil
}

// TestClusterSplitRoles queues on an api replica (no model) and follows
// the job on a worker replica, which refuses new work.
func TestClusterSplitRoles(t *testing.T) {
	rs := redistest.Start(t)
	f, _ := slowFake(5 * time.Millisecond)
	api := newClusterTest(t, rs, nil, Options{}, ClusterOptions{Role: RoleAPI})
	wk := newClusterTest(t, rs, f, Options{}, ClusterOptions{Role: RoleWorker})
	ha, hw := api.Handler(), wk.Handler()
	if w := do(t, ha, "GET", "/v1/models", ""); w.Code != 200 || !strings.Contains(w.Body.String(), `"id":"fake"`) {
		t.Errorf("api models: %d %s", w.Code, w.Body)
	}
	for _, path := range []string{"/v1/jobs", "/v1/images/generations", "/v1/generate"} {
		w := do(t, hw, "POST", path, `{"steps":1}`)
		if e := apiErr(t, w); w.Code != 404 || e.Code == nil || *e.Code != "not_an_api_replica" {
			t.Errorf("worker POST %s: %d %+v", path, w.Code, e)
		}
	}
	w := do(t, ha, "POST", "/v1/jobs", `{"n":3,"steps":20,"seed":4}`)
	if w.Code != http.StatusAccepted {
		t.Fatalf("create: %d %s", w.Code, w.Body)
	}
	id := decodeStatus(t, w).ID
	srv := httptest.NewServer(hw)
	defer srv.Close()
	names, data := sseEvents(t, srv.URL+"/v1/jobs/"+id+"/events")
	if names[len(names)-1] != "done" || data[len(data)-1].State != StateSucceeded {
		t.Fatalf("events %v, last %+v", names, data[len(data)-1])
	}
	progress := 0
	for i, n := range names {
		if n == "progress" && data[i].State == StateRunning {
			progress++
			if i > 0 && data[i].Step < data[i-1].Step {
				t.Errorf("step went back: %d after %d", data[i].Step, data[i-1].Step)
			}
		}
	}
	if progress < 3 {
		t.Errorf("only %d running progress events for 20 steps: %v", progress, names)
	}
	if st := waitJob(t, hw, id); st.Result == nil || len(st.Result.Data) != 3 {
		t.Errorf("worker read: %+v", st)
	}
	if w := do(t, hw, "DELETE", "/v1/jobs/"+id, ""); w.Code != 404 {
		t.Errorf("worker DELETE: %d", w.Code)
	}
	w = do(t, hw, "GET", "/metrics", "")
	if !strings.Contains(w.Body.String(), `ddpm_role_info{role="worker"} 1`) {
		t.Errorf("worker metrics lack the role")
	}
}

// TestClusterQueueFull: the 429 bound is the cluster's queue, shared by
// two api replicas.
func TestClusterQueueFull(t *testing.T) {
	rs := redistest.Start(t)
	a := newClusterTest(t, rs, nil, Options{QueueSize: 2}, ClusterOptions{Role: RoleAPI}).Handler()
	b := newClusterTest(t, rs, nil, Options{QueueSize: 2}, ClusterOptions{Role: RoleAPI}).Handler()
	if w := do(t, a, "POST", "/v1/jobs", `{"steps":1}`); w.Code != 202 {
		t.Fatalf("first: %d", w.Code)
	}
	w := do(t, b, "POST", "/v1/jobs", `{"steps":1}`)
	if st := decodeStatus(t, w); w.Code != 202 || st.QueuePosition == nil || *st.QueuePosition != 1 {
		t.Fatalf("second: %d %+v", w.Code, st)
	}
	for _, h := range []http.Handler{a, b} {
		w := do(t, h, "POST", "/v1/jobs", `{"steps":1}`)
		if e := apiErr(t, w); w.Code != 429 || w.Header().Get("Retry-After") == "" || e.Type != TypeRateLimit {
			t.Errorf("third: %d %v %+v", w.Code, w.Header(), e)
		}
	}
}

// TestClusterCancel cancels one of two jobs sharing a running batch: the
// other finishes, and the worker drops the cancelled one within a step.
func TestClusterCancel(t *testing.T) {
	rs := redistest.Start(t)
	f := NewFakeGenerator(8, 1, digits)
	const step = 20 * time.Millisecond
	f.StepDelay = step
	f.Calls = make(chan int, 8)
	api := newClusterTest(t, rs, nil, Options{}, ClusterOptions{Role: RoleAPI})
	h := api.Handler()
	// Queue both before the worker starts, so they share its first batch.
	a := decodeStatus(t, do(t, h, "POST", "/v1/jobs", `{"steps":40,"seed":1}`)).ID
	b := decodeStatus(t, do(t, h, "POST", "/v1/jobs", `{"steps":40,"seed":2}`)).ID
	wk := newClusterTest(t, rs, f, Options{}, ClusterOptions{Role: RoleWorker})
	if n := <-f.Calls; n != 2 {
		t.Fatalf("first batch has %d images, want 2", n)
	}
	for decodeStatus(t, do(t, h, "GET", "/v1/jobs/"+a, "")).Step < 2 {
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	w := do(t, h, "DELETE", "/v1/jobs/"+a, "")
	if st := decodeStatus(t, w); st.State != StateCancelled || st.Error == nil || st.Error.Type != TypeCancelled {
		t.Fatalf("cancel: %d %+v", w.Code, st)
	}
	for {
		wk.cl.w.mu.Lock()
		_, running := wk.cl.w.inflight[a]
		wk.cl.w.mu.Unlock()
		if !running {
			break
		}
		if time.Since(start) > 2*step+200*time.Millisecond {
			t.Fatalf("the worker still runs the cancelled job after %v", time.Since(start))
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("the worker dropped the cancelled job %v after DELETE (one step is %v)", time.Since(start).Round(time.Millisecond), step)
	if st := waitJob(t, h, b); st.State != StateSucceeded {
		t.Errorf("the other job: %+v", st)
	}
	if st := waitJob(t, h, a); st.State != StateCancelled {
		t.Errorf("the cancelled job became %s", st.State)
	}
}

// ghostTake delivers the next queue entry to a consumer that never
// heartbeats and starts its job as that consumer would: a worker killed
// while running it.
func ghostTake(t *testing.T, rs *redistest.Server, maxAttempts int) (rdb *redis.Client, st *store, id string, attempts int) {
	t.Helper()
	ctx := context.Background()
	rdb = redis.NewClient(&redis.Options{Addr: rs.Addr})
	t.Cleanup(func() { rdb.Close() })
	st = &store{rdb: rdb, prefix: "ddpm:", resultTTL: time.Hour}
	streams, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: clusterGroup, Consumer: "ghost",
		Streams: []string{st.queueKey(), ">"}, Count: 1, Block: -1}).Result()
	if err != nil || len(streams) != 1 || len(streams[0].Messages) != 1 {
		t.Fatalf("ghost read: %v %v", streams, err)
	}
	m := streams[0].Messages[0]
	id = m.Values["job"].(string)
	res, err := st.start(ctx, id, m.ID, "ghost", maxAttempts, &APIError{Status: 500, Message: "x"}, &APIError{Status: 504, Message: "y"})
	if err != nil || res.verdict != "run" {
		t.Fatalf("ghost start: %+v %v", res, err)
	}
	return rdb, st, id, res.attempts
}

// TestClusterClaimRerun: a job whose worker died is claimed after
// ClaimIdle and run again with the same seeds (identical images); the
// dead worker's late report is refused; a job whose workers died
// MaxAttempts times fails with a clear error.
func TestClusterClaimRerun(t *testing.T) {
	rs := redistest.Start(t)
	api := newClusterTest(t, rs, nil, Options{}, ClusterOptions{Role: RoleAPI})
	h := api.Handler()
	body := `{"n":3,"steps":4,"seed":42}`
	w := do(t, h, "POST", "/v1/jobs", body)
	if w.Code != 202 {
		t.Fatalf("create: %d %s", w.Code, w.Body)
	}
	_, gst, id, attempts := ghostTake(t, rs, 3)
	if st := decodeStatus(t, do(t, h, "GET", "/v1/jobs/"+id, "")); st.State != StateRunning {
		t.Fatalf("after the ghost took it: %+v", st)
	}
	killed := time.Now()
	const claimIdle = 400 * time.Millisecond
	wk := newClusterTest(t, rs, NewFakeGenerator(8, 1, digits), Options{}, ClusterOptions{Role: RoleWorker, ClaimIdle: claimIdle})
	st := waitJob(t, h, id)
	took := time.Since(killed)
	if st.State != StateSucceeded || st.Result == nil || len(st.Result.Data) != 3 {
		t.Fatalf("rerun job: %+v", st)
	}
	if took < claimIdle {
		t.Errorf("claimed after %v, before ClaimIdle %v", took, claimIdle)
	}
	t.Logf("a dead worker's job was claimed and finished %v after it stopped (ClaimIdle %v)", took.Round(time.Millisecond), claimIdle)
	rec, err := gst.get(context.Background(), id)
	if err != nil || rec.Attempts != 2 || rec.Owner == "ghost" {
		t.Errorf("record after rerun: %+v %v", rec, err)
	}
	// Undisturbed run with the same seeds: identical bytes.
	ref := decodeImages(t, do(t, h, "POST", "/v1/images/generations", body).Body.Bytes())
	for i := range ref.Data {
		if ref.Data[i].B64JSON != st.Result.Data[i].B64JSON {
			t.Errorf("image %d of the rerun differs from an undisturbed run", i)
		}
	}
	// The ghost comes back and reports: refused, nothing changes.
	v, err := gst.finish(context.Background(), id, "ghost", attempts, StateFailed, &APIError{Status: 500, Message: "late"}, nil)
	if err != nil || v == "ok" {
		t.Errorf("late finish of the dead worker: %q %v", v, err)
	}
	if st2 := decodeStatus(t, do(t, h, "GET", "/v1/jobs/"+id, "")); st2.State != StateSucceeded || st2.Error != nil {
		t.Errorf("after the late report: %+v", st2)
	}
	m := do(t, wk.Handler(), "GET", "/metrics", "").Body.String()
	for _, want := range []string{"ddpm_cluster_jobs_claimed_total 1", "ddpm_cluster_jobs_retried_total 1"} {
		if !strings.Contains(m, want) {
			t.Errorf("worker metrics lack %q", want)
		}
	}

	// MaxAttempts: a job started (and lost) as often as allowed fails.
	wk.Close()
	w = do(t, h, "POST", "/v1/jobs", `{"steps":2,"seed":1}`)
	_, _, id2, _ := ghostTake(t, rs, 1)
	newClusterTest(t, rs, NewFakeGenerator(8, 1, digits), Options{}, ClusterOptions{Role: RoleWorker, ClaimIdle: claimIdle, MaxAttempts: 1})
	st = waitJob(t, h, id2)
	if st.State != StateFailed || st.Error == nil || st.Error.Code == nil || *st.Error.Code != "worker_lost" ||
		!strings.Contains(st.Error.Message, "--max-attempts 1") {
		t.Errorf("exhausted job: %+v %+v", st, st.Error)
	}
}

// TestClusterHandBack: a worker stopping with a running job hands it back
// to the queue (not counted as an attempt); another worker finishes it.
func TestClusterHandBack(t *testing.T) {
	rs := redistest.Start(t)
	f := NewFakeGenerator(8, 1, digits)
	f.StepDelay = 10 * time.Millisecond
	f.Calls = make(chan int, 4)
	api := newClusterTest(t, rs, nil, Options{}, ClusterOptions{Role: RoleAPI})
	h := api.Handler()
	wa := newClusterTest(t, rs, f, Options{}, ClusterOptions{Role: RoleWorker})
	id := decodeStatus(t, do(t, h, "POST", "/v1/jobs", `{"steps":300,"seed":3}`)).ID
	<-f.Calls
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := wa.Shutdown(ctx); err == nil {
		t.Error("Shutdown returned nil although it had to hand a job back")
	}
	wa.Close()
	st := decodeStatus(t, do(t, h, "GET", "/v1/jobs/"+id, ""))
	if st.State != StateQueued {
		t.Fatalf("after hand-back: %+v", st)
	}
	rec, _ := api.cl.st.get(context.Background(), id)
	if rec.Attempts != 0 {
		t.Errorf("hand-back counted as an attempt: %d", rec.Attempts)
	}
	fb := NewFakeGenerator(8, 1, digits)
	newClusterTest(t, rs, fb, Options{}, ClusterOptions{Role: RoleWorker})
	if st := waitJob(t, h, id); st.State != StateSucceeded {
		t.Errorf("after another worker: %+v", st)
	}
}

// TestClusterRedisRestart kills Redis under a replica: answers are 503
// JSON (never 500) and readiness fails; after Redis is back, empty, the
// replica works again by itself.
func TestClusterRedisRestart(t *testing.T) {
	rs := redistest.Start(t)
	s := newClusterTest(t, rs, NewFakeGenerator(8, 1, digits), Options{}, ClusterOptions{})
	h := s.Handler()
	id := decodeStatus(t, do(t, h, "POST", "/v1/jobs", `{"steps":2}`)).ID
	waitJob(t, h, id)
	rs.Kill()
	down := time.Now()
	for _, r := range []struct{ method, path, body string }{
		{"POST", "/v1/jobs", `{"steps":2}`}, {"GET", "/v1/jobs/" + id, ""}, {"DELETE", "/v1/jobs/" + id, ""},
		{"POST", "/v1/images/generations", `{"steps":2}`}, {"GET", "/readyz", ""},
	} {
		w := do(t, h, r.method, r.path, r.body)
		if e := apiErr(t, w); w.Code != 503 || e.Type != TypeUnavailable {
			t.Errorf("%s %s with Redis down: %d %+v", r.method, r.path, w.Code, e)
		}
	}
	if w := do(t, h, "GET", "/healthz", ""); w.Code != 200 {
		t.Errorf("healthz with Redis down: %d", w.Code)
	}
	t.Logf("5 requests answered 503 in %v with Redis down", time.Since(down).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rs.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	for {
		w := do(t, h, "POST", "/v1/images/generations", `{"steps":2,"seed":5}`)
		if w.Code == 200 {
			break
		}
		if w.Code != 503 {
			t.Fatalf("after restart: %d %s", w.Code, w.Body)
		}
		if time.Since(up) > 10*time.Second {
			t.Fatalf("no recovery 10 s after Redis restarted: %d %s", w.Code, w.Body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("a generation succeeded %v after Redis restarted", time.Since(up).Round(time.Millisecond))
	if w := do(t, h, "GET", "/v1/jobs/"+id, ""); w.Code != 404 {
		t.Errorf("a job from before the restart (no persistence): %d", w.Code)
	}
}

// TestClusterTimeout: a queued job that no worker takes fails with 504
// after the request timeout (plus the grace a worker gets).
func TestClusterTimeout(t *testing.T) {
	rs := redistest.Start(t)
	h := newClusterTest(t, rs, nil, Options{Timeout: 100 * time.Millisecond}, ClusterOptions{Role: RoleAPI}).Handler()
	id := decodeStatus(t, do(t, h, "POST", "/v1/jobs", `{"steps":2}`)).ID
	st := waitJob(t, h, id)
	if st.State != StateFailed || st.Error == nil || st.Error.Type != TypeTimeout {
		t.Errorf("%+v", st)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w := do(t, h, "POST", "/v1/images/generations", `{"steps":2}`)
		if e := apiErr(t, w); w.Code != 504 || e.Type != TypeTimeout {
			t.Errorf("sync without workers: %d %+v", w.Code, e)
		}
	}()
	wg.Wait()
}

// TestClusterModelMismatch: a worker refuses, with a clear error, a job an
// api replica queued for another model.
func TestClusterModelMismatch(t *testing.T) {
	rs := redistest.Start(t)
	other := NewFakeGenerator(8, 1, digits).Info()
	other.Name = "other-model"
	h := newClusterTest(t, rs, nil, Options{}, ClusterOptions{Role: RoleAPI, Model: other}).Handler()
	newClusterTest(t, rs, NewFakeGenerator(8, 1, digits), Options{}, ClusterOptions{Role: RoleWorker})
	id := decodeStatus(t, do(t, h, "POST", "/v1/jobs", `{"steps":2}`)).ID
	st := waitJob(t, h, id)
	if st.State != StateFailed || st.Error == nil || st.Error.Code == nil || *st.Error.Code != "model_mismatch" ||
		!strings.Contains(st.Error.Message, `"other-model"`) {
		t.Errorf("%+v %+v", st, st.Error)
	}
}

// TestClusterAPIDrain: an api replica's drain ends its long polls and
// event streams at once and leaves the cluster's jobs alone.
func TestClusterAPIDrain(t *testing.T) {
	rs := redistest.Start(t)
	api := newClusterTest(t, rs, nil, Options{}, ClusterOptions{Role: RoleAPI})
	h := api.Handler()
	id := decodeStatus(t, do(t, h, "POST", "/v1/jobs", `{"steps":2}`)).ID
	srv := httptest.NewServer(h)
	defer srv.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	var pollCode int
	var pollState JobState
	go func() {
		defer wg.Done()
		w := do(t, h, "GET", "/v1/jobs/"+id+"?wait=30", "")
		pollCode, pollState = w.Code, decodeStatus(t, w).State
	}()
	go func() {
		defer wg.Done()
		resp, err := http.Get(srv.URL + "/v1/jobs/" + id + "/events")
		if err == nil {
			_, _ = bufio.NewReader(resp.Body).ReadString(0) // until the stream ends
			resp.Body.Close()
		}
	}()
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := api.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	wg.Wait()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the long poll and the event stream ended %v after the drain began", d)
	}
	if pollCode != 200 || pollState != StateQueued {
		t.Errorf("long poll at drain: %d %s", pollCode, pollState)
	}
	if w := do(t, h, "POST", "/v1/jobs", `{"steps":2}`); w.Code != 503 {
		t.Errorf("POST while draining: %d", w.Code)
	}
	if rec, err := api.cl.st.get(context.Background(), id); err != nil || rec.State != StateQueued {
		t.Errorf("the job after the api drained: %+v %v", rec, err)
	}
}

// TestClusterBatching: a worker batches queued jobs of the cluster as the
// in-memory server does, up to MaxBatch images, leaving the rest queued.
func TestClusterBatching(t *testing.T) {
	rs := redistest.Start(t)
	h := newClusterTest(t, rs, nil, Options{}, ClusterOptions{Role: RoleAPI}).Handler()
	var ids []string
	for range 5 {
		ids = append(ids, decodeStatus(t, do(t, h, "POST", "/v1/jobs", `{"steps":3}`)).ID)
	}
	f := NewFakeGenerator(8, 1, digits)
	f.StepDelay = 20 * time.Millisecond
	f.Calls = make(chan int, 8)
	newClusterTest(t, rs, f, Options{MaxBatch: 4}, ClusterOptions{Role: RoleWorker})
	if a, b := <-f.Calls, <-f.Calls; a != 4 || b != 1 {
		t.Errorf("batches of %d and %d images, want 4 and 1", a, b)
	}
	for _, id := range ids {
		if st := waitJob(t, h, id); st.State != StateSucceeded {
			t.Errorf("%s: %+v", id, st)
		}
	}
}
