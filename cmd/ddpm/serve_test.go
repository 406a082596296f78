package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddpm-go/ddpm/pipeline"
	"github.com/ddpm-go/ddpm/server"
	"github.com/ddpm-go/ddpm/weights"
)

func TestParseServe(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		env   string
		ok    bool
		check func(serveOptions) bool
	}{
		{"defaults", nil, "", true, func(o serveOptions) bool {
			return o.addr == ":8080" && o.server.MaxBatch == 8 && o.server.QueueSize == 64 && o.device == "auto" && o.server.APIKey == ""
		}},
		{"flags", []string{"--addr", "127.0.0.1:0", "--max-batch", "3", "--queue", "5", "--timeout", "7s", "--api-key", "k", "--device", "cpu"}, "", true,
			func(o serveOptions) bool {
				return o.addr == "127.0.0.1:0" && o.server.MaxBatch == 3 && o.server.QueueSize == 5 && o.server.Timeout == 7*time.Second &&
					o.server.APIKey == "k" && o.device == "cpu"
			}},
		{"connection flags", []string{"--header-timeout", "2s", "--body-timeout", "3s", "--idle-timeout", "4s", "--write-timeout", "5s",
			"--max-conns", "100", "--max-conns-per-client", "-1"}, "", true, func(o serveOptions) bool {
			s := o.server
			return s.HeaderTimeout == 2*time.Second && s.BodyTimeout == 3*time.Second && s.IdleTimeout == 4*time.Second &&
				s.WriteTimeout == 5*time.Second && s.MaxConns == 100 && s.MaxConnsPerClient == -1
		}},
		{"connection defaults", nil, "", true, func(o serveOptions) bool {
			s := o.server
			return s.HeaderTimeout == 10*time.Second && s.BodyTimeout == 30*time.Second && s.IdleTimeout == time.Minute &&
				s.WriteTimeout == time.Minute && s.MaxConns == 1024 && s.MaxConnsPerClient == 256 &&
				len(s.TrustedProxies) == 0 && len(s.CORSOrigins) == 0
		}},
		{"repeated proxies and origins", []string{"--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", "192.0.2.7", "--trusted-proxy", "fd00::/8",
			"--cors-origin", "https://App.example.com", "--cors-origin", "*"}, "", true, func(o serveOptions) bool {
			p, c := o.server.TrustedProxies, o.server.CORSOrigins
			return len(p) == 3 && p[0].String() == "10.0.0.0/8" && p[1].String() == "192.0.2.7/32" && p[2].String() == "fd00::/8" &&
				len(c) == 2 && c[0] == "https://app.example.com" && c[1] == "*"
		}},
		{"bad proxy", []string{"--trusted-proxy", "10.0.0.0/40"}, "", false, nil},
		{"bad origin", []string{"--cors-origin", "app.example.com"}, "", false, nil},
		{"origin with path", []string{"--cors-origin", "https://app.example.com/x"}, "", false, nil},
		{"negative body timeout", []string{"--body-timeout", "-1s"}, "", false, nil},
		{"zero max conns", []string{"--max-conns", "0"}, "", false, nil},
		{"env key", nil, "fromenv", true, func(o serveOptions) bool { return o.server.APIKey == "fromenv" }},
		{"flag beats env", []string{"--api-key", "flag"}, "fromenv", true, func(o serveOptions) bool { return o.server.APIKey == "flag" }},
		{"bad device", []string{"--device", "tpu"}, "", false, nil},
		{"bad duration", []string{"--timeout", "soon"}, "", false, nil},
		{"extra arg", []string{"model.bin"}, "", false, nil},
		{"fake and model", []string{"--test-fake-model", "--model", "x"}, "", false, nil},
		{"cluster defaults", []string{"--redis", "redis://h:6379/1"}, "", true, func(o serveOptions) bool {
			c := o.cluster
			return c.RedisURL == "redis://h:6379/1" && c.Role == server.RoleAll && c.ResultTTL == time.Hour &&
				c.ClaimIdle == 30*time.Second && c.MaxAttempts == 3 && c.Prefix == "ddpm:"
		}},
		{"cluster flags", []string{"--redis", "rediss://:pw@h:6380/0", "--role", "worker", "--result-ttl", "2h", "--claim-idle", "5s",
			"--max-attempts", "5", "--redis-prefix", "x:"}, "", true, func(o serveOptions) bool {
			c := o.cluster
			return c.Role == server.RoleWorker && c.ResultTTL == 2*time.Hour && c.ClaimIdle == 5*time.Second && c.MaxAttempts == 5 && c.Prefix == "x:"
		}},
		{"role without redis", []string{"--role", "api"}, "", false, nil},
		{"bad role", []string{"--redis", "redis://h:1/0", "--role", "gpu"}, "", false, nil},
		{"bad redis url", []string{"--redis", "http://h:1/0"}, "", false, nil},
		{"bad claim idle", []string{"--redis", "redis://h:1/0", "--claim-idle", "1ms"}, "", false, nil},
		{"bad attempts", []string{"--redis", "redis://h:1/0", "--max-attempts", "0"}, "", false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("DDPM_API_KEY", tc.env)
			t.Setenv("DDPM_REDIS_URL", "")
			o, err := parseServe(tc.args, io.Discard)
			if (err == nil) != tc.ok {
				t.Fatalf("err %v", err)
			}
			if err != nil {
				var u usageError
				if !errors.As(err, &u) {
					t.Errorf("%v is not a usage error", err)
				}
				return
			}
			if !tc.check(o) {
				t.Errorf("options %+v", o)
			}
		})
	}
}

func TestServeRedisURLFromEnv(t *testing.T) {
	t.Setenv("DDPM_REDIS_URL", "redis://env:6379/2")
	o, err := parseServe([]string{"--role", "api"}, io.Discard)
	if err != nil || o.cluster.RedisURL != "redis://env:6379/2" || o.cluster.Role != server.RoleAPI {
		t.Fatalf("%+v %v", o.cluster, err)
	}
	o, err = parseServe([]string{"--redis", "redis://flag:1/0"}, io.Discard)
	if err != nil || o.cluster.RedisURL != "redis://flag:1/0" {
		t.Fatalf("flag beats env: %+v %v", o.cluster, err)
	}
	if got := redactURL("rediss://user:secret@h:6380/0"); strings.Contains(got, "secret") {
		t.Errorf("redactURL kept the password: %s", got)
	}
}

func TestServeHelpHidesTestFlags(t *testing.T) {
	var buf bytes.Buffer
	parseServe([]string{"-h"}, &buf)
	if !strings.Contains(buf.String(), "-max-batch") || strings.Contains(buf.String(), "test-fake") {
		t.Errorf("help:\n%s", buf.String())
	}
}

// TestServeEndToEnd builds the real binary, starts "ddpm serve" on a
// loopback port with the test-only fake generator, generates with curl and
// stops it with SIGTERM, expecting a clean drain and exit status 0.
func TestServeEndToEnd(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed")
	}
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	bin := buildDDPM(t)
	t.Run("real model", func(t *testing.T) {
		// A tiny random class-conditional UNet (8x8, classes "a" and "b").
		serveE2E(t, bin, curl, 8, "b", 1, "--model", tinyModelFile(t), "--device", "cpu")
	})
	t.Run("test-only fake", func(t *testing.T) {
		serveE2E(t, bin, curl, 32, "seven", 7, "--test-fake-model", "--test-fake-step-delay", "1ms")
	})
}

// serveE2E runs "ddpm serve" with extra args on a loopback port and checks
// /v1/generate, /v1/images/generations (prompt naming a class), the API key
// and the SIGTERM drain with curl. size is the model's image size.
func serveE2E(t *testing.T, bin, curl string, size int, prompt string, class int, extra ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"serve", "--addr", "127.0.0.1:0", "--api-key", "e2e-key",
		"--drain-timeout", "10s"}, extra...)...)
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(stdout)
	var base string
	for sc.Scan() {
		if _, rest, ok := strings.Cut(sc.Text(), "listening on "); ok {
			base = strings.Fields(rest)[0]
			break
		}
	}
	if base == "" {
		t.Fatalf("no listening line; stderr:\n%s", stderr.String())
	}
	lines := make(chan string, 16)
	go func() {
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	run := func(args ...string) []byte {
		t.Helper()
		out, err := exec.CommandContext(ctx, curl, append([]string{"-sS", "--fail-with-body", "-H", "Authorization: Bearer e2e-key"}, args...)...).Output()
		if err != nil {
			t.Fatalf("curl %v: %v\n%s", args, err, out)
		}
		return out
	}
	// PNG grid for curl users.
	grid := run("-H", "Content-Type: application/json", "-d", `{"n":4,"steps":5,"seed":1}`, base+"/v1/generate")
	img, err := png.Decode(bytes.NewReader(grid))
	if err != nil {
		t.Fatalf("/v1/generate: %v", err)
	}
	// img.DefaultGrid: 2 black pixels around and between the images.
	if b, want := img.Bounds(), 2*size+3*2; b.Dx() != want || b.Dy() != want {
		t.Errorf("grid %v, want %dx%d", b, want, want)
	}
	// OpenAI Images API.
	var resp struct {
		Data []struct {
			B64JSON     string `json:"b64_json"`
			ClassLabel  *int   `json:"class_label"`
			ClassSource string `json:"class_source"`
		} `json:"data"`
	}
	body := run("-H", "Content-Type: application/json", "-d",
		fmt.Sprintf(`{"prompt":%q,"n":2,"size":"%dx%d","steps":3}`, prompt, size, size), base+"/v1/images/generations")
	if err := json.Unmarshal(body, &resp); err != nil || len(resp.Data) != 2 {
		t.Fatalf("generations: %v %.200s", err, body)
	}
	for _, d := range resp.Data {
		if d.ClassLabel == nil || *d.ClassLabel != class || d.ClassSource != "prompt" {
			t.Errorf("prompt %q: class_label %v from %q, want %d from the prompt", prompt, d.ClassLabel, d.ClassSource, class)
		}
		b, _ := base64.StdEncoding.DecodeString(d.B64JSON)
		if _, err := png.Decode(bytes.NewReader(b)); err != nil {
			t.Errorf("b64 image: %v", err)
		}
	}
	// Without the key: 401; a lower-case scheme is fine (RFC 7235).
	status := func(args ...string) string {
		t.Helper()
		code, _ := exec.CommandContext(ctx, curl, append([]string{"-s", "-o", "/dev/null", "-w", "%{http_code}"}, args...)...).Output()
		return string(code)
	}
	if code := status(base + "/v1/models"); code != "401" {
		t.Errorf("no key: %s", code)
	}
	if code := status("-H", "Authorization: bearer e2e-key", base+"/v1/models"); code != "200" {
		t.Errorf("lower-case bearer: %s", code)
	}
	// A body sent as curl -d does by default (form-encoded), or as a web
	// page's "simple" POST (text/plain): 415.
	for _, ct := range []string{"", "Content-Type: text/plain"} {
		args := []string{"-H", "Authorization: Bearer e2e-key", "-d", `{"steps":1}`, base + "/v1/jobs"}
		if ct != "" {
			args = append([]string{"-H", ct}, args...)
		}
		if code := status(args...); code != "415" {
			t.Errorf("POST with %q: %s, want 415", ct, code)
		}
	}
	// HEAD on a GET route.
	if code := status("-I", base+"/healthz"); code != "200" {
		t.Errorf("HEAD /healthz: %s", code)
	}
	// SIGTERM drains and exits 0.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var rest []string
	for l := range lines {
		rest = append(rest, l)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\nstderr:\n%s", err, stderr.String())
	}
	if !strings.Contains(strings.Join(rest, "\n"), "drained") {
		t.Errorf("stdout after SIGTERM: %q", rest)
	}
}

func TestServeModelInfo(t *testing.T) {
	dir := filepath.Join("..", "..", "..", "shared", "fixtures", "diffusers-unet-small")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("fixtures not found at %s (they live in the shared folder beside the repository)", dir)
	}
	src, err := weights.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	info, err := serveInfo(src, modelName(dir))
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "diffusers-unet-small" || info.ImageSize != 32 || info.Channels != 1 || info.NumClasses != 0 {
		t.Errorf("info %+v", info)
	}
	d, err := pipeline.DiffusionFor(src)
	if err != nil {
		t.Fatal(err)
	}
	if d.T() != 1000 {
		t.Errorf("T = %d", d.T())
	}
}

func TestServeInfoConfigs(t *testing.T) {
	tests := []struct {
		name, cfg string
		size, ch  int
		classes   int
		ok        bool
	}{
		{"int size", `{"sample_size":28,"in_channels":1}`, 28, 1, 0, true},
		{"pair size", `{"sample_size":[64,64],"in_channels":3,"num_class_embeds":10}`, 64, 3, 10, true},
		{"not square", `{"sample_size":[64,32],"in_channels":3}`, 0, 0, 0, false},
		{"bad json", `{"sample_size":`, 0, 0, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			info, err := serveInfo(&weights.Source{Path: "x", Model: weights.Model{UNetConfig: []byte(tc.cfg)}}, "m")
			if (err == nil) != tc.ok {
				t.Fatalf("err %v", err)
			}
			if tc.ok && (info.ImageSize != tc.size || info.Channels != tc.ch || info.NumClasses != tc.classes) {
				t.Errorf("info %+v", info)
			}
		})
	}
	for path, want := range map[string]string{"/a/b/model.safetensors": "model", "./ddpm-cifar10/": "ddpm-cifar10", "ckpt": "ckpt"} {
		if got := modelName(path); got != want {
			t.Errorf("modelName(%q) = %q, want %q", path, got, want)
		}
	}
}
