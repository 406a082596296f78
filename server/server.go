package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io/fs"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

//go:embed web
var webFS embed.FS

// Options configure a Server. The zero value of each field takes the
// default named in its comment.
type Options struct {
	MaxBatch     int           // most images per model batch (default 8)
	QueueSize    int           // most requests waiting for the device; more get 429 (default 64)
	Timeout      time.Duration // per-request limit, queueing included (default 5m; <0: none)
	DrainTimeout time.Duration // on shutdown, how long running and queued jobs may finish (default 30s)
	APIKey       string        // when set, every route but /healthz, /readyz and the page needs "Authorization: Bearer <key>"
	MaxBodyBytes int64         // request body limit (default 64 KiB)
	MaxN         int           // most images per request (default 16)
	MaxSteps     int           // most denoising steps per request (default: the model's T)
	MaxGuidance  float64       // largest guidance_scale (default 20)
	BatchWindow  time.Duration // how long the worker waits for a batch to fill when idle (default 0: never waits)
	JobRetention time.Duration // how long finished jobs stay readable (default 15m)
	MaxJobs      int           // most jobs kept, finished or not (default 1000)
	Logger       *slog.Logger  // default: discard
}

func (o *Options) setDefaults(info ModelInfo) error {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.MaxBatch, 8)
	def(&o.QueueSize, 64)
	def(&o.MaxN, 16)
	def(&o.MaxSteps, info.TrainSteps)
	def(&o.MaxJobs, 1000)
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.DrainTimeout == 0 {
		o.DrainTimeout = 30 * time.Second
	}
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = 64 << 10
	}
	if o.MaxGuidance == 0 {
		o.MaxGuidance = 20
	}
	if o.JobRetention == 0 {
		o.JobRetention = 15 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case o.MaxBatch < 1 || o.MaxBatch > 1024:
		return fmt.Errorf("server: MaxBatch %d outside [1, 1024]", o.MaxBatch)
	case o.QueueSize < 1:
		return fmt.Errorf("server: QueueSize %d must be >= 1", o.QueueSize)
	case o.MaxN < 1 || o.MaxN > 1024:
		return fmt.Errorf("server: MaxN %d outside [1, 1024]", o.MaxN)
	case o.MaxSteps < 1:
		return fmt.Errorf("server: MaxSteps %d must be >= 1", o.MaxSteps)
	case o.MaxBodyBytes < 64:
		return fmt.Errorf("server: MaxBodyBytes %d must be >= 64", o.MaxBodyBytes)
	case !(o.MaxGuidance > 0):
		return fmt.Errorf("server: MaxGuidance %g must be > 0", o.MaxGuidance)
	case o.MaxJobs < 1:
		return fmt.Errorf("server: MaxJobs %d must be >= 1", o.MaxJobs)
	case o.DrainTimeout < 0 || o.BatchWindow < 0 || o.JobRetention < 0:
		return fmt.Errorf("server: DrainTimeout, BatchWindow and JobRetention must not be negative")
	}
	return nil
}

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

	draining atomic.Bool
	jobsCtx  context.Context // parent of async jobs; cancelled at the drain deadline
	jobsStop context.CancelCauseFunc
	worker   sync.WaitGroup
	stopOnce sync.Once
	apiKey   [32]byte // SHA-256 of Options.APIKey

	mu   sync.Mutex
	jobs map[string]*job // async jobs by id

	seedMu sync.Mutex
	seeds  *mrand.Rand
}

// New validates opts, starts the device worker and returns the server.
// Call Close (or Serve) to stop the worker.
func New(gen Generator, opts Options) (*Server, error) {
	if gen == nil {
		return nil, errors.New("server: nil Generator")
	}
	info := gen.Info()
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
	s := &Server{opts: opts, info: info, log: opts.Logger, start: time.Now(), jobs: map[string]*job{},
		seeds: mrand.New(mrand.NewChaCha8(seed)),
		lim:   limits{maxN: opts.MaxN, maxSteps: opts.MaxSteps, maxGuidance: opts.MaxGuidance, maxBody: opts.MaxBodyBytes}}
	if opts.APIKey != "" {
		s.apiKey = sha256.Sum256([]byte(opts.APIKey))
	}
	s.m = newMetrics(info, opts.MaxBatch)
	s.sched = newScheduler(gen, opts.MaxBatch, opts.QueueSize, opts.BatchWindow, s.log, s.m)
	s.jobsCtx, s.jobsStop = context.WithCancelCause(context.Background())
	s.e = s.routes()
	s.worker.Add(1)
	go func() {
		defer s.worker.Done()
		s.sched.run(s.jobsCtx)
	}()
	return s, nil
}

// Handler returns the HTTP handler serving every route.
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
		s.cancelAll(errShutdown)
		s.jobsStop(errShutdown)
		s.worker.Wait()
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

// Serve answers HTTP on ln until ctx ends (e.g. on SIGTERM), then drains:
// readiness flips, new work gets 503, jobs get DrainTimeout to finish, the
// HTTP server shuts down and the worker stops. It returns nil after a clean
// drain, even when jobs had to be cancelled at the deadline.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{Handler: s.e, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
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

// routes builds the echo router.
func (s *Server) routes() *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.echoError
	e.Use(s.observe, s.recover, s.bodyLimit, s.auth)

	e.GET("/healthz", s.wrap(func(c echo.Context) (any, error) { return map[string]string{"status": "ok"}, nil }))
	e.GET("/readyz", s.wrap(s.readyz))
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(s.m.reg, promhttp.HandlerOpts{})))
	e.GET("/v1/models", s.wrap(s.models))
	e.GET("/v1/models/:id", s.wrap(s.model))
	e.POST("/v1/images/generations", s.wrap(s.generations))
	e.POST("/v1/generate", s.wrap(s.generatePNG))
	e.POST("/v1/jobs", s.wrap(s.createJob))
	e.GET("/v1/jobs/:id", s.wrap(s.getJob))
	e.DELETE("/v1/jobs/:id", s.wrap(s.deleteJob))
	e.GET("/v1/jobs/:id/events", s.events)

	sub, _ := fs.Sub(webFS, "web") // cannot fail: "web" is embedded
	page, _ := fs.ReadFile(sub, "index.html")
	e.GET("/", func(c echo.Context) error {
		c.Response().Header().Set("Cache-Control", "no-cache")
		return c.HTMLBlob(http.StatusOK, page)
	})
	return e
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
	if ae.RetryAfter > 0 {
		c.Response().Header().Set("Retry-After", strconv.Itoa(ae.RetryAfter))
	}
	if ae.Status == http.StatusUnauthorized {
		c.Response().Header().Set("WWW-Authenticate", `Bearer realm="ddpm"`)
	}
	if c.Response().Committed {
		return nil
	}
	status := ae.Status
	if status < 400 || status > 599 {
		status = http.StatusInternalServerError
	}
	return c.JSON(status, ae.body())
}

// echoError formats echo's own errors (unknown route, wrong method) and
// anything a middleware returns in the OpenAI shape.
func (s *Server) echoError(err error, c echo.Context) {
	var he *echo.HTTPError
	if errors.As(err, &he) {
		msg := http.StatusText(he.Code)
		switch he.Code {
		case http.StatusNotFound:
			msg = fmt.Sprintf("no route %s %s", c.Request().Method, truncate(c.Request().URL.Path))
		case http.StatusMethodNotAllowed:
			msg = fmt.Sprintf("method %s is not allowed on %s", c.Request().Method, truncate(c.Request().URL.Path))
		}
		err = &APIError{Status: he.Code, Type: TypeInvalidRequest, Message: msg}
	}
	_ = s.writeError(c, err)
}

// observe records request counts and latency by route template.
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		status := c.Response().Status
		took := time.Since(start)
		s.m.requests.WithLabelValues(route, c.Request().Method, strconv.Itoa(status)).Inc()
		s.m.latency.WithLabelValues(route).Observe(took.Seconds())
		switch route {
		case "/healthz", "/readyz", "/metrics": // probes and scrapes are not logged
		default:
			s.log.Info("http", "method", c.Request().Method, "route", route, "status", status,
				"ms", took.Milliseconds(), "remote", c.RealIP())
		}
		return nil
	}
}

// recover turns a panic in a handler into a logged 500.
func (s *Server) recover(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				s.log.Error("panic in handler", "route", c.Path(), "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				err = &APIError{Status: http.StatusInternalServerError, Type: TypeServer, Message: "internal error; see the server log"}
			}
		}()
		return next(c)
	}
}

// bodyLimit caps every request body at MaxBodyBytes.
func (s *Server) bodyLimit(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if r.ContentLength > s.opts.MaxBodyBytes {
			return tooLarge(s.opts.MaxBodyBytes)
		}
		r.Body = http.MaxBytesReader(c.Response(), r.Body, s.opts.MaxBodyBytes)
		return next(c)
	}
}

// auth checks the bearer token (constant-time, on SHA-256 digests so that
// the key length does not leak) on every route but health and the page.
func (s *Server) auth(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if s.opts.APIKey == "" {
			return next(c)
		}
		switch c.Request().URL.Path {
		case "/healthz", "/readyz", "/":
			return next(c)
		}
		h := c.Request().Header.Get("Authorization")
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			return &APIError{Status: http.StatusUnauthorized, Type: TypeAuthentication, Code: "invalid_api_key",
				Message: "missing API key: send the header \"Authorization: Bearer <key>\""}
		}
		got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		if subtle.ConstantTimeCompare(got[:], s.apiKey[:]) != 1 {
			return &APIError{Status: http.StatusUnauthorized, Type: TypeAuthentication, Code: "invalid_api_key",
				Message: "incorrect API key"}
		}
		return next(c)
	}
}

func (s *Server) readyz(c echo.Context) (any, error) {
	if s.draining.Load() {
		return nil, &APIError{Status: http.StatusServiceUnavailable, Type: TypeUnavailable, Message: "draining for shutdown"}
	}
	return map[string]string{"status": "ready"}, nil
}

// ModelObject is one entry of GET /v1/models: the OpenAI model object plus
// a "ddpm" object describing the model.
type ModelObject struct {
	ID      string    `json:"id"`
	Object  string    `json:"object"` // "model"
	Created int64     `json:"created"`
	OwnedBy string    `json:"owned_by"`
	DDPM    ModelMeta `json:"ddpm"`
}

// ModelMeta is this server's extension of the model object.
type ModelMeta struct {
	ImageSize       int      `json:"image_size"`
	Channels        int      `json:"channels"`
	NumClasses      int      `json:"num_classes"`
	ClassNames      []string `json:"class_names,omitempty"`
	TrainSteps      int      `json:"train_steps"`
	MaxSteps        int      `json:"max_steps"`
	MaxN            int      `json:"max_n"`
	MaxBatch        int      `json:"max_batch"`
	MaxGuidance     float64  `json:"max_guidance"`
	DefaultSteps    int      `json:"default_steps"`
	DefaultSampler  string   `json:"default_sampler"`
	DefaultGuidance float64  `json:"default_guidance"`
	Device          string   `json:"device"`
}

func (s *Server) modelObject() ModelObject {
	i := s.info
	return ModelObject{ID: i.Name, Object: "model", Created: s.start.Unix(), OwnedBy: "ddpm",
		DDPM: ModelMeta{ImageSize: i.ImageSize, Channels: i.Channels, NumClasses: i.NumClasses, ClassNames: i.ClassNames,
			TrainSteps: i.TrainSteps, MaxSteps: min(s.opts.MaxSteps, i.TrainSteps), MaxN: s.opts.MaxN, MaxBatch: s.opts.MaxBatch,
			MaxGuidance: s.opts.MaxGuidance, DefaultSteps: i.DefaultSteps, DefaultSampler: i.DefaultSampler,
			DefaultGuidance: i.DefaultGuidance, Device: i.Device}}
}

func (s *Server) models(c echo.Context) (any, error) {
	return map[string]any{"object": "list", "data": []ModelObject{s.modelObject()}}, nil
}

func (s *Server) model(c echo.Context) (any, error) {
	id := c.Param("id")
	if id != s.info.Name && id != "default" {
		return nil, &APIError{Status: http.StatusNotFound, Type: TypeInvalidRequest, Param: "model", Code: "model_not_found",
			Message: fmt.Sprintf("the model %q does not exist; this server has %q", truncate(id), s.info.Name)}
	}
	return s.modelObject(), nil
}

// ImageResponse is the OpenAI Images API response.
type ImageResponse struct {
	Created int64       `json:"created"`
	Data    []ImageData `json:"data"`
}

// ImageData is one generated image: the OpenAI field b64_json (a PNG) plus
// the seed and class that made it.
type ImageData struct {
	B64JSON    string `json:"b64_json"`
	Seed       int64  `json:"seed"`
	ClassLabel *int   `json:"class_label,omitempty"`
}

// parse decodes and validates the request body.
func (s *Server) parse(c echo.Context) (genRequest, error) {
	req, err := decodeImageRequest(c.Request().Body, s.opts.MaxBodyBytes)
	if err != nil {
		return genRequest{}, err
	}
	if len(req.Prompt) > 4000 {
		return genRequest{}, invalid("prompt", "prompt is %d bytes: at most 4000 allowed", len(req.Prompt))
	}
	return validate(req, s.info, s.lim, s.newSeed)
}

func (s *Server) newSeed() int64 {
	s.seedMu.Lock()
	defer s.seedMu.Unlock()
	return s.seeds.Int64N(1 << 53) // exact in JSON numbers and JavaScript
}

// draining refuses new work while shutting down.
func (s *Server) refuseIfDraining() error {
	if s.draining.Load() {
		s.m.rejected.WithLabelValues("draining").Inc()
		return &APIError{Status: http.StatusServiceUnavailable, Type: TypeUnavailable, RetryAfter: 5,
			Message: "the server is shutting down and takes no new work; retry on another instance"}
	}
	return nil
}

// runSync queues g tied to the request's context (a client that goes away
// cancels its work) and waits for the images' PNGs.
func (s *Server) runSync(c echo.Context, g genRequest) ([][]byte, error) {
	if err := s.refuseIfDraining(); err != nil {
		return nil, err
	}
	j := s.sched.newJob(c.Request().Context(), "", g, s.opts.Timeout)
	if err := s.sched.submit(j); err != nil {
		return nil, err
	}
	select {
	case <-j.done:
	case <-c.Request().Context().Done():
		j.cancel(errClientGone)
		<-j.done
	}
	s.sched.mu.Lock()
	defer s.sched.mu.Unlock()
	if j.state != StateSucceeded {
		return nil, j.err
	}
	return j.pngs, nil
}

func (s *Server) generations(c echo.Context) (any, error) {
	g, err := s.parse(c)
	if err != nil {
		return nil, err
	}
	pngs, err := s.runSync(c, g)
	if err != nil {
		return nil, err
	}
	return imageResponse(g, pngs, time.Now()), nil
}

// imageResponse is the OpenAI images response for the PNGs made for g.
func imageResponse(g genRequest, pngs [][]byte, created time.Time) *ImageResponse {
	resp := &ImageResponse{Created: created.Unix(), Data: make([]ImageData, len(pngs))}
	for i, b := range pngs {
		resp.Data[i] = ImageData{B64JSON: base64.StdEncoding.EncodeToString(b), Seed: g.seeds[i]}
		if c := g.classes[i]; c >= 0 {
			resp.Data[i].ClassLabel = &c
		}
	}
	return resp
}

func (s *Server) generatePNG(c echo.Context) (any, error) {
	g, err := s.parse(c)
	if err != nil {
		return nil, err
	}
	pngs, err := s.runSync(c, g)
	if err != nil {
		return nil, err
	}
	b := pngs[0]
	if len(pngs) > 1 {
		imgs := make([]image.Image, len(pngs))
		for i, p := range pngs {
			if imgs[i], err = png.Decode(bytes.NewReader(p)); err != nil {
				return nil, fmt.Errorf("decode image %d for the grid: %w", i, err)
			}
		}
		if b, err = encodePNG(grid(imgs)); err != nil {
			return nil, fmt.Errorf("encode grid: %w", err)
		}
	}
	seeds := make([]string, len(g.seeds))
	for i, sd := range g.seeds {
		seeds[i] = strconv.FormatInt(sd, 10)
	}
	return result{status: http.StatusOK, contentType: "image/png", body: b,
		headers: map[string]string{"X-DDPM-Seeds": strings.Join(seeds, ",")}}, nil
}

func (s *Server) createJob(c echo.Context) (any, error) {
	g, err := s.parse(c)
	if err != nil {
		return nil, err
	}
	if err := s.refuseIfDraining(); err != nil {
		return nil, err
	}
	id, err := newJobID()
	if err != nil {
		return nil, err
	}
	j := s.sched.newJob(s.jobsCtx, id, g, s.opts.Timeout)
	s.mu.Lock()
	s.pruneLocked()
	if len(s.jobs) >= s.opts.MaxJobs {
		s.mu.Unlock()
		j.cancel(nil)
		s.m.rejected.WithLabelValues("too_many_jobs").Inc()
		return nil, &APIError{Status: http.StatusTooManyRequests, Type: TypeRateLimit, RetryAfter: 10,
			Message: fmt.Sprintf("the server holds %d jobs, its limit; retry later", s.opts.MaxJobs)}
	}
	s.jobs[id] = j
	s.mu.Unlock()
	if err := s.sched.submit(j); err != nil {
		s.mu.Lock()
		delete(s.jobs, id)
		s.mu.Unlock()
		return nil, err
	}
	st := s.sched.status(j)
	return result{status: http.StatusAccepted, body: st,
		headers: map[string]string{"Location": "/v1/jobs/" + id}}, nil
}

// pruneLocked forgets finished jobs older than JobRetention.
func (s *Server) pruneLocked() {
	cut := time.Now().Add(-s.opts.JobRetention)
	s.sched.mu.Lock()
	defer s.sched.mu.Unlock()
	for id, j := range s.jobs {
		if j.state.final() && j.ended.Before(cut) {
			delete(s.jobs, id)
		}
	}
	if len(s.jobs) < s.opts.MaxJobs {
		return
	}
	// Still full: drop the oldest finished jobs.
	var fin []*job
	for _, j := range s.jobs {
		if j.state.final() {
			fin = append(fin, j)
		}
	}
	sort.Slice(fin, func(a, b int) bool { return fin[a].ended.Before(fin[b].ended) })
	for _, j := range fin {
		if len(s.jobs) < s.opts.MaxJobs {
			break
		}
		delete(s.jobs, j.id)
	}
}

func newJobID() (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("job id: %w", err)
	}
	return "job_" + hex.EncodeToString(b[:]), nil
}

func (s *Server) lookup(c echo.Context) (*job, error) {
	id := c.Param("id")
	s.mu.Lock()
	j, ok := s.jobs[id]
	s.mu.Unlock()
	if !ok {
		return nil, &APIError{Status: http.StatusNotFound, Type: TypeInvalidRequest, Param: "id", Code: "job_not_found",
			Message: fmt.Sprintf("no job %q (finished jobs are kept for %s)", truncate(id), s.opts.JobRetention)}
	}
	return j, nil
}

// fullStatus is the job's status with its images once it succeeded.
func (s *Server) fullStatus(j *job) JobStatus {
	s.sched.mu.Lock()
	defer s.sched.mu.Unlock()
	st := s.sched.statusLocked(j)
	if j.state == StateSucceeded {
		st.Result = imageResponse(j.gen, j.pngs, j.ended)
	}
	return st
}

// maxWait bounds the long poll of GET /v1/jobs/{id}?wait=SECONDS.
const maxWait = 60

// getJob answers the job's status. With ?wait=SECONDS (0 to 60) it first
// waits up to that long for the job to finish (long polling).
func (s *Server) getJob(c echo.Context) (any, error) {
	j, err := s.lookup(c)
	if err != nil {
		return nil, err
	}
	if w := c.QueryParam("wait"); w != "" {
		sec, err := strconv.ParseFloat(w, 64)
		if err != nil || !(sec >= 0 && sec <= maxWait) {
			return nil, badRequest("wait", "wait=%q: want seconds from 0 to %d", truncate(w), maxWait)
		}
		t := time.NewTimer(time.Duration(sec * float64(time.Second)))
		defer t.Stop()
		select {
		case <-j.done:
		case <-t.C:
		case <-c.Request().Context().Done():
		}
	}
	return s.fullStatus(j), nil
}

func (s *Server) deleteJob(c echo.Context) (any, error) {
	j, err := s.lookup(c)
	if err != nil {
		return nil, err
	}
	j.cancel(errCancelledByClient)
	<-j.done
	return s.fullStatus(j), nil
}

// events streams a job's progress as server-sent events: an event
// "progress" with the JobStatus (without images) on every change, then one
// event "done" with the final status, then the stream ends. A comment line
// is sent every 15 s to keep proxies from closing an idle stream.
func (s *Server) events(c echo.Context) error {
	j, err := s.lookup(c)
	if err != nil {
		return s.writeError(c, err)
	}
	w := c.Response()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	tick := time.NewTicker(15 * time.Second)
	defer tick.Stop()
	last := -1
	var lastState JobState
	for {
		s.sched.mu.Lock()
		st := s.sched.statusLocked(j)
		ch := j.changed
		s.sched.mu.Unlock()
		if st.State.final() {
			return writeEvent(w, "done", st)
		}
		if st.Step != last || st.State != lastState {
			if err := writeEvent(w, "progress", st); err != nil {
				return nil // the client went away
			}
			last, lastState = st.Step, st.State
		}
		select {
		case <-ch:
		case <-tick.C:
			if _, err := w.Write([]byte(": keep-alive\n\n")); err != nil {
				return nil
			}
			_ = http.NewResponseController(w).Flush() // unsupported only in odd test writers
		case <-c.Request().Context().Done():
			return nil
		}
	}
}

func writeEvent(w *echo.Response, name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "event: %s\ndata: %s\n\n", name, b)
	if _, err := w.Write(buf.Bytes()); err != nil {
		return err
	}
	_ = http.NewResponseController(w).Flush() // unsupported only in odd test writers
	return nil
}
