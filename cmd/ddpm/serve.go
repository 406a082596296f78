package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/ddpm-go/ddpm/server"
	"github.com/redis/go-redis/v9"
)

// serveOptions are the flags of "ddpm serve".
type serveOptions struct {
	model string
	// classifier is --classifier: the noisy classifier of classifier_scale.
	classifier string
	addr       string
	device     string
	prec       string // --precision (GPU arithmetic)
	server     server.Options
	logJSON    bool

	// up is --upsample and its flags: the cascade's second stage, which
	// every image goes through (serve_upsample.go).
	up upsampleFlags

	// Serving on many machines: with --redis the queue and jobs live in
	// Redis and --role says what this replica does.
	cluster server.ClusterOptions
	role    string

	// Test-only: serve the deterministic fake generator instead of a model
	// (for the end-to-end, browser and load tests of the HTTP layer). Hidden
	// from -h; never use it for anything but tests.
	testFake           bool
	testFakeStepDelay  time.Duration
	testFakeImageDelay time.Duration
}

const serveSynopsis = "serve [--model PATH [--upsample PATH]] [--addr :8080] [--max-batch N] [--queue N] [--timeout D] [--api-key K] [--device auto|cpu|cuda] [--trusted-proxy CIDR]... [--cors-origin URL]... [--redis URL --role all|api|worker]"

const serveExamples = `  ddpm serve                                   # the embedded default model on :8080
  ddpm serve --model ./ddpm-cifar10 --addr 127.0.0.1:9000 --max-batch 16
  DDPM_API_KEY=secret ddpm serve --queue 128 --timeout 2m
  ddpm serve --trusted-proxy 10.0.0.0/8 --cors-origin https://app.example.com
  ddpm serve --model base.pt --upsample upsample.pt   # GLIDE 64 -> 256: every image upsampled

  # one api and two workers sharing a Redis queue
  ddpm serve --redis redis://127.0.0.1:6379/0 --role api --addr :8080
  ddpm serve --redis redis://127.0.0.1:6379/0 --role worker --addr :8081
  ddpm serve --redis redis://127.0.0.1:6379/0 --role worker --addr :8082

  curl -s localhost:8080/v1/generate -H 'Content-Type: application/json' -d '{"n":16,"steps":50,"seed":1}' > grid.png`

// proxyList is the repeatable --trusted-proxy flag.
type proxyList []netip.Prefix

func (p *proxyList) String() string {
	if p == nil {
		return ""
	}
	s := make([]string, len(*p))
	for i, x := range *p {
		s[i] = x.String()
	}
	return strings.Join(s, ",")
}

func (p *proxyList) Set(v string) error {
	x, err := server.ParseTrustedProxy(v)
	if err != nil {
		return err
	}
	*p = append(*p, x)
	return nil
}

// originList is the repeatable --cors-origin flag.
type originList []string

func (o *originList) String() string {
	if o == nil {
		return ""
	}
	return strings.Join(*o, ",")
}

func (o *originList) Set(v string) error {
	x, err := server.ParseOrigin(v)
	if err != nil {
		return err
	}
	*o = append(*o, x)
	return nil
}

// parseServe parses the serve flags.
func parseServe(args []string, stderr io.Writer) (serveOptions, error) {
	var o serveOptions
	fs := newFlagSet("serve", serveSynopsis, serveExamples, stderr)
	fs.StringVar(&o.model, "model", "", "model `path`: a diffusers folder or checkpoint, guided-diffusion's UNet (64x64_diffusion.pt,\n256x256_diffusion_uncond.pt, the LSUN models), or GLIDE's base.pt / base_inpaint.pt\n(requests' prompt is its text) (default: the embedded model)")
	fs.StringVar(&o.classifier, "classifier", "", "noisy classifier `path` (guided-diffusion .pt or ddpm train-classifier checkpoint) that\nguides requests with classifier_scale towards their class (class-conditional models)")
	o.up.register(fs, serveUpsampleHelp)
	fs.StringVar(&o.addr, "addr", ":8080", "listen `address`")
	fs.StringVar(&o.device, "device", "auto", "device: auto (CUDA when present, else CPU), cpu or cuda")
	fs.StringVar(&o.prec, "precision", "", precisionHelp)
	fs.IntVar(&o.server.MaxBatch, "max-batch", 8, "most images per model batch (dynamic batching)")
	fs.IntVar(&o.server.QueueSize, "queue", 64, "most requests waiting; more are answered 429")
	fs.DurationVar(&o.server.Timeout, "timeout", 5*time.Minute, "per-request time limit, queueing included")
	fs.DurationVar(&o.server.DrainTimeout, "drain-timeout", 30*time.Second, "on SIGTERM, how long running jobs may finish")
	fs.DurationVar(&o.server.BatchWindow, "batch-window", 0, "how long an idle worker waits for a batch to fill")
	fs.IntVar(&o.server.MaxN, "max-n", 16, "most images per request")
	fs.IntVar(&o.server.MaxSteps, "max-steps", 1000, "most denoising steps per request")
	fs.Int64Var(&o.server.MaxBodyBytes, "max-body", 0, "request body limit in bytes (default 64 KiB, plus room for init_image and mask as\nuncompressed PNGs of the model's size)")
	fs.StringVar(&o.server.APIKey, "api-key", "", "bearer token required on every route but /healthz, /readyz and / (default: $DDPM_API_KEY)")
	fs.DurationVar(&o.server.HeaderTimeout, "header-timeout", 10*time.Second, "how long a client may take to send a request's headers")
	fs.DurationVar(&o.server.BodyTimeout, "body-timeout", 30*time.Second, "how long a client may take to send a request's body (408 after it)")
	fs.DurationVar(&o.server.IdleTimeout, "idle-timeout", 60*time.Second, "how long a kept-alive connection may wait for its next request")
	fs.DurationVar(&o.server.WriteTimeout, "write-timeout", 60*time.Second, "how long writing one answer or event may take (not a limit on generation)")
	fs.IntVar(&o.server.MaxConns, "max-conns", 1024, "most open connections; more get 503 and are closed (-1: no limit)")
	fs.IntVar(&o.server.MaxConnsPerClient, "max-conns-per-client", 256, "most open connections from one address (an IPv6 /64); trusted proxies exempt (-1: no limit)")
	fs.Var((*proxyList)(&o.server.TrustedProxies), "trusted-proxy", "`CIDR` or address of a reverse proxy whose X-Forwarded-For / X-Real-IP name the client (repeatable)")
	fs.Var((*originList)(&o.server.CORSOrigins), "cors-origin", "web `origin` (https://host[:port], or *) whose pages may call the API; CORS is off without it (repeatable)")
	fs.BoolVar(&o.logJSON, "log-json", false, "log JSON lines instead of text")
	fs.StringVar(&o.cluster.RedisURL, "redis", "", "Redis `URL` (redis://[:password@]host:port/db, rediss:// for TLS) holding the queue and jobs shared by every replica (default: $DDPM_REDIS_URL; none: one process, in memory)")
	fs.StringVar(&o.role, "role", "all", "with --redis: api (queue and answer), worker (run the model) or all (both)")
	fs.StringVar(&o.cluster.Prefix, "redis-prefix", "ddpm:", "with --redis: prefix of every Redis key, to share one Redis between deployments")
	fs.DurationVar(&o.cluster.ResultTTL, "result-ttl", time.Hour, "with --redis: how long finished jobs and their images stay readable")
	fs.DurationVar(&o.cluster.ClaimIdle, "claim-idle", 30*time.Second, "with --redis: how long the jobs of a worker that stopped heartbeating wait before another worker reruns them")
	fs.IntVar(&o.cluster.MaxAttempts, "max-attempts", 3, "with --redis: how many times a job may be started before its workers dying fails it")
	fs.BoolVar(&o.testFake, "test-fake-model", false, "TEST ONLY: serve a fake generator, not a model")
	fs.DurationVar(&o.testFakeStepDelay, "test-fake-step-delay", 0, "TEST ONLY: fake cost per batch step")
	fs.DurationVar(&o.testFakeImageDelay, "test-fake-image-delay", 0, "TEST ONLY: fake cost per image per step")
	fs.Usage = func() { // as flag.PrintDefaults, without the test-only flags
		fmt.Fprintf(stderr, "usage: ddpm %s\n\n", serveSynopsis)
		fs.VisitAll(func(f *flag.Flag) {
			if strings.HasPrefix(f.Name, "test-") {
				return
			}
			name, help := flag.UnquoteUsage(f)
			fmt.Fprintf(stderr, "  -%s %s\n    \t%s", f.Name, name, help)
			if f.DefValue != "" && f.DefValue != "false" {
				fmt.Fprintf(stderr, " (default %s)", f.DefValue)
			}
			fmt.Fprintln(stderr)
		})
		fmt.Fprintf(stderr, "\nexamples:\n%s\n", serveExamples)
	}
	if err := parseFlags(fs, args); err != nil {
		return o, err
	}
	if o.server.APIKey == "" {
		o.server.APIKey = os.Getenv("DDPM_API_KEY")
	}
	if o.server.HeaderTimeout < 0 || o.server.BodyTimeout < 0 || o.server.IdleTimeout < 0 || o.server.WriteTimeout < 0 {
		return o, usageError{"serve: --header-timeout, --body-timeout, --idle-timeout and --write-timeout must not be negative"}
	}
	if o.server.MaxConns == 0 || o.server.MaxConnsPerClient == 0 {
		return o, usageError{"serve: --max-conns and --max-conns-per-client must be >= 1, or -1 for no limit"}
	}
	switch o.device {
	case "auto", "cpu", "cuda":
	default:
		return o, usageError{fmt.Sprintf("serve: --device %q: allowed values are auto, cpu and cuda", o.device)}
	}
	if err := checkPrecision(o.prec); err != nil {
		return o, err
	}
	if o.testFake && o.model != "" {
		return o, usageError{"serve: --test-fake-model and --model exclude each other"}
	}
	if err := o.up.checkServe(o); err != nil {
		return o, err
	}
	if o.cluster.RedisURL == "" {
		o.cluster.RedisURL = os.Getenv("DDPM_REDIS_URL")
	}
	role, err := server.ParseRole(o.role)
	if err != nil {
		return o, usageError{"serve: --role: " + err.Error()}
	}
	o.cluster.Role = role
	if o.cluster.RedisURL == "" && role != server.RoleAll {
		return o, usageError{fmt.Sprintf("serve: --role %s needs --redis URL (or $DDPM_REDIS_URL): replicas share their queue through Redis", role)}
	}
	if o.cluster.RedisURL != "" {
		u, err := url.Parse(o.cluster.RedisURL)
		if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
			return o, usageError{"serve: --redis: want redis://[:password@]host:port/db or rediss://... for TLS"}
		}
	}
	switch {
	case o.cluster.ResultTTL < time.Second:
		return o, usageError{"serve: --result-ttl must be at least 1s"}
	case o.cluster.ClaimIdle < 100*time.Millisecond:
		return o, usageError{"serve: --claim-idle must be at least 100ms"}
	case o.cluster.MaxAttempts < 1:
		return o, usageError{"serve: --max-attempts must be at least 1"}
	}
	return o, nil
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseServe(args, stderr)
	if err != nil {
		return err
	}
	var h slog.Handler = slog.NewTextHandler(stderr, nil)
	if o.logJSON {
		h = slog.NewJSONHandler(stderr, nil)
	}
	log := slog.New(h)
	o.server.Logger = log

	if o.cluster.RedisURL != "" {
		// go-redis logs each failed dial while Redis is away; the server
		// logs Redis errors itself, so these go to the debug level.
		redis.SetLogger(redisLog{log})
	}
	var gen server.Generator
	var info server.ModelInfo
	switch {
	case o.cluster.RedisURL != "" && o.cluster.Role == server.RoleAPI:
		// An api replica runs no model: it reads only its description.
		if o.testFake {
			info = testFakeGenerator(o).Info()
		} else if info, err = serveModelInfo(ctx, o, log); err != nil {
			return fmt.Errorf("serve: %w", err)
		}
	case o.testFake:
		log.Warn("serving the TEST-ONLY fake generator: images are noise patterns, not model samples")
		gen = testFakeGenerator(o)
	default:
		g, closeGen, err := loadServeModel(ctx, o, log)
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		defer closeGen()
		gen = g
	}
	var srv *server.Server
	if o.cluster.RedisURL != "" {
		o.cluster.Model = info
		srv, err = server.NewCluster(gen, o.server, o.cluster)
	} else {
		srv, err = server.New(gen, o.server)
	}
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if gen != nil {
		info = gen.Info()
	}
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		srv.Close()
		return fmt.Errorf("serve: --addr %q: %w", o.addr, err)
	}
	mode := "in memory"
	if o.cluster.RedisURL != "" {
		mode = "role " + string(o.cluster.Role) + ", Redis " + redactURL(o.cluster.RedisURL)
	}
	if info.Device == "" {
		info.Device = "cluster workers"
	}
	fmt.Fprintf(stdout, "ddpm serve: listening on http://%s (model %s on %s, max batch %d, queue %d, %s)\n",
		ln.Addr(), info.Name, info.Device, o.server.MaxBatch, o.server.QueueSize, mode)
	if len(o.server.CORSOrigins) > 0 {
		log.Info("CORS allowed", "origins", strings.Join(o.server.CORSOrigins, ","))
	}
	err = srv.Serve(ctx, ln)
	if err == nil {
		fmt.Fprintln(stdout, "ddpm serve: drained and stopped")
	}
	return err
}

// testFakeGenerator is the TEST-ONLY fake generator of --test-fake-model.
func testFakeGenerator(o serveOptions) *server.FakeGenerator {
	f := server.NewFakeGenerator(32, 3, []string{"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"})
	f.Model.Name = "test-fake"
	f.StepDelay, f.ImageDelay = o.testFakeStepDelay, o.testFakeImageDelay
	return f
}

// redisLog passes go-redis's own messages to the log at debug level.
type redisLog struct{ log *slog.Logger }

func (r redisLog) Printf(ctx context.Context, format string, v ...any) {
	r.log.Debug("go-redis: " + fmt.Sprintf(format, v...))
}

// redactURL is a Redis URL without its password, for logs.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
