package server

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// seriesLines counts the lines of a /metrics answer, and those of one
// metric.
func seriesLines(t *testing.T, h http.Handler, metric string, hdr ...string) (all, of int) {
	t.Helper()
	w := do(t, h, "GET", "/metrics", "", hdr...)
	if w.Code != 200 {
		t.Fatalf("/metrics: %d", w.Code)
	}
	for _, l := range strings.Split(w.Body.String(), "\n") {
		all++
		if strings.HasPrefix(l, metric+"{") {
			of++
		}
	}
	return all, of
}

// TestMetricsBoundedLabels: 2,000 requests with made-up methods to
// made-up paths (with and without an API key) add at most a few series:
// every label takes its value from a closed set.
func TestMetricsBoundedLabels(t *testing.T) {
	for _, key := range []string{"", "k"} {
		t.Run("key="+key, func(t *testing.T) {
			s := newTest(t, nil, Options{APIKey: key})
			h := s.Handler()
			auth := []string{"Authorization", "Bearer " + key}
			do(t, h, "GET", "/healthz", "")
			send := func(i int) {
				method := "M" + strconv.Itoa(i)
				path := "/v1/images/generations"
				switch i % 4 {
				case 1:
					path = "/x" + strconv.Itoa(i)
				case 2:
					path = "/v1/jobs/job_" + strconv.Itoa(i) + "/events/more"
				case 3:
					path = "/v1/models/" + strconv.Itoa(i)
				}
				if w := do(t, h, method, path, ""); w.Code >= 500 {
					t.Fatalf("%s %s: %d", method, path, w.Code)
				}
			}
			all0, req0 := seriesLines(t, h, "ddpm_http_requests_total", auth...)
			// The first few made-up requests create the series of the
			// closed set they fall in (method "other"; route "unmatched"
			// or a template and its latency histogram); the rest add none.
			for i := range 4 {
				send(i)
			}
			all1, req1 := seriesLines(t, h, "ddpm_http_requests_total", auth...)
			for i := 4; i < 2000; i++ {
				send(i)
			}
			all2, req2 := seriesLines(t, h, "ddpm_http_requests_total", auth...)
			t.Logf("made-up methods: /metrics %d lines, %d after 4, %d after 2000; ddpm_http_requests_total %d, %d, %d series",
				all0, all1, all2, req0, req1, req2)
			if all2-all1 > 3 || req2 != req1 {
				t.Errorf("requests 5 to 2000 grew /metrics by %d lines, ddpm_http_requests_total by %d series", all2-all1, req2-req1)
			}
			if all2-all0 > 100 {
				t.Errorf("/metrics grew by %d lines in all", all2-all0)
			}
			w := do(t, h, "GET", "/metrics", "", auth...)
			if strings.Contains(w.Body.String(), `method="M1"`) || strings.Contains(w.Body.String(), `route="/x1"`) {
				t.Error("a made-up method or path became a label value")
			}
		})
	}
}

// TestStrictDecoder: keys match exactly (encoding/json alone folds case and
// Unicode: "STEPS" and "ſteps" would be "steps"), the body is an object,
// and a key appears once.
func TestStrictDecoder(t *testing.T) {
	s := newTest(t, nil, Options{})
	tests := []struct {
		name, body, param string
	}{
		{"upper case", `{"STEPS":4}`, "STEPS"},
		{"title case", `{"Steps":4}`, "Steps"},
		{"long s", `{"ſteps":3}`, "ſteps"},
		{"kelvin sign", `{"\u212aey":1}`, "\u212aey"},
		{"null", `null`, ""},
		{"string", `"steps"`, ""},
		{"number", `4`, ""},
		{"bool", `true`, ""},
		{"array of object", `[{"steps":1}]`, ""},
		{"repeated key", `{"steps":1,"steps":2}`, "steps"},
		{"n null then string", `{"n":null,"seed":"1"}`, "seed"},
		{"nested bad type", `{"steps":{"a":1}}`, "steps"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := do(t, s.Handler(), "POST", "/v1/images/generations", tc.body)
			if w.Code != 400 {
				t.Fatalf("status %d, want 400: %s", w.Code, w.Body)
			}
			e := apiErr(t, w)
			got := ""
			if e.Param != nil {
				got = *e.Param
			}
			if got != tc.param {
				t.Errorf("param %q, want %q (%s)", got, tc.param, e.Message)
			}
		})
	}
	// Exact keys and null values still work.
	if w := do(t, s.Handler(), "POST", "/v1/images/generations", `{"steps":1,"n":null,"quality":{"x":[1]}}`); w.Code != 200 {
		t.Errorf("exact keys: %d %s", w.Code, w.Body)
	}
}

// TestRequestFieldsMatchTags: the decoder's key table has exactly the JSON
// names of ImageRequest's fields.
func TestRequestFieldsMatchTags(t *testing.T) {
	var r ImageRequest
	fields := r.fields()
	typ := reflect.TypeOf(r)
	if typ.NumField() != len(fields) {
		t.Errorf("%d struct fields, %d keys", typ.NumField(), len(fields))
	}
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		dst, ok := fields[name]
		if !ok {
			t.Errorf("field %s (json %q) is not in fields()", f.Name, name)
			continue
		}
		if reflect.TypeOf(dst) != reflect.PointerTo(f.Type) {
			t.Errorf("key %q decodes into %T, field %s is %v", name, dst, f.Name, f.Type)
		}
	}
}

// bodySpy fails the test when the body is read.
type bodySpy struct {
	t    *testing.T
	read bool
}

func (b *bodySpy) Read(p []byte) (int, error) {
	b.read = true
	return 0, io.EOF
}

// TestContentType: a POST needs Content-Type application/json (415
// otherwise, the body unread); the charset may only be utf-8.
func TestContentType(t *testing.T) {
	s := newTest(t, nil, Options{})
	tests := []struct {
		ct     string
		status int
	}{
		{"application/json", 200},
		{"application/json; charset=utf-8", 200},
		{"Application/JSON; charset=UTF-8", 200},
		{"", 415},
		{"text/plain", 415},
		{"text/plain;charset=UTF-8", 415},
		{"application/x-www-form-urlencoded", 415},
		{"multipart/form-data; boundary=x", 415},
		{"application/json; charset=latin1", 415},
		{"application/json; foo=bar", 415},
		{"application/jsonx", 415},
		{"application/json;;", 415},
	}
	for _, tc := range tests {
		t.Run(tc.ct, func(t *testing.T) {
			spy := &bodySpy{t: t}
			body := io.Reader(strings.NewReader(`{"steps":1}`))
			if tc.status != 200 {
				body = spy
			}
			req := httptest.NewRequest("POST", "/v1/images/generations", body)
			req.ContentLength = 11
			if tc.ct != "" {
				req.Header.Set("Content-Type", tc.ct)
			}
			w := httptest.NewRecorder()
			s.Handler().ServeHTTP(w, req)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if tc.status == 415 {
				if e := apiErr(t, w); e.Code == nil || *e.Code != "unsupported_media_type" {
					t.Errorf("error %+v", e)
				}
				if spy.read {
					t.Error("the body was read before the 415")
				}
				if w.Header().Get("Connection") != "close" {
					t.Error("no Connection: close after refusing an unread body")
				}
			}
		})
	}
	// Routes without a body need no content type.
	for _, p := range []string{"/v1/models", "/healthz"} {
		req := httptest.NewRequest("GET", p, nil)
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, req)
		if w.Code != 200 {
			t.Errorf("GET %s: %d", p, w.Code)
		}
	}
}

// TestAuthBeforeBody: without a valid key the body is never read.
func TestAuthBeforeBody(t *testing.T) {
	s := newTest(t, nil, Options{APIKey: "k"})
	spy := &bodySpy{t: t}
	req := httptest.NewRequest("POST", "/v1/jobs", spy)
	req.ContentLength = 60000
	req.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, req)
	if w.Code != 401 || spy.read {
		t.Errorf("status %d, body read %v", w.Code, spy.read)
	}
}

// TestCORS: off by default (no Access-Control headers, so browsers keep
// other origins out); with CORSOrigins, listed origins (or "*") get them
// and preflights are answered 204 without a key.
func TestCORS(t *testing.T) {
	preflight := []string{"Origin", "https://app.example", "Access-Control-Request-Method", "POST",
		"Access-Control-Request-Headers", "authorization, content-type"}
	t.Run("off", func(t *testing.T) {
		s := newTest(t, nil, Options{})
		w := do(t, s.Handler(), "POST", "/v1/images/generations", `{"steps":1}`, "Origin", "https://evil.example")
		if w.Code != 200 || w.Header().Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("POST: %d, ACAO %q", w.Code, w.Header().Get("Access-Control-Allow-Origin"))
		}
		w = do(t, s.Handler(), "OPTIONS", "/v1/images/generations", "", preflight...)
		if w.Header().Get("Access-Control-Allow-Origin") != "" || w.Header().Get("Access-Control-Allow-Headers") != "" {
			t.Errorf("preflight answered with CORS headers: %v", w.Header())
		}
	})
	t.Run("listed", func(t *testing.T) {
		origins := []string{"https://APP.example/"}
		s := newTest(t, nil, Options{APIKey: "k", CORSOrigins: origins})
		if origins[0] != "https://APP.example/" {
			t.Errorf("New changed the caller's CORSOrigins to %q", origins[0])
		}
		w := do(t, s.Handler(), "OPTIONS", "/v1/images/generations", "", preflight...)
		if w.Code != 204 || w.Header().Get("Access-Control-Allow-Origin") != "https://app.example" ||
			!strings.Contains(w.Header().Get("Access-Control-Allow-Headers"), "Authorization") ||
			!strings.Contains(w.Header().Get("Access-Control-Allow-Methods"), "POST") {
			t.Errorf("preflight: %d %v", w.Code, w.Header())
		}
		w = do(t, s.Handler(), "GET", "/v1/models", "", "Origin", "https://app.example", "Authorization", "Bearer k")
		if w.Code != 200 || w.Header().Get("Access-Control-Allow-Origin") != "https://app.example" ||
			!strings.Contains(w.Header().Get("Vary"), "Origin") || !strings.Contains(w.Header().Get("Access-Control-Expose-Headers"), "X-DDPM-Seeds") {
			t.Errorf("GET: %d %v", w.Code, w.Header())
		}
		w = do(t, s.Handler(), "OPTIONS", "/v1/images/generations", "", "Origin", "https://evil.example", "Access-Control-Request-Method", "POST")
		if w.Code != 403 || w.Header().Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("preflight from another origin: %d %v", w.Code, w.Header())
		}
		apiErr(t, w)
		w = do(t, s.Handler(), "GET", "/v1/models", "", "Origin", "https://evil.example", "Authorization", "Bearer k")
		if w.Header().Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("another origin got ACAO %q", w.Header().Get("Access-Control-Allow-Origin"))
		}
	})
	t.Run("any", func(t *testing.T) {
		s := newTest(t, nil, Options{CORSOrigins: []string{"*"}})
		w := do(t, s.Handler(), "GET", "/healthz", "", "Origin", "https://x.example")
		if w.Header().Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("ACAO %q", w.Header().Get("Access-Control-Allow-Origin"))
		}
	})
	for _, bad := range []string{"app.example", "ftp://x", "https://x/path", "https://", "https://u@x"} {
		if _, err := New(NewFakeGenerator(8, 1, nil), Options{CORSOrigins: []string{bad}}); err == nil {
			t.Errorf("CORS origin %q accepted", bad)
		}
	}
}

// TestClientIP: X-Forwarded-For and X-Real-IP count only from trusted
// proxies; the access log's remote= shows the result.
func TestClientIP(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}
	tests := []struct {
		name    string
		trusted []netip.Prefix
		peer    string
		xff     []string
		realIP  string
		want    string
	}{
		{"no proxies: XFF ignored", nil, "192.0.2.1:1234", []string{"203.0.113.9"}, "", "192.0.2.1"},
		{"no proxies: X-Real-IP ignored", nil, "192.0.2.1:1234", nil, "203.0.113.9", "192.0.2.1"},
		{"untrusted peer", trusted, "192.0.2.1:1234", []string{"203.0.113.9"}, "203.0.113.8", "192.0.2.1"},
		{"trusted peer", trusted, "10.1.2.3:80", []string{"203.0.113.9"}, "", "203.0.113.9"},
		{"chain of proxies", trusted, "10.1.2.3:80", []string{"198.51.100.1, 203.0.113.9, 10.9.9.9"}, "", "203.0.113.9"},
		{"spoofed left entries", trusted, "10.1.2.3:80", []string{"1.1.1.1", "203.0.113.9"}, "", "203.0.113.9"},
		{"all trusted", trusted, "10.1.2.3:80", []string{"10.0.0.7"}, "", "10.0.0.7"},
		{"garbage stops", trusted, "10.1.2.3:80", []string{"203.0.113.9, nonsense, 10.0.0.7"}, "", "10.0.0.7"},
		{"real ip", trusted, "10.1.2.3:80", nil, "203.0.113.9", "203.0.113.9"},
		{"bad real ip", trusted, "10.1.2.3:80", nil, "x", "10.1.2.3"},
		{"ipv6 peer", trusted, "[2001:db8::1]:80", []string{"2001:db8::2, 2a00::5"}, "", "2a00::5"},
		{"mapped peer", trusted, "[::ffff:10.1.2.3]:80", []string{"203.0.113.9"}, "", "203.0.113.9"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var log bytes.Buffer
			s := newTest(t, nil, Options{TrustedProxies: tc.trusted, Logger: slog.New(slog.NewTextHandler(&log, nil))})
			req := httptest.NewRequest("GET", "/v1/models", nil)
			req.RemoteAddr = tc.peer
			for _, v := range tc.xff {
				req.Header.Add("X-Forwarded-For", v)
			}
			if tc.realIP != "" {
				req.Header.Set("X-Real-IP", tc.realIP)
			}
			if got := s.clientIP(req); got != tc.want {
				t.Errorf("clientIP %q, want %q", got, tc.want)
			}
			s.Handler().ServeHTTP(httptest.NewRecorder(), req)
			if !strings.Contains(log.String(), "remote="+tc.want+"\n") {
				t.Errorf("access log %q, want remote=%s", log.String(), tc.want)
			}
		})
	}
	for _, in := range []string{"10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::1"} {
		if _, err := ParseTrustedProxy(in); err != nil {
			t.Errorf("ParseTrustedProxy(%q): %v", in, err)
		}
	}
	if p, _ := ParseTrustedProxy("10.1.2.3/8"); p.String() != "10.0.0.0/8" {
		t.Errorf("not masked: %v", p)
	}
	if _, err := ParseTrustedProxy("10.0.0.0/33"); err == nil {
		t.Error("accepted /33")
	}
}

// TestHEAD: every GET route answers HEAD (with no body); POST routes do not.
func TestHEAD(t *testing.T) {
	s := newTest(t, nil, Options{})
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	var st JobStatus
	json.Unmarshal(do(t, s.Handler(), "POST", "/v1/jobs", `{"steps":1}`).Body.Bytes(), &st)
	for path, want := range map[string]int{
		"/healthz": 200, "/readyz": 200, "/metrics": 200, "/v1/models": 200, "/v1/models/fake": 200, "/": 200,
		"/v1/jobs/" + st.ID: 200, "/v1/jobs/" + st.ID + "/events": 200, "/v1/jobs/nope": 404, "/v1/models/gpt": 404,
		"/v1/images/generations": 405, "/nothing": 404,
	} {
		resp, err := http.Head(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || len(b) != 0 {
			t.Errorf("HEAD %s: %d with %d body bytes, want %d", path, resp.StatusCode, len(b), want)
		}
	}
}

// TestErrorMessagesWhole: a long user value is cut in the message, never
// the server's own text around it.
func TestErrorMessagesWhole(t *testing.T) {
	s := newTest(t, nil, Options{})
	long := strings.Repeat("é", 60) // 120 bytes; cut at a rune boundary
	tests := []struct {
		body, tail string
	}{
		{`{"sampler":"` + long + `"}`, `: allowed values are "ddpm", "ddim", "pndm", "dpm++2m", "dpm++3m", "dpm++2m-sde", "dpm++2s", "unipc", "deis", "euler", "euler-a", "heun", "dpm2", "lms"`},
		{`{"sampler":"ddpmxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`, `: allowed values are "ddpm", "ddim", "pndm", "dpm++2m", "dpm++3m", "dpm++2m-sde", "dpm++2s", "unipc", "deis", "euler", "euler-a", "heun", "dpm2", "lms"`},
		{`{"model":"` + long + `"}`, `; this server has "fake" (or use "default")`},
		{`{"size":"` + long + `"}`, `: this model makes 8x8 images only (or use "auto")`},
		{`{"response_format":"` + long + `"}`, `: the only allowed value is "b64_json"`},
		{`{"` + long + `":1}`, `; allowed: ` + allowedFields},
	}
	for _, tc := range tests {
		w := do(t, s.Handler(), "POST", "/v1/images/generations", tc.body)
		e := apiErr(t, w)
		if !strings.HasSuffix(e.Message, tc.tail) || !strings.Contains(e.Message, `..."`) || len(e.Message) > 300 {
			t.Errorf("%.40s: message %q, want the user value cut and ending %q", tc.body, e.Message, tc.tail)
		}
		if !json.Valid(w.Body.Bytes()) || strings.ContainsRune(e.Message, '\uFFFD') {
			t.Errorf("message %q cut inside a rune", e.Message)
		}
	}
}

// TestClassSource: each image of a class-conditional model says where its
// class came from; a prompt naming no class is accepted with a random
// class, reported as such.
func TestClassSource(t *testing.T) {
	s := newTest(t, nil, Options{})
	uncond := newTest(t, NewFakeGenerator(8, 1, nil), Options{})
	tests := []struct {
		name string
		s    *Server
		body string
		want string
	}{
		{"class_label", s, `{"class_label":3}`, ClassFromLabel},
		{"class_label beats prompt", s, `{"class_label":3,"prompt":"seven"}`, ClassFromLabel},
		{"random class_label", s, `{"class_label":-1,"prompt":"seven"}`, ClassRandom},
		{"prompt", s, `{"prompt":"a seven"}`, ClassFromPrompt},
		{"prompt names no class", s, `{"prompt":"a cat"}`, ClassRandom},
		{"no prompt", s, `{}`, ClassRandom},
		{"unconditional", uncond, `{"prompt":"seven"}`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := strings.TrimSuffix(tc.body, "}")
			if body != "{" {
				body += ","
			}
			body += `"steps":1,"n":2}`
			r := decodeImages(t, do(t, tc.s.Handler(), "POST", "/v1/images/generations", body).Body.Bytes())
			for _, d := range r.Data {
				if d.ClassSource != tc.want || (tc.want == "") != (d.ClassLabel == nil) {
					t.Errorf("class %v source %q, want source %q", d.ClassLabel, d.ClassSource, tc.want)
				}
			}
			w := do(t, tc.s.Handler(), "POST", "/v1/generate", body)
			if got := w.Header().Get("X-DDPM-Class-Source"); got != tc.want {
				t.Errorf("X-DDPM-Class-Source %q, want %q", got, tc.want)
			}
			if tc.want != "" && strings.Count(w.Header().Get("X-DDPM-Classes"), ",") != 1 {
				t.Errorf("X-DDPM-Classes %q", w.Header().Get("X-DDPM-Classes"))
			}
		})
	}
}
