package server

import (
	"context"
	"errors"
	"fmt"
	"image"
	"log/slog"
	"math"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// JobState is the life-cycle state of a job.
type JobState string

// Job states. A job moves queued -> running -> one of the three final states,
// or from queued straight to cancelled or failed.
const (
	StateQueued    JobState = "queued"
	StateRunning   JobState = "running"
	StateSucceeded JobState = "succeeded"
	StateFailed    JobState = "failed"
	StateCancelled JobState = "cancelled"
)

// final reports whether no more changes can happen.
func (s JobState) final() bool {
	return s == StateSucceeded || s == StateFailed || s == StateCancelled
}

// Causes of a job's context ending, told apart by context.Cause.
var (
	errCancelledByClient = errors.New("cancelled by the client")
	errClientGone        = errors.New("the client disconnected")
	errTimeout           = errors.New("the request timed out")
	errShutdown          = errors.New("the server is shutting down")
)

// job is one request for images: it lives in the queue until every image
// was handed to a batch, and finishes when the last batch does.
type job struct {
	id       string
	created  time.Time
	gen      genRequest
	ctx      context.Context
	cancel   context.CancelCauseFunc
	stopWait func() bool // unregisters the context.AfterFunc
	chunks   int         // number of batches its images need at most (for total steps)

	// guarded by scheduler.mu
	state      JobState
	dispatched int       // images handed to batches
	finished   int       // images done
	pngs       [][]byte  // len(gen.seeds): the PNG of each finished image
	step       int       // steps done over all its batches
	err        *APIError // set when failed or cancelled
	ended      time.Time
	changed    chan struct{} // closed and replaced on every change
	done       chan struct{} // closed when the state becomes final
	chunkStart int           // step count at the start of the running batch
}

// JobStatus is a snapshot of a job, as GET /v1/jobs/{id} returns it.
type JobStatus struct {
	ID            string         `json:"id"`
	Object        string         `json:"object"` // "job"
	Created       int64          `json:"created"`
	State         JobState       `json:"state"`
	Step          int            `json:"step"`
	TotalSteps    int            `json:"total_steps"`
	QueuePosition *int           `json:"queue_position,omitempty"` // jobs ahead of it; only while queued
	Error         *errorDetail   `json:"error,omitempty"`
	Result        *ImageResponse `json:"result,omitempty"`
}

// scheduler owns the queue and the one worker that runs the device.
type scheduler struct {
	gen         Generator
	maxBatch    int
	queueCap    int
	batchWindow time.Duration
	log         *slog.Logger
	m           *metrics

	mu      sync.Mutex
	queue   []*job            // jobs with images not yet dispatched, oldest first
	active  map[*job]struct{} // jobs submitted and not final
	closed  bool              // no more submissions
	running int               // jobs with images in the running batch
	wake    chan struct{}
	idle    chan struct{} // closed and replaced when queue and worker become idle

	avgBatch atomic.Int64 // exponential mean of batch seconds, as float bits
}

func newScheduler(gen Generator, maxBatch, queueCap int, window time.Duration, log *slog.Logger, m *metrics) *scheduler {
	return &scheduler{gen: gen, maxBatch: maxBatch, queueCap: queueCap, batchWindow: window, log: log, m: m,
		wake: make(chan struct{}, 1), idle: make(chan struct{}), active: map[*job]struct{}{}}
}

// newJob makes a job for g whose context derives from parent.
func (s *scheduler) newJob(parent context.Context, id string, g genRequest, timeout time.Duration) *job {
	ctx, cancel := context.WithCancelCause(parent)
	if timeout > 0 {
		var stop context.CancelFunc
		ctx, stop = context.WithTimeoutCause(ctx, timeout, errTimeout)
		c0 := cancel
		cancel = func(err error) { c0(err); stop() }
	}
	n := len(g.seeds)
	return &job{id: id, created: time.Now(), gen: g, ctx: ctx, cancel: cancel,
		chunks: (n + s.maxBatch - 1) / s.maxBatch, state: StateQueued,
		pngs: make([][]byte, n), changed: make(chan struct{}), done: make(chan struct{})}
}

// submit queues j, or fails with a 429 when the queue is full.
func (s *scheduler) submit(j *job) error {
	s.mu.Lock()
	if s.closed {
		err := &APIError{Status: http.StatusServiceUnavailable, Type: TypeUnavailable, RetryAfter: 5,
			Message: "the server is shutting down and takes no new work; retry on another instance"}
		j.state, j.err, j.ended = StateCancelled, err, time.Now()
		close(j.done)
		s.mu.Unlock()
		j.cancel(nil)
		return err
	}
	if len(s.queue) >= s.queueCap {
		retry := s.retryAfterLocked()
		err := &APIError{Status: http.StatusTooManyRequests, Type: TypeRateLimit, RetryAfter: retry,
			Message: fmt.Sprintf("the queue is full (%d requests); retry in about %d s", s.queueCap, retry)}
		j.state, j.err, j.ended = StateFailed, err, time.Now()
		close(j.done)
		s.mu.Unlock()
		j.cancel(nil)
		s.m.rejected.WithLabelValues("queue_full").Inc()
		return err
	}
	s.active[j] = struct{}{}
	s.queue = append(s.queue, j)
	s.m.queueDepth.Set(float64(len(s.queue)))
	// A job whose context ends leaves the queue at once and becomes final,
	// whether queued or running (a running batch finishes its other items).
	// The callback runs in its own goroutine, after this Unlock.
	j.stopWait = context.AfterFunc(j.ctx, func() { s.abort(j) })
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// retryAfterLocked estimates the seconds until the queue has room.
func (s *scheduler) retryAfterLocked() int {
	avg := math.Float64frombits(uint64(s.avgBatch.Load()))
	if avg <= 0 {
		avg = 1
	}
	sec := int(math.Ceil(avg * float64(len(s.queue)/s.maxBatch+1)))
	return max(1, min(sec, 120))
}

// abort ends j after its context ended: cancelled, or failed on timeout.
func (s *scheduler) abort(j *job) {
	cause := context.Cause(j.ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	if j.state.final() {
		return
	}
	s.removeLocked(j)
	if errors.Is(cause, errTimeout) || errors.Is(cause, context.DeadlineExceeded) {
		s.finishLocked(j, StateFailed, &APIError{Status: http.StatusGatewayTimeout, Type: TypeTimeout,
			Message: "the request timed out before its images were ready"})
		return
	}
	status := 499 // client closed request; only visible in logs and metrics
	if errors.Is(cause, errShutdown) {
		status = http.StatusServiceUnavailable
	}
	msg := "cancelled"
	if cause != nil {
		msg = cause.Error()
	}
	s.finishLocked(j, StateCancelled, &APIError{Status: status, Type: TypeCancelled, Message: msg})
}

// removeLocked drops j from the queue if it is there.
func (s *scheduler) removeLocked(j *job) {
	for i, q := range s.queue {
		if q == j {
			s.queue = append(s.queue[:i], s.queue[i+1:]...)
			s.m.queueDepth.Set(float64(len(s.queue)))
			s.checkIdleLocked()
			return
		}
	}
}

// finishLocked moves j to a final state.
func (s *scheduler) finishLocked(j *job, st JobState, err *APIError) {
	j.state = st
	j.err = err
	j.ended = time.Now()
	delete(s.active, j)
	s.m.jobs.WithLabelValues(string(st)).Inc()
	s.notifyLocked(j)
	close(j.done)
	if j.stopWait != nil {
		j.stopWait()
	}
	j.cancel(nil) // release the context's resources
}

// notifyLocked wakes the watchers of j.
func (s *scheduler) notifyLocked(j *job) {
	close(j.changed)
	j.changed = make(chan struct{})
}

// checkIdleLocked signals waitIdle when nothing is queued or running.
func (s *scheduler) checkIdleLocked() {
	if len(s.queue) == 0 && s.running == 0 {
		close(s.idle)
		s.idle = make(chan struct{})
	}
}

// waitIdle waits until the queue is empty and no batch runs, or ctx ends.
func (s *scheduler) waitIdle(ctx context.Context) error {
	for {
		s.mu.Lock()
		if len(s.queue) == 0 && s.running == 0 {
			s.mu.Unlock()
			return nil
		}
		ch := s.idle
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// status snapshots j.
func (s *scheduler) status(j *job) JobStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.statusLocked(j)
}

func (s *scheduler) statusLocked(j *job) JobStatus {
	st := JobStatus{ID: j.id, Object: "job", Created: j.created.Unix(), State: j.state, Step: j.step,
		TotalSteps: j.chunks * s.gen.Info().batchSteps(j.gen.settings)}
	if j.state == StateQueued {
		pos := 0
		for _, q := range s.queue {
			if q == j {
				break
			}
			pos++
		}
		st.QueuePosition = &pos
	}
	if j.err != nil {
		d := j.err.body().Error
		st.Error = &d
	}
	return st
}

// part is the share of one job in a batch: images [start, start+n).
type part struct {
	j        *job
	start, n int
}

// run is the worker loop: it takes batches from the queue until ctx ends.
func (s *scheduler) run(ctx context.Context) {
	for {
		parts, settings := s.next(ctx)
		if parts == nil {
			return
		}
		s.runBatch(ctx, parts, settings)
	}
}

// next blocks until a batch can be formed and takes it from the queue:
// the oldest job's settings decide, and every queued job with the same
// settings (so the same known image, Settings.Inpaint) joins, oldest first, up to maxBatch images. It returns nil when
// ctx ends.
func (s *scheduler) next(ctx context.Context) ([]part, Settings) {
	for {
		s.mu.Lock()
		if len(s.queue) > 0 {
			if s.batchWindow > 0 && s.queuedImagesLocked() < s.maxBatch && time.Since(s.queue[0].created) < s.batchWindow {
				wait := s.batchWindow - time.Since(s.queue[0].created)
				s.mu.Unlock()
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return nil, Settings{}
				case <-t.C:
				case <-s.wake:
					t.Stop()
				}
				continue
			}
			parts, set := s.takeLocked()
			s.mu.Unlock()
			return parts, set
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, Settings{}
		case <-s.wake:
		}
	}
}

func (s *scheduler) queuedImagesLocked() int {
	k := 0
	for _, j := range s.queue {
		k += len(j.gen.seeds) - j.dispatched
	}
	return k
}

// takeLocked forms the next batch.
func (s *scheduler) takeLocked() ([]part, Settings) {
	set := s.queue[0].gen.settings
	var parts []part
	room := s.maxBatch
	kept := s.queue[:0]
	for _, j := range s.queue {
		if room == 0 || j.gen.settings != set {
			kept = append(kept, j)
			continue
		}
		n := min(room, len(j.gen.seeds)-j.dispatched)
		parts = append(parts, part{j: j, start: j.dispatched, n: n})
		j.dispatched += n
		room -= n
		j.chunkStart = j.step
		if j.state == StateQueued {
			j.state = StateRunning
		}
		s.notifyLocked(j)
		s.running++
		if j.dispatched < len(j.gen.seeds) {
			kept = append(kept, j) // the rest waits, still first in line
		}
	}
	clear(s.queue[len(kept):])
	s.queue = kept
	s.m.queueDepth.Set(float64(len(s.queue)))
	return parts, set
}

// runBatch generates the images of parts as one model batch.
func (s *scheduler) runBatch(ctx context.Context, parts []part, set Settings) {
	var items []Item
	live := atomic.Int32{}
	bctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var stops []func() bool
	for _, p := range parts {
		for i := p.start; i < p.start+p.n; i++ {
			items = append(items, Item{Seed: p.j.gen.seeds[i], Class: p.j.gen.classes[i], Prompt: p.j.gen.prompt, Known: p.j.gen.known, Done: p.j.ctx.Done()})
		}
		live.Add(1)
		// When every job of the batch is gone, stop the batch.
		stops = append(stops, context.AfterFunc(p.j.ctx, func() {
			if live.Add(-1) == 0 {
				cancel(errClientGone)
			}
		}))
	}
	s.m.batchSize.Observe(float64(len(items)))
	start := time.Now()
	imgs, err := s.generate(bctx, set, items, func(step, total int) {
		s.m.steps.Inc()
		s.m.imageSteps.Add(float64(len(items)))
		s.mu.Lock()
		for _, p := range parts {
			if !p.j.state.final() {
				p.j.step = p.j.chunkStart + step
				s.notifyLocked(p.j)
			}
		}
		s.mu.Unlock()
	})
	for _, stop := range stops {
		stop()
	}
	sec := time.Since(start).Seconds()
	s.m.batchSeconds.Observe(sec)
	old := math.Float64frombits(uint64(s.avgBatch.Load()))
	if old == 0 {
		old = sec
	}
	s.avgBatch.Store(int64(math.Float64bits(0.8*old + 0.2*sec)))
	if err == nil && len(imgs) != len(items) {
		err = fmt.Errorf("generator returned %d images for %d items", len(imgs), len(items))
	}
	// Encode outside the lock, once: jobs keep PNG bytes, not pixels.
	pngs := make([][]byte, len(imgs))
	for i, img := range imgs {
		if err != nil {
			break
		}
		if img != nil {
			if pngs[i], err = encodePNG(img); err != nil {
				err = fmt.Errorf("image %d: %w", i, err)
			}
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	k := 0
	for _, p := range parts {
		s.running--
		j := p.j
		if j.state.final() {
			k += p.n
			continue
		}
		if err != nil {
			if j.ctx.Err() == nil {
				s.log.Error("generate failed", "job", j.id, "err", err)
				s.removeLocked(j)
				s.finishLocked(j, StateFailed, &APIError{Status: http.StatusInternalServerError, Type: TypeServer,
					Message: "the model failed to generate the images; see the server log"})
			}
			k += p.n
			continue
		}
		missing := false
		for i := 0; i < p.n; i++ {
			j.pngs[p.start+i] = pngs[k+i]
			if pngs[k+i] == nil {
				missing = true
			}
		}
		k += p.n
		if missing && j.ctx.Err() == nil {
			s.log.Error("generator returned no image for a live item", "job", j.id)
			s.removeLocked(j)
			s.finishLocked(j, StateFailed, &APIError{Status: http.StatusInternalServerError, Type: TypeServer,
				Message: "the model returned no image; see the server log"})
			continue
		}
		j.finished += p.n
		s.m.images.Add(float64(p.n))
		j.step = j.chunkStart + s.gen.Info().batchSteps(set)
		if j.finished == len(j.gen.seeds) {
			s.finishLocked(j, StateSucceeded, nil)
		} else {
			s.notifyLocked(j)
		}
	}
	s.checkIdleLocked()
}

// generate calls the Generator, turning a panic into an error so that one
// bad batch cannot kill the worker.
func (s *scheduler) generate(ctx context.Context, set Settings, items []Item, progress func(step, total int)) (imgs []image.Image, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("generator panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			imgs, err = nil, fmt.Errorf("generator panicked: %v", r)
		}
	}()
	return s.gen.Generate(ctx, set, items, progress)
}
