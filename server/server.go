package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

//go:embed web
var webFS embed.FS

// Server is the HTTP image-generation service: an echo router over a
// scheduler that batches requests onto one Generator. Make one with New,
// serve it with Serve (or mount Handler and call Shutdown and Close).
type Server struct {
	opts  Options
	info  ModelInfo
	lim   limits
	e     *echo.Echo
	sched *scheduler
	m     *metrics
	log   *slog.Logger
	start time.Time

	defaultSampler diffusion.Sampler // info.DefaultSampler, parsed once
	routes         map[string]bool   // registered route templates: the metrics' route labels

	draining atomic.Bool
	jobsCtx  context.Context // parent of async jobs; cancelled at the drain deadline
	jobsStop context.CancelCauseFunc
	worker   sync.WaitGroup
	stopOnce sync.Once
	apiKey   [32]byte // SHA-256 of Options.APIKey

	mu   sync.Mutex
	jobs map[string]*job // async jobs by id (in-memory mode)

	cl *cluster // the Redis side; nil in the in-memory mode of New

	seedMu sync.Mutex
	seeds  *mrand.Rand
}

// New validates opts, starts the device worker and returns the server.
// Call Close (or Serve) to stop the worker.
func New(gen Generator, opts Options) (*Server, error) {
	if gen == nil {
		return nil, errors.New("server: nil Generator")
	}
	s, err := newServer(gen, gen.Info(), opts)
	if err != nil {
		return nil, err
	}
	s.worker.Add(1)
	go func() {
		defer s.worker.Done()
		s.sched.run(s.jobsCtx)
	}()
	return s, nil
}

// newServer builds a server for a model described by info, run by gen
// (nil on a cluster's api replica), without starting the device worker.
func newServer(gen Generator, info ModelInfo, opts Options) (*Server, error) {
	if err := info.Check(); err != nil {
		return nil, err
	}
	if err := opts.setDefaults(info); err != nil {
		return nil, err
	}
	var seed [32]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("server: seeding: %w", err)
	}
	sampler, _ := parseSampler(info.DefaultSampler) // checked by info.Check
	s := &Server{opts: opts, info: info, log: opts.Logger, start: time.Now(), jobs: map[string]*job{},
		seeds: mrand.New(mrand.NewChaCha8(seed)), defaultSampler: sampler,
		lim: limits{maxN: opts.MaxN, maxSteps: opts.MaxSteps, maxGuidance: opts.MaxGuidance, maxBody: opts.MaxBodyBytes}}
	if opts.APIKey != "" {
		s.apiKey = sha256.Sum256([]byte(opts.APIKey))
	}
	s.m = newMetrics(info, opts.MaxBatch)
	s.sched = newScheduler(gen, opts.MaxBatch, opts.QueueSize, opts.BatchWindow, s.log, s.m)
	s.jobsCtx, s.jobsStop = context.WithCancelCause(context.Background())
	s.e = s.router()
	return s, nil
}

// Handler returns the HTTP handler serving every route. The connection
// limits and timeouts of Options apply only under Serve.
func (s *Server) Handler() http.Handler { return s.e }

// Ready reports whether the server accepts new work (false once draining).
func (s *Server) Ready() bool { return !s.draining.Load() }

// Shutdown drains: readiness flips to 503 and new work is refused with
// 503, then queued and running jobs may finish until ctx ends, after which
// the rest are cancelled. It returns ctx.Err() when it had to cancel.
func (s *Server) Shutdown(ctx context.Context) error {
	if !s.draining.Swap(true) {
		s.m.ready.Set(0)
		s.log.Info("draining", "queued", s.queueLen())
	}
	if s.cl != nil {
		return s.cl.shutdown(ctx)
	}
	err := s.sched.waitIdle(ctx)
	if err != nil {
		s.log.Warn("drain deadline reached; cancelling the remaining jobs")
		s.cancelAll(errShutdown)
	}
	return err
}

// Close cancels every job and stops the worker. It is safe to call twice.
func (s *Server) Close() {
	s.stopOnce.Do(func() {
		s.draining.Store(true)
		s.sched.mu.Lock()
		s.sched.closed = true
		s.sched.mu.Unlock()
		if s.cl != nil {
			s.cl.closeWorker() // hands unfinished jobs back to the cluster's queue
		}
		s.cancelAll(errShutdown)
		s.jobsStop(errShutdown)
		s.worker.Wait()
		if s.cl != nil {
			s.cl.closeRedis()
		}
	})
}

// cancelAll cancels every job not yet final, queued or running, and waits
// until they are final (they become so in context.AfterFunc goroutines).
func (s *Server) cancelAll(cause error) {
	s.sched.mu.Lock()
	var js []*job
	for j := range s.sched.active {
		js = append(js, j)
	}
	s.sched.mu.Unlock()
	for _, j := range js {
		j.cancel(cause)
	}
	for _, j := range js {
		<-j.done
	}
}

func (s *Server) queueLen() int {
	s.sched.mu.Lock()
	defer s.sched.mu.Unlock()
	return len(s.sched.queue)
}

// httpServer is the net/http server Serve runs: header, idle and write
// timeouts from Options (body timeouts are set per request by readBody).
func (s *Server) httpServer() *http.Server {
	return &http.Server{Handler: s.e,
		ReadHeaderTimeout: s.opts.HeaderTimeout,
		IdleTimeout:       s.opts.IdleTimeout,
		// Handlers extend the write deadline before each answer and event
		// (extendWrite), so this bounds a stalled write, not a long job.
		WriteTimeout:   s.opts.WriteTimeout,
		MaxHeaderBytes: s.opts.MaxHeaderBytes,
		ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
}

// Serve answers HTTP on ln until ctx ends (e.g. on SIGTERM), then drains:
// readiness flips, new work gets 503, jobs get DrainTimeout to finish, the
// HTTP server shuts down and the worker stops. It returns nil after a clean
// drain, even when jobs had to be cancelled at the deadline. Connections
// beyond MaxConns or MaxConnsPerClient are answered 503 and closed.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := s.httpServer()
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(s.limitListener(ln)) }()
	select {
	case err := <-errc:
		s.Close()
		return fmt.Errorf("server: serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	dctx, cancel := context.WithTimeout(context.Background(), s.opts.DrainTimeout)
	_ = s.Shutdown(dctx) // a deadline here only means jobs were cancelled
	cancel()
	// In-flight requests (sync generations, event streams) end now that
	// every job is final; allow a few seconds for their responses.
	hctx, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	err := hs.Shutdown(hctx)
	s.Close()
	if err != nil {
		_ = hs.Close()
		s.log.Warn("http shutdown", "err", err)
	}
	s.log.Info("stopped")
	return nil
}

// router builds the echo router. Every GET route also answers HEAD.
func (s *Server) router() *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.echoError
	e.IPExtractor = s.clientIP
	e.Use(s.observe, s.recover, s.cors, s.auth, s.readBody)

	get := func(path string, h echo.HandlerFunc) {
		e.GET(path, h)
		e.HEAD(path, h)
	}
	get("/healthz", s.wrap(func(c echo.Context) (any, error) { return map[string]string{"status": "ok"}, nil }))
	get("/readyz", s.wrap(s.readyz))
	get("/metrics", s.metricsHandler())
	get("/v1/models", s.wrap(s.models))
	get("/v1/models/:id", s.wrap(s.model))
	e.POST("/v1/images/generations", s.wrap(s.generations))
	e.POST("/v1/generate", s.wrap(s.generatePNG))
	e.POST("/v1/jobs", s.wrap(s.createJob))
	get("/v1/jobs/:id", s.wrap(s.getJob))
	e.DELETE("/v1/jobs/:id", s.wrap(s.deleteJob))
	get("/v1/jobs/:id/events", s.events)

	sub, _ := fs.Sub(webFS, "web") // cannot fail: "web" is embedded
	page, _ := fs.ReadFile(sub, "index.html")
	get("/", func(c echo.Context) error {
		c.Response().Header().Set("Cache-Control", "no-cache")
		extendWrite(c, s.opts.WriteTimeout)
		return c.HTMLBlob(http.StatusOK, page)
	})

	s.routes = map[string]bool{}
	for _, r := range e.Routes() {
		s.routes[r.Path] = true
	}
	return e
}

func (s *Server) metricsHandler() echo.HandlerFunc {
	h := promhttp.HandlerFor(s.m.reg, promhttp.HandlerOpts{})
	return func(c echo.Context) error {
		extendWrite(c, s.opts.WriteTimeout)
		h.ServeHTTP(c.Response(), c.Request())
		return nil
	}
}

func (s *Server) readyz(c echo.Context) (any, error) {
	if s.draining.Load() {
		return nil, &APIError{Status: http.StatusServiceUnavailable, Type: TypeUnavailable, Message: "draining for shutdown"}
	}
	if s.cl != nil {
		if err := s.cl.ping(c.Request().Context()); err != nil {
			return nil, errStoreDown()
		}
	}
	return map[string]string{"status": "ready"}, nil
}

// result is a handler's answer other than a 200 JSON body.
type result struct {
	status      int
	contentType string // "" for JSON
	body        any    // []byte when contentType is set
	headers     map[string]string
}

// wrap adapts a handler returning (result, error) to echo: one place writes
// every JSON answer and every error.
func (s *Server) wrap(h func(c echo.Context) (any, error)) echo.HandlerFunc {
	return func(c echo.Context) error {
		res, err := h(c)
		if err != nil {
			return s.writeError(c, err)
		}
		extendWrite(c, s.opts.WriteTimeout)
		switch r := res.(type) {
		case result:
			for k, v := range r.headers {
				c.Response().Header().Set(k, v)
			}
			if r.contentType != "" {
				b, _ := r.body.([]byte)
				return c.Blob(r.status, r.contentType, b)
			}
			return c.JSON(r.status, r.body)
		default:
			return c.JSON(http.StatusOK, res)
		}
	}
}

// writeError answers err in the OpenAI error shape.
func (s *Server) writeError(c echo.Context, err error) error {
	ae := asAPIError(err)
	if ae.Status >= 500 && ae.Type == TypeServer {
		s.log.Error("request failed", "route", c.Path(), "err", err)
	}
	if c.Response().Committed {
		return nil
	}
	h := c.Response().Header()
	if ae.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(ae.RetryAfter))
	}
	if ae.Status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="ddpm"`)
	}
	status := ae.Status
	if status < 400 || status > 599 {
		status = http.StatusInternalServerError
	}
	extendWrite(c, s.opts.WriteTimeout)
	return c.JSON(status, ae.body())
}

// extendWrite moves the connection's write deadline to d from now, so that
// an answer written after a long generation is not cut by the deadline the
// http.Server set when the request arrived. Writers without deadlines
// (httptest) are left alone.
func extendWrite(c echo.Context, d time.Duration) {
	if d > 0 {
		_ = http.NewResponseController(c.Response().Writer).SetWriteDeadline(time.Now().Add(d))
	}
}
