package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"image"
	"image/png"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
)

var digits = []string{"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}

// newTest returns a server over gen (a fast 8x8 gray 10-class fake when
// nil), closed when the test ends.
func newTest(t *testing.T, gen Generator, opts Options) *Server {
	t.Helper()
	if gen == nil {
		gen = NewFakeGenerator(8, 1, digits)
	}
	s, err := New(gen, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// do sends one request to the handler and returns the recorder.
func do(t *testing.T, h http.Handler, method, path, body string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, r)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

// apiErr decodes an error body, failing the test when it is not in the
// OpenAI shape.
func apiErr(t *testing.T, w *httptest.ResponseRecorder) errorDetail {
	t.Helper()
	var b struct {
		Error *errorDetail `json:"error"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &b); err != nil || b.Error == nil {
		t.Fatalf("status %d: body is not an OpenAI error: %q (%v)", w.Code, w.Body.String(), err)
	}
	if b.Error.Message == "" || b.Error.Type == "" {
		t.Fatalf("error without message or type: %q", w.Body.String())
	}
	return *b.Error
}

func decodeImages(t *testing.T, body []byte) ImageResponse {
	t.Helper()
	var r ImageResponse
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("decode %q: %v", body, err)
	}
	for i, d := range r.Data {
		b, err := base64.StdEncoding.DecodeString(d.B64JSON)
		if err != nil {
			t.Fatalf("image %d: base64: %v", i, err)
		}
		if _, err := png.Decode(bytes.NewReader(b)); err != nil {
			t.Fatalf("image %d: png: %v", i, err)
		}
	}
	return r
}

func TestGenerationsOK(t *testing.T) {
	s := newTest(t, nil, Options{})
	h := s.Handler()
	tests := []struct {
		name  string
		body  string
		n     int
		class int // -1: any class (the request named none)
	}{
		{"defaults", `{}`, 1, -1},
		{"openai fields", `{"model":"fake","prompt":"a cat","n":2,"size":"8x8","response_format":"b64_json","quality":"standard","user":"u"}`, 2, -1},
		{"default model", `{"model":"default","n":3,"steps":3,"sampler":"ddpm","seed":5}`, 3, -1},
		{"digit prompt", `{"prompt":"a handwritten 7","steps":2}`, 1, 7},
		{"word prompt", `{"prompt":"Seven.","steps":2}`, 1, 7},
		{"class name prompt", `{"prompt":"draw me a FOUR please","steps":2}`, 1, 4},
		{"class_label wins", `{"prompt":"seven","class_label":2,"steps":2}`, 1, 2},
		{"class_label random", `{"prompt":"seven","class_label":-1,"steps":2,"n":3}`, 3, -1},
		{"ddim eta guidance", `{"sampler":"ddim","eta":0.5,"guidance_scale":3,"class_label":1,"steps":2}`, 1, 1},
		{"size auto", `{"size":"auto","steps":1}`, 1, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := do(t, h, "POST", "/v1/images/generations", tc.body)
			if w.Code != 200 {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			r := decodeImages(t, w.Body.Bytes())
			if len(r.Data) != tc.n {
				t.Fatalf("got %d images, want %d", len(r.Data), tc.n)
			}
			if r.Created == 0 {
				t.Error("created is 0")
			}
			for _, d := range r.Data {
				if d.ClassLabel == nil {
					t.Fatal("no class_label from a class-conditional model")
				}
				got := *d.ClassLabel
				if got != tc.class && (tc.class != -1 || got < 0 || got > 9) {
					t.Errorf("class_label %d, want %d", got, tc.class)
				}
			}
		})
	}
}

func TestSameSeedSameBytes(t *testing.T) {
	s := newTest(t, nil, Options{})
	body := `{"n":2,"seed":42,"steps":2}`
	a := decodeImages(t, do(t, s.Handler(), "POST", "/v1/images/generations", body).Body.Bytes())
	b := decodeImages(t, do(t, s.Handler(), "POST", "/v1/images/generations", body).Body.Bytes())
	for i := range a.Data {
		if a.Data[i].B64JSON != b.Data[i].B64JSON || a.Data[i].Seed != int64(42+i) {
			t.Errorf("image %d: seed %d; bytes equal %v", i, a.Data[i].Seed, a.Data[i].B64JSON == b.Data[i].B64JSON)
		}
	}
	if a.Data[0].B64JSON == a.Data[1].B64JSON {
		t.Error("seeds 42 and 43 gave the same image")
	}
}

func TestBadInput(t *testing.T) {
	s := newTest(t, nil, Options{MaxN: 4, MaxSteps: 100, MaxBodyBytes: 1024})
	uncond := newTest(t, NewFakeGenerator(8, 3, nil), Options{})
	big := `{"prompt":"` + strings.Repeat("x", 2000) + `"}`
	var wj JobStatus
	json.Unmarshal(do(t, s.Handler(), "POST", "/v1/jobs", `{"steps":1}`).Body.Bytes(), &wj)
	waitJob := wj.ID
	tests := []struct {
		name   string
		s      *Server
		method string
		path   string
		body   string
		status int
		param  string
		code   string
	}{
		{"empty body", s, "POST", "/v1/images/generations", ``, 400, "", ""},
		{"not json", s, "POST", "/v1/images/generations", `n=1`, 400, "", ""},
		{"truncated", s, "POST", "/v1/images/generations", `{"n":1`, 400, "", ""},
		{"trailing data", s, "POST", "/v1/images/generations", `{"n":1} {}`, 400, "", ""},
		{"array", s, "POST", "/v1/images/generations", `[1]`, 400, "", ""},
		{"n string", s, "POST", "/v1/images/generations", `{"n":"2"}`, 400, "n", ""},
		{"n float", s, "POST", "/v1/images/generations", `{"n":1.5}`, 400, "n", ""},
		{"seed huge", s, "POST", "/v1/images/generations", `{"seed":1e30}`, 400, "seed", ""},
		{"unknown field", s, "POST", "/v1/images/generations", `{"stepz":3}`, 400, "stepz", ""},
		{"too large", s, "POST", "/v1/images/generations", big, 413, "", ""},
		{"unknown model", s, "POST", "/v1/images/generations", `{"model":"dall-e-3"}`, 404, "model", "model_not_found"},
		{"unknown model job", s, "POST", "/v1/jobs", `{"model":"dall-e-3"}`, 404, "model", "model_not_found"},
		{"url format", s, "POST", "/v1/images/generations", `{"response_format":"url"}`, 422, "response_format", ""},
		{"other format", s, "POST", "/v1/images/generations", `{"response_format":"jpeg"}`, 422, "response_format", ""},
		{"size", s, "POST", "/v1/images/generations", `{"size":"1024x1024"}`, 422, "size", ""},
		{"n zero", s, "POST", "/v1/images/generations", `{"n":0}`, 422, "n", ""},
		{"n over", s, "POST", "/v1/images/generations", `{"n":5}`, 422, "n", ""},
		{"steps zero", s, "POST", "/v1/images/generations", `{"steps":0}`, 422, "steps", ""},
		{"steps over", s, "POST", "/v1/images/generations", `{"steps":101}`, 422, "steps", ""},
		{"sampler", s, "POST", "/v1/images/generations", `{"sampler":"plms"}`, 422, "sampler", ""},
		{"eta negative", s, "POST", "/v1/images/generations", `{"eta":-0.1}`, 422, "eta", ""},
		{"eta over", s, "POST", "/v1/images/generations", `{"eta":1.5}`, 422, "eta", ""},
		{"eta with ddpm", s, "POST", "/v1/images/generations", `{"sampler":"ddpm","eta":0.5}`, 422, "eta", ""},
		{"guidance negative", s, "POST", "/v1/images/generations", `{"guidance_scale":-1}`, 422, "guidance_scale", ""},
		{"guidance over", s, "POST", "/v1/images/generations", `{"guidance_scale":21}`, 422, "guidance_scale", ""},
		{"class over", s, "POST", "/v1/images/generations", `{"class_label":10}`, 422, "class_label", ""},
		{"class under", s, "POST", "/v1/images/generations", `{"class_label":-2}`, 422, "class_label", ""},
		{"class on unconditional", uncond, "POST", "/v1/images/generations", `{"class_label":1}`, 422, "class_label", ""},
		{"guidance on unconditional", uncond, "POST", "/v1/images/generations", `{"guidance_scale":2}`, 422, "guidance_scale", ""},
		{"generate bad", s, "POST", "/v1/generate", `{"n":-1}`, 422, "n", ""},
		{"job bad", s, "POST", "/v1/jobs", `{"steps":-1}`, 422, "steps", ""},
		{"job unknown", s, "GET", "/v1/jobs/job_nope", ``, 404, "id", "job_not_found"},
		{"delete unknown", s, "DELETE", "/v1/jobs/job_nope", ``, 404, "id", "job_not_found"},
		{"events unknown", s, "GET", "/v1/jobs/job_nope/events", ``, 404, "id", "job_not_found"},
		{"wait bad", s, "GET", "/v1/jobs/" + waitJob + "?wait=x", ``, 400, "wait", ""},
		{"wait over", s, "GET", "/v1/jobs/" + waitJob + "?wait=61", ``, 400, "wait", ""},
		{"wait negative", s, "GET", "/v1/jobs/" + waitJob + "?wait=-1", ``, 400, "wait", ""},
		{"model unknown", s, "GET", "/v1/models/gpt", ``, 404, "model", "model_not_found"},
		{"no route", s, "GET", "/v2/nothing", ``, 404, "", ""},
		{"wrong method", s, "GET", "/v1/images/generations", ``, 405, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := do(t, tc.s.Handler(), tc.method, tc.path, tc.body)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			e := apiErr(t, w)
			gotParam, gotCode := "", ""
			if e.Param != nil {
				gotParam = *e.Param
			}
			if e.Code != nil {
				gotCode = *e.Code
			}
			if gotParam != tc.param || gotCode != tc.code {
				t.Errorf("param %q code %q, want %q %q (%s)", gotParam, gotCode, tc.param, tc.code, e.Message)
			}
			if e.Type != TypeInvalidRequest {
				t.Errorf("type %q", e.Type)
			}
		})
	}
}

func TestModels(t *testing.T) {
	s := newTest(t, nil, Options{MaxBatch: 3})
	w := do(t, s.Handler(), "GET", "/v1/models", "")
	var list struct {
		Object string        `json:"object"`
		Data   []ModelObject `json:"data"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &list); err != nil || w.Code != 200 {
		t.Fatalf("%d %s %v", w.Code, w.Body, err)
	}
	if list.Object != "list" || len(list.Data) != 1 || list.Data[0].ID != "fake" || list.Data[0].Object != "model" ||
		list.Data[0].DDPM.NumClasses != 10 || list.Data[0].DDPM.MaxBatch != 3 || list.Data[0].DDPM.ImageSize != 8 {
		t.Errorf("models: %+v", list)
	}
	for _, id := range []string{"fake", "default"} {
		if w := do(t, s.Handler(), "GET", "/v1/models/"+id, ""); w.Code != 200 {
			t.Errorf("model %s: %d", id, w.Code)
		}
	}
}

func TestGeneratePNG(t *testing.T) {
	s := newTest(t, nil, Options{})
	for _, tc := range []struct {
		n, w, h int
	}{{1, 8, 8}, {4, 22, 22}, {5, 32, 22}} { // img.DefaultGrid: 2 px around and between
		w := do(t, s.Handler(), "POST", "/v1/generate", `{"steps":1,"seed":1,"n":`+itoa(tc.n)+`}`)
		if w.Code != 200 || w.Header().Get("Content-Type") != "image/png" {
			t.Fatalf("n=%d: %d %s", tc.n, w.Code, w.Header().Get("Content-Type"))
		}
		img, err := png.Decode(w.Body)
		if err != nil {
			t.Fatal(err)
		}
		if b := img.Bounds(); b.Dx() != tc.w || b.Dy() != tc.h {
			t.Errorf("n=%d: grid %v, want %dx%d", tc.n, b, tc.w, tc.h)
		}
		if got := strings.Count(w.Header().Get("X-DDPM-Seeds"), ",") + 1; got != tc.n {
			t.Errorf("n=%d: %d seeds in header", tc.n, got)
		}
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func TestHealthAndMetrics(t *testing.T) {
	s := newTest(t, nil, Options{})
	h := s.Handler()
	if w := do(t, h, "GET", "/healthz", ""); w.Code != 200 {
		t.Errorf("healthz %d", w.Code)
	}
	if w := do(t, h, "GET", "/readyz", ""); w.Code != 200 {
		t.Errorf("readyz %d", w.Code)
	}
	do(t, h, "POST", "/v1/images/generations", `{"n":2,"steps":3}`)
	do(t, h, "POST", "/v1/images/generations", `{"n":0}`)
	w := do(t, h, "GET", "/metrics", "")
	body := w.Body.String()
	for _, want := range []string{
		`ddpm_http_requests_total{code="200",method="POST",route="/v1/images/generations"} 1`,
		`ddpm_http_requests_total{code="422",method="POST",route="/v1/images/generations"} 1`,
		`ddpm_http_request_duration_seconds_bucket{route="/v1/images/generations"`,
		`ddpm_images_generated_total 2`,
		`ddpm_denoising_steps_total 3`,
		`ddpm_image_denoising_steps_total 6`,
		`ddpm_queue_depth 0`,
		`ddpm_device_info{device="fake",model="fake"} 1`,
		`ddpm_jobs_total{state="succeeded"} 1`,
		`ddpm_ready 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestWebPage(t *testing.T) {
	s := newTest(t, nil, Options{APIKey: "k"})
	w := do(t, s.Handler(), "GET", "/", "")
	if w.Code != 200 || !strings.Contains(w.Body.String(), "/v1/jobs") || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") {
		t.Errorf("page: %d %q", w.Code, w.Header().Get("Content-Type"))
	}
}

func TestAuth(t *testing.T) {
	s := newTest(t, nil, Options{APIKey: "s3cret"})
	h := s.Handler()
	tests := []struct {
		name, method, path, auth string
		status                   int
	}{
		{"health open", "GET", "/healthz", "", 200},
		{"ready open", "GET", "/readyz", "", 200},
		{"page open", "GET", "/", "", 200},
		{"models missing", "GET", "/v1/models", "", 401},
		{"models wrong", "GET", "/v1/models", "Bearer nope", 401},
		{"models prefix", "GET", "/v1/models", "Bearer s3cre", 401},
		{"models basic", "GET", "/v1/models", "Basic s3cret", 401},
		{"metrics missing", "GET", "/metrics", "", 401},
		{"models right", "GET", "/v1/models", "Bearer s3cret", 200},
		{"scheme lower case", "GET", "/v1/models", "bearer s3cret", 200},
		{"scheme upper case", "GET", "/v1/models", "BEARER s3cret", 200},
		{"extra spaces", "GET", "/v1/models", "  Bearer   s3cret ", 200},
		{"no space", "GET", "/v1/models", "Bearers3cret", 401},
		{"scheme only", "GET", "/v1/models", "Bearer", 401},
		{"head right", "HEAD", "/v1/models", "bearer s3cret", 200},
		{"metrics right", "GET", "/metrics", "Bearer s3cret", 200},
		{"generate missing", "POST", "/v1/images/generations", "", 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := do(t, h, tc.method, tc.path, `{"steps":1}`, "Authorization", tc.auth)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d", w.Code, tc.status)
			}
			if tc.status == 401 {
				if e := apiErr(t, w); e.Type != TypeAuthentication {
					t.Errorf("type %q", e.Type)
				}
				if w.Header().Get("WWW-Authenticate") == "" {
					t.Error("no WWW-Authenticate header")
				}
			}
		})
	}
}

// slowFake is a fake whose steps take d each, reporting each call's batch
// size on calls.
func slowFake(d time.Duration) (*FakeGenerator, chan int) {
	f := NewFakeGenerator(8, 1, digits)
	f.StepDelay = d
	f.Calls = make(chan int, 64)
	return f, f.Calls
}

func TestJobLifecycle(t *testing.T) {
	f, calls := slowFake(2 * time.Millisecond)
	s := newTest(t, f, Options{})
	h := s.Handler()
	w := do(t, h, "POST", "/v1/jobs", `{"n":2,"steps":5,"seed":9,"class_label":3}`)
	if w.Code != http.StatusAccepted {
		t.Fatalf("create: %d %s", w.Code, w.Body)
	}
	var st JobStatus
	json.Unmarshal(w.Body.Bytes(), &st)
	if !strings.HasPrefix(st.ID, "job_") || st.TotalSteps != 5 || w.Header().Get("Location") != "/v1/jobs/"+st.ID {
		t.Fatalf("job %+v, Location %q", st, w.Header().Get("Location"))
	}
	<-calls
	// Long poll: returns when the job is final.
	w = do(t, h, "GET", "/v1/jobs/"+st.ID+"?wait=10", "")
	st = JobStatus{}
	json.Unmarshal(w.Body.Bytes(), &st)
	deadline := time.Now().Add(5 * time.Second)
	for st.State != StateSucceeded {
		if time.Now().After(deadline) || st.State.final() {
			t.Fatalf("job state %q", st.State)
		}
		time.Sleep(5 * time.Millisecond)
		w = do(t, h, "GET", "/v1/jobs/"+st.ID, "")
		st = JobStatus{}
		json.Unmarshal(w.Body.Bytes(), &st)
	}
	if st.Step != 5 || st.Result == nil || len(st.Result.Data) != 2 || *st.Result.Data[0].ClassLabel != 3 || st.Result.Data[1].Seed != 10 {
		t.Fatalf("finished job %+v", st)
	}
	// DELETE of a finished job leaves it succeeded.
	w = do(t, h, "DELETE", "/v1/jobs/"+st.ID, "")
	json.Unmarshal(w.Body.Bytes(), &st)
	if w.Code != 200 || st.State != StateSucceeded {
		t.Errorf("delete finished: %d %s", w.Code, st.State)
	}
}

// TestJobCountsUpsampleSteps: a generator with an upsampling stage
// (ModelInfo.UpsampleSteps, ddpm serve --upsample) has its steps counted
// in a job's total_steps, once per batch, and a finished job's step
// reaches that total.
func TestJobCountsUpsampleSteps(t *testing.T) {
	f, _ := slowFake(time.Millisecond)
	f.Model.UpsampleSteps = 3
	h := newTest(t, f, Options{MaxBatch: 1}).Handler()
	w := do(t, h, "POST", "/v1/jobs", `{"n":2,"steps":5,"seed":9}`)
	var st JobStatus
	if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil || w.Code != http.StatusAccepted || st.TotalSteps != 2*(5+3) {
		t.Fatalf("create: %d %s: want total_steps 16 (2 batches of 5 denoising and 3 upsampling steps)", w.Code, w.Body)
	}
	w = do(t, h, "GET", "/v1/jobs/"+st.ID+"?wait=10", "")
	st = JobStatus{}
	if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil || st.State != StateSucceeded || st.Step != 16 || st.TotalSteps != 16 {
		t.Errorf("finished job: %s; want succeeded at step 16 of 16", w.Body)
	}
}

func TestJobCancelAndQueuePosition(t *testing.T) {
	f, calls := slowFake(20 * time.Millisecond)
	s := newTest(t, f, Options{MaxBatch: 1})
	h := s.Handler()
	create := func(body string) JobStatus {
		w := do(t, h, "POST", "/v1/jobs", body)
		var st JobStatus
		json.Unmarshal(w.Body.Bytes(), &st)
		if w.Code != 202 {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
		return st
	}
	a := create(`{"steps":1000}`)
	<-calls // a runs
	b := create(`{"steps":1000}`)
	c := create(`{"steps":1000}`)
	if b.QueuePosition == nil || *b.QueuePosition != 0 || c.QueuePosition == nil || *c.QueuePosition != 1 {
		t.Fatalf("queue positions %v %v", b.QueuePosition, c.QueuePosition)
	}
	for _, id := range []string{b.ID, a.ID} { // queued, then running
		w := do(t, h, "DELETE", "/v1/jobs/"+id, "")
		var st JobStatus
		json.Unmarshal(w.Body.Bytes(), &st)
		if w.Code != 200 || st.State != StateCancelled || st.Error == nil {
			t.Fatalf("delete %s: %d %+v", id, w.Code, st)
		}
	}
	// c moves up and runs alone.
	if n := <-calls; n != 1 {
		t.Errorf("batch of %d", n)
	}
	w := do(t, h, "GET", "/v1/jobs/"+c.ID, "")
	var st JobStatus
	json.Unmarshal(w.Body.Bytes(), &st)
	if st.State != StateRunning {
		t.Errorf("c is %s", st.State)
	}
}

func TestEvents(t *testing.T) {
	f, _ := slowFake(time.Millisecond)
	s := newTest(t, f, Options{})
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	w := do(t, s.Handler(), "POST", "/v1/jobs", `{"steps":20,"n":3}`)
	var st JobStatus
	json.Unmarshal(w.Body.Bytes(), &st)
	resp, err := http.Get(ts.URL + "/v1/jobs/" + st.ID + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	var names []string
	var last JobStatus
	lastStep := -1
	for sc.Scan() {
		line := sc.Text()
		if n, ok := strings.CutPrefix(line, "event: "); ok {
			names = append(names, n)
		}
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			last = JobStatus{}
			if err := json.Unmarshal([]byte(d), &last); err != nil {
				t.Fatal(err)
			}
			if last.Step < lastStep {
				t.Errorf("step went back from %d to %d", lastStep, last.Step)
			}
			lastStep = last.Step
		}
	}
	if len(names) < 2 || names[len(names)-1] != "done" || last.State != StateSucceeded || last.Step != 20 || last.Result != nil {
		t.Errorf("events %v, last %+v", names, last)
	}
}

func TestDynamicBatching(t *testing.T) {
	f, calls := slowFake(5 * time.Millisecond)
	s := newTest(t, f, Options{MaxBatch: 4})
	h := s.Handler()
	var wg sync.WaitGroup
	post := func(body string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if w := do(t, h, "POST", "/v1/images/generations", body); w.Code != 200 {
				t.Errorf("%s: %d %s", body, w.Code, w.Body)
			}
		}()
	}
	// A job occupies the worker until every other request is queued.
	var blocker JobStatus
	json.Unmarshal(do(t, h, "POST", "/v1/jobs", `{"steps":1000}`).Body.Bytes(), &blocker)
	if n := <-calls; n != 1 {
		t.Fatalf("first batch %d", n)
	}
	// While it runs: 5 compatible images (one request of n=2), and one
	// request with other settings.
	post(`{"steps":4,"seed":1}`)
	waitQueue(t, s, 1)
	post(`{"steps":4,"seed":2,"n":2}`)
	waitQueue(t, s, 2)
	post(`{"steps":3}`)
	waitQueue(t, s, 3)
	post(`{"steps":4,"seed":3}`)
	waitQueue(t, s, 4)
	post(`{"steps":4,"seed":4}`)
	waitQueue(t, s, 5)
	do(t, h, "DELETE", "/v1/jobs/"+blocker.ID, "")
	wg.Wait()
	var got []int
	for len(calls) > 0 {
		got = append(got, <-calls)
	}
	// steps=4 jobs: 1+2+1 fill the batch of 4, then steps=3 (older than the
	// last steps=4 job) runs alone, then the last steps=4 job.
	want := []int{4, 1, 1}
	if len(got) != len(want) {
		t.Fatalf("batches %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("batches %v, want %v", got, want)
		}
	}
}

// waitQueue waits until n requests are queued.
func waitQueue(t *testing.T, s *Server, n int) {
	t.Helper()
	for i := 0; s.queueLen() != n; i++ {
		if i > 5000 {
			t.Fatalf("queue length %d, want %d", s.queueLen(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestChunkedJob(t *testing.T) {
	f, calls := slowFake(0)
	s := newTest(t, f, Options{MaxBatch: 2})
	w := do(t, s.Handler(), "POST", "/v1/images/generations", `{"n":5,"steps":2,"seed":0}`)
	r := decodeImages(t, w.Body.Bytes())
	if len(r.Data) != 5 || len(calls) != 3 {
		t.Fatalf("%d images in %d batches", len(r.Data), len(calls))
	}
	for i, d := range r.Data {
		if d.Seed != int64(i) {
			t.Errorf("image %d seed %d", i, d.Seed)
		}
	}
}

func TestQueueFull(t *testing.T) {
	f, calls := slowFake(10 * time.Millisecond)
	s := newTest(t, f, Options{QueueSize: 1, MaxBatch: 1})
	h := s.Handler()
	a := do(t, h, "POST", "/v1/jobs", `{"steps":1000}`)
	<-calls
	b := do(t, h, "POST", "/v1/jobs", `{"steps":1000}`)
	c := do(t, h, "POST", "/v1/jobs", `{"steps":1000}`)
	if a.Code != 202 || b.Code != 202 || c.Code != 429 {
		t.Fatalf("codes %d %d %d", a.Code, b.Code, c.Code)
	}
	if e := apiErr(t, c); e.Type != TypeRateLimit {
		t.Errorf("type %s", e.Type)
	}
	if ra := c.Header().Get("Retry-After"); ra == "" || ra == "0" {
		t.Errorf("Retry-After %q", ra)
	}
	w := do(t, h, "POST", "/v1/images/generations", `{"steps":1}`)
	if w.Code != 429 {
		t.Errorf("sync: %d", w.Code)
	}
}

func TestTimeout(t *testing.T) {
	f, _ := slowFake(10 * time.Millisecond)
	s := newTest(t, f, Options{Timeout: 50 * time.Millisecond})
	w := do(t, s.Handler(), "POST", "/v1/images/generations", `{"steps":1000}`)
	if w.Code != http.StatusGatewayTimeout {
		t.Fatalf("status %d %s", w.Code, w.Body)
	}
	if e := apiErr(t, w); e.Type != TypeTimeout {
		t.Errorf("type %s", e.Type)
	}
	// The worker is free again.
	if w := do(t, s.Handler(), "POST", "/v1/images/generations", `{"steps":1}`); w.Code != 200 {
		t.Errorf("after timeout: %d", w.Code)
	}
}

func TestGeneratorFailure(t *testing.T) {
	f := NewFakeGenerator(8, 1, nil)
	f.Fail = errors.New("device lost")
	s := newTest(t, f, Options{})
	w := do(t, s.Handler(), "POST", "/v1/images/generations", `{"steps":1}`)
	if w.Code != 500 || strings.Contains(w.Body.String(), "device lost") {
		t.Fatalf("status %d %s", w.Code, w.Body)
	}
	if e := apiErr(t, w); e.Type != TypeServer {
		t.Errorf("type %s", e.Type)
	}
}

type panicGen struct{ *FakeGenerator }

func (p panicGen) Generate(context.Context, Settings, []Item, func(int, int)) ([]image.Image, error) {
	panic("boom")
}

func TestGeneratorPanic(t *testing.T) {
	s := newTest(t, panicGen{NewFakeGenerator(8, 1, nil)}, Options{})
	for range 2 { // the worker survives
		if w := do(t, s.Handler(), "POST", "/v1/images/generations", `{"steps":1}`); w.Code != 500 {
			t.Fatalf("status %d", w.Code)
		}
	}
}

func TestRecoverMiddleware(t *testing.T) {
	s := newTest(t, nil, Options{})
	s.e.GET("/panic", func(c echo.Context) error { panic("handler bug") })
	w := do(t, s.Handler(), "GET", "/panic", "")
	if w.Code != 500 {
		t.Fatalf("status %d", w.Code)
	}
	if e := apiErr(t, w); e.Type != TypeServer || strings.Contains(w.Body.String(), "handler bug") {
		t.Errorf("body %s", w.Body)
	}
}

// TestClientDisconnect: a client that goes away leaves its batch; the other
// request of the same batch still gets its image.
func TestClientDisconnect(t *testing.T) {
	f, calls := slowFake(2 * time.Millisecond)
	s := newTest(t, f, Options{MaxBatch: 4})
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	blocker := do(t, s.Handler(), "POST", "/v1/jobs", `{"steps":1000}`)
	if blocker.Code != 202 {
		t.Fatal(blocker.Code)
	}
	var bj JobStatus
	json.Unmarshal(blocker.Body.Bytes(), &bj)
	<-calls
	ctx, cancel := context.WithCancel(context.Background())
	gone := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "POST", ts.URL+"/v1/images/generations", strings.NewReader(`{"steps":200}`))
		req.Header.Set("Content-Type", "application/json")
		_, err := http.DefaultClient.Do(req)
		gone <- err
	}()
	waitQueue(t, s, 1)
	stay := make(chan *httptest.ResponseRecorder, 1)
	go func() { stay <- do(t, s.Handler(), "POST", "/v1/images/generations", `{"steps":200}`) }()
	waitQueue(t, s, 2)
	do(t, s.Handler(), "DELETE", "/v1/jobs/"+bj.ID, "")
	if n := <-calls; n != 2 {
		t.Fatalf("batch of %d, want 2", n)
	}
	time.Sleep(20 * time.Millisecond)
	cancel()
	if err := <-gone; err == nil {
		t.Error("cancelled request succeeded")
	}
	w := <-stay
	if w.Code != 200 {
		t.Fatalf("the other request: %d %s", w.Code, w.Body)
	}
	if r := decodeImages(t, w.Body.Bytes()); len(r.Data) != 1 {
		t.Errorf("%d images", len(r.Data))
	}
	m := do(t, s.Handler(), "GET", "/metrics", "").Body.String()
	if !strings.Contains(m, `ddpm_jobs_total{state="cancelled"} 2`) { // the blocker and the client that left
		t.Errorf("no cancelled job in metrics")
	}
}

// TestAllClientsGoneStopsBatch: when every request of a batch goes away,
// the batch stops and the worker takes the next one.
func TestAllClientsGoneStopsBatch(t *testing.T) {
	f, calls := slowFake(5 * time.Millisecond)
	s := newTest(t, f, Options{})
	w := do(t, s.Handler(), "POST", "/v1/jobs", `{"steps":1000}`)
	var st JobStatus
	json.Unmarshal(w.Body.Bytes(), &st)
	<-calls
	do(t, s.Handler(), "DELETE", "/v1/jobs/"+st.ID, "")
	start := time.Now()
	if w := do(t, s.Handler(), "POST", "/v1/images/generations", `{"steps":2}`); w.Code != 200 {
		t.Fatal(w.Code)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("next request waited %v: the abandoned batch kept running", d)
	}
}

func TestDrain(t *testing.T) {
	f, calls := slowFake(5 * time.Millisecond)
	s := newTest(t, f, Options{})
	h := s.Handler()
	w := do(t, h, "POST", "/v1/jobs", `{"steps":10}`)
	var st JobStatus
	json.Unmarshal(w.Body.Bytes(), &st)
	<-calls
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	for s.Ready() {
		time.Sleep(time.Millisecond)
	}
	if w := do(t, h, "GET", "/readyz", ""); w.Code != 503 {
		t.Errorf("readyz while draining: %d", w.Code)
	}
	if w := do(t, h, "GET", "/healthz", ""); w.Code != 200 {
		t.Errorf("healthz while draining: %d", w.Code)
	}
	for _, p := range []string{"/v1/jobs", "/v1/images/generations", "/v1/generate"} {
		w := do(t, h, "POST", p, `{"steps":1}`)
		if w.Code != 503 || w.Header().Get("Retry-After") == "" {
			t.Errorf("%s while draining: %d", p, w.Code)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	w = do(t, h, "GET", "/v1/jobs/"+st.ID, "")
	json.Unmarshal(w.Body.Bytes(), &st)
	if st.State != StateSucceeded {
		t.Errorf("running job %s after drain", st.State)
	}
}

func TestDrainDeadlineCancels(t *testing.T) {
	f, calls := slowFake(5 * time.Millisecond)
	s := newTest(t, f, Options{})
	w := do(t, s.Handler(), "POST", "/v1/jobs", `{"steps":1000}`)
	var st JobStatus
	json.Unmarshal(w.Body.Bytes(), &st)
	<-calls
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("shutdown: %v", err)
	}
	w = do(t, s.Handler(), "GET", "/v1/jobs/"+st.ID, "")
	json.Unmarshal(w.Body.Bytes(), &st)
	if st.State != StateCancelled || st.Error == nil || !strings.Contains(st.Error.Message, "shutting down") {
		t.Errorf("job after deadline: %+v", st)
	}
}

// TestServeLoopback starts the real server on a random loopback port,
// generates, then stops it as SIGTERM would and checks it drains cleanly.
func TestServeLoopback(t *testing.T) {
	f, _ := slowFake(time.Millisecond)
	s, err := New(f, Options{APIKey: "k", DrainTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln) }()
	base := "http://" + ln.Addr().String()

	// A job in flight when the stop comes still finishes.
	req, _ := http.NewRequest("POST", base+"/v1/images/generations", strings.NewReader(`{"n":2,"steps":50}`))
	req.Header.Set("Authorization", "Bearer k")
	req.Header.Set("Content-Type", "application/json")
	got := make(chan int, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			got <- -1
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got <- resp.StatusCode
	}()
	for s.queueLen() == 0 && len(got) == 0 {
		s.sched.mu.Lock()
		r := s.sched.running
		s.sched.mu.Unlock()
		if r > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	stop()
	if code := <-got; code != 200 {
		t.Errorf("in-flight request: %d", code)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return")
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("still listening after shutdown")
	}
}

// TestBatchWindow: an idle worker with a batch window waits for more
// requests before it starts, so two requests 10 ms apart share a batch.
func TestBatchWindow(t *testing.T) {
	f, calls := slowFake(0)
	s := newTest(t, f, Options{BatchWindow: time.Second})
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if w := do(t, s.Handler(), "POST", "/v1/images/generations", `{"steps":2}`); w.Code != 200 {
				t.Errorf("%d", w.Code)
			}
		}()
		if i == 0 {
			waitQueue(t, s, 1)
			time.Sleep(10 * time.Millisecond)
		}
	}
	wg.Wait()
	if n := <-calls; n != 2 {
		t.Errorf("batch of %d, want 2", n)
	}
}
