package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Causes with which a worker ends a local job without finishing it.
var (
	errHandBack = errors.New("the worker is stopping; the job goes back to the queue")
	errNotOwner = errors.New("the job is no longer this worker's (cancelled or taken over)")
)

// worker takes jobs from the cluster's queue into the Server's local
// scheduler, which batches and runs them exactly as in the in-memory
// mode, and mirrors each local job into Redis: its progress at every step
// and its final state with the images.
//
// It takes jobs only while the local scheduler is idle, up to MaxBatch
// images (entries delivered later, or claimed from dead workers, wait in
// Redis where an idle worker can take them). Every heartbeat it renews the
// claim on its entries (XCLAIM to itself), so only a worker that stopped
// heartbeating for ClaimIdle has entries another worker takes (XAUTOCLAIM).
type worker struct {
	cl *cluster
	s  *Server
	st *store
	id string

	pullCtx  context.Context
	stopPull context.CancelFunc
	pullDone chan struct{}

	// finishCtx bounds Redis writes of final states; it ends at close.
	finishCtx  context.Context
	stopFinish context.CancelFunc

	mu       sync.Mutex
	inflight map[string]*localJob // by job id
	mirrors  sync.WaitGroup
}

// localJob is a cluster job this worker runs.
type localJob struct {
	j        *job
	entry    string // stream entry id
	attempts int    // the fencing token of this run
	total    int
}

func newWorker(cl *cluster) *worker {
	w := &worker{cl: cl, s: cl.s, st: cl.st, id: cl.id, inflight: map[string]*localJob{}, pullDone: make(chan struct{})}
	w.pullCtx, w.stopPull = context.WithCancel(context.Background())
	w.finishCtx, w.stopFinish = context.WithCancel(context.Background())
	return w
}

func (w *worker) start() {
	go func() {
		defer close(w.pullDone)
		w.pullLoop()
	}()
	w.cl.bg.Add(1)
	go w.heartbeatLoop()
}

// stopPulling stops taking jobs and waits for the pulling goroutine (at
// most one blocking read, about a second).
func (w *worker) stopPulling() {
	w.stopPull()
	<-w.pullDone
}

// claimEvery is how often the worker looks for entries of dead workers.
func (w *worker) claimEvery() time.Duration {
	return max(50*time.Millisecond, min(w.cl.opts.ClaimIdle/4, 5*time.Second))
}

// pullLoop takes a batch of jobs whenever the local scheduler is idle.
func (w *worker) pullLoop() {
	backoff := 50 * time.Millisecond
	var lastClaim time.Time
	for {
		if err := w.s.sched.waitIdle(w.pullCtx); err != nil {
			return
		}
		claim := time.Since(lastClaim) >= w.claimEvery()
		if claim {
			lastClaim = time.Now()
		}
		js, err := w.take(w.pullCtx, claim)
		if len(js) > 0 {
			w.s.sched.submitAll(js)
		}
		if err == nil {
			backoff = 50 * time.Millisecond
			continue
		}
		if w.pullCtx.Err() != nil {
			return
		}
		w.cl.redisError("pull", err)
		select {
		case <-w.pullCtx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// take gathers up to MaxBatch images of jobs: first entries claimed from
// dead workers (when claim is set), then new entries, waiting for the
// first one at most claimEvery, then taking the rest of the batch in one
// round trip (takeScript), and, with a BatchWindow, waiting for more until
// the window closes.
func (w *worker) take(ctx context.Context, claim bool) ([]*job, error) {
	maxBatch := w.s.opts.MaxBatch
	var out []*job
	images := 0
	add := func(j *job) {
		if j != nil {
			out = append(out, j)
			images += len(j.gen.seeds)
		}
	}
	if claim {
		msgs, _, err := w.st.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{Stream: w.st.queueKey(), Group: clusterGroup,
			Consumer: w.id, MinIdle: w.cl.opts.ClaimIdle, Start: "0-0", Count: int64(maxBatch)}).Result()
		if err != nil {
			if isNoGroup(err) {
				err = w.st.ensureGroup(ctx)
			}
			return out, err
		}
		if len(msgs) > 0 {
			w.cl.m.claimed.Add(float64(len(msgs)))
			w.s.log.Warn("claimed jobs of a worker that stopped heartbeating", "entries", len(msgs))
		}
		for _, m := range msgs {
			add(w.begin(ctx, m, true))
		}
	}
	var windowEnd time.Time
	for images < maxBatch {
		block := w.claimEvery()
		if claim {
			block = min(block, time.Second)
		}
		if len(out) > 0 {
			ts, err := w.st.take(ctx, w.id, w.cl.opts.MaxAttempts, maxBatch-images, w.exhaustedErr(), errTimedOut())
			if err != nil {
				return out, err
			}
			for _, t := range ts {
				add(w.adopt(ctx, t.id, t.entry, t.res, t.err, false))
			}
			if images >= maxBatch || w.s.opts.BatchWindow <= 0 {
				break
			}
			if windowEnd.IsZero() {
				windowEnd = time.Now().Add(w.s.opts.BatchWindow)
			}
			if block = time.Until(windowEnd); block < time.Millisecond {
				break
			}
		}
		streams, err := w.st.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: clusterGroup, Consumer: w.id,
			Streams: []string{w.st.queueKey(), ">"}, Count: 1, Block: block}).Result()
		if errors.Is(err, redis.Nil) {
			if len(out) == 0 {
				return out, nil
			}
			continue // the window may still be open
		}
		if err != nil {
			if isNoGroup(err) {
				err = w.st.ensureGroup(ctx)
			}
			return out, err
		}
		for _, st := range streams {
			for _, m := range st.Messages {
				add(w.begin(ctx, m, false))
			}
		}
	}
	return out, nil
}

// exhaustedErr is the error of a job whose workers died MaxAttempts times.
func (w *worker) exhaustedErr() *APIError {
	return &APIError{Status: http.StatusInternalServerError, Type: TypeServer, Code: "worker_lost",
		Message: fmt.Sprintf("the job was started %d times and each time its worker stopped before finishing (killed, crashed or lost); "+
			"it is not retried again (--max-attempts %d)", w.cl.opts.MaxAttempts, w.cl.opts.MaxAttempts)}
}

func errTimedOut() *APIError {
	return &APIError{Status: http.StatusGatewayTimeout, Type: TypeTimeout, Message: "the request timed out before its images were ready"}
}

// begin gives entry m's job to this worker (startScript) and makes its
// local job, or returns nil when there is nothing to run (the job ended,
// expired or failed too often; or Redis failed, leaving the entry pending
// for a later claim).
func (w *worker) begin(ctx context.Context, m redis.XMessage, claimed bool) *job {
	id, _ := m.Values["job"].(string)
	if id == "" {
		w.s.log.Error("queue entry without a job id; dropping it", "entry", m.ID)
		_ = w.st.rdb.XAck(ctx, w.st.queueKey(), clusterGroup, m.ID).Err()
		return nil
	}
	w.mu.Lock()
	_, mine := w.inflight[id]
	w.mu.Unlock()
	if mine {
		return nil // this worker runs it; the claim only renewed the entry
	}
	res, err := w.st.start(ctx, id, m.ID, w.id, w.cl.opts.MaxAttempts, w.exhaustedErr(), errTimedOut())
	if err != nil && res.verdict == "" {
		w.cl.redisError("start", err)
		return nil
	}
	return w.adopt(ctx, id, m.ID, res, err, claimed)
}

// adopt makes the local job of a started entry (decodeErr: its stored
// request did not decode).
func (w *worker) adopt(ctx context.Context, id, entry string, res startResult, decodeErr error, claimed bool) *job {
	switch res.verdict {
	case "run":
	case "exhausted":
		w.cl.m.exhausted.Inc()
		w.s.m.jobs.WithLabelValues(string(StateFailed)).Inc()
		w.s.log.Error("job failed: its workers died too often", "job", id, "max_attempts", w.cl.opts.MaxAttempts)
		return nil
	case "expired":
		w.s.m.jobs.WithLabelValues(string(StateFailed)).Inc()
		return nil
	default:
		return nil
	}
	g, err := res.request.gen()
	if decodeErr != nil {
		err = decodeErr
	}
	if err == nil {
		err = w.check(g, res.model)
	}
	if err != nil {
		w.s.log.Error("job cannot run on this worker", "job", id, "err", err)
		ae := &APIError{Status: http.StatusInternalServerError, Type: TypeServer, Code: "model_mismatch", Message: err.Error()}
		if _, ferr := w.st.finish(ctx, id, w.id, res.attempts, StateFailed, ae, nil); ferr != nil {
			w.cl.redisError("finish", ferr)
		}
		return nil
	}
	if claimed || res.attempts > 1 {
		w.cl.m.retried.Inc()
		w.s.log.Warn("running a job again from the start", "job", id, "attempt", res.attempts)
	}
	var limit time.Duration
	if !res.deadline.IsZero() {
		limit = max(time.Until(res.deadline), time.Nanosecond)
	}
	j := w.s.sched.newJob(w.s.jobsCtx, id, g, limit)
	if !res.created.IsZero() {
		j.created = res.created
	}
	lj := &localJob{j: j, entry: entry, attempts: res.attempts, total: j.chunks * w.s.info.batchSteps(g.settings)}
	w.mu.Lock()
	w.inflight[id] = lj
	w.mu.Unlock()
	w.mirrors.Add(1)
	go w.mirror(lj)
	return j
}

// check refuses a stored request this worker's model cannot run (an api
// replica configured with another model).
func (w *worker) check(g genRequest, model string) error {
	info := w.s.info
	if model != "" && model != info.Name {
		return fmt.Errorf("the job is for model %q; this worker serves %q", model, info.Name)
	}
	if g.settings.Steps < 1 || g.settings.Steps > info.TrainSteps {
		return fmt.Errorf("steps %d outside this worker's model range 1 to %d", g.settings.Steps, info.TrainSteps)
	}
	for _, c := range g.classes {
		if (info.NumClasses == 0 && c != -1) || (info.NumClasses > 0 && (c < 0 || c >= info.NumClasses)) {
			return fmt.Errorf("class %d does not exist in this worker's model (%d classes)", c, info.NumClasses)
		}
	}
	if g.settings.Guidance != 0 && info.NumClasses == 0 && !info.Text {
		return fmt.Errorf("guidance needs a class-conditional or text model; this worker's %q is unconditional", info.Name)
	}
	if g.prompt != "" && !info.Text {
		return fmt.Errorf("the job has a text prompt; this worker's %q is not a text model", info.Name)
	}
	if len(g.prompt) > MaxPromptBytes {
		return fmt.Errorf("prompt of %d bytes: the limit is %d", len(g.prompt), MaxPromptBytes)
	}
	if g.settings.ClassifierScale != 0 && info.Classifier == "" {
		return fmt.Errorf("classifier_scale needs a classifier; this worker has none (ddpm serve --classifier)")
	}
	if !(g.settings.Eta >= 0 && g.settings.Eta <= 1) {
		return fmt.Errorf("eta %g outside [0, 1]", g.settings.Eta)
	}
	if k := g.known; k != nil {
		if !info.Inpaint {
			return fmt.Errorf("the job inpaints (init_image and mask); this worker's %q does not", info.Name)
		}
		if k.Image.C != info.Channels || k.Image.H != info.ImageSize {
			return fmt.Errorf("the job's init image is %d channels of %dx%d; this worker's model makes %d channels of %dx%d",
				k.Image.C, k.Image.H, k.Image.W, info.Channels, info.ImageSize, info.ImageSize)
		}
	}
	return nil
}

// submitAll queues local jobs at once, so that they can share a batch.
func (s *scheduler) submitAll(js []*job) {
	s.mu.Lock()
	for _, j := range js {
		if s.closed {
			j.cancel(errHandBack) // first: the mirror reads the cause once the job is final
			j.state, j.ended = StateCancelled, time.Now()
			j.err = &APIError{Status: http.StatusServiceUnavailable, Type: TypeUnavailable, Message: errHandBack.Error()}
			s.notifyLocked(j)
			close(j.done)
			continue
		}
		s.active[j] = struct{}{}
		s.queue = append(s.queue, j)
		j.stopWait = context.AfterFunc(j.ctx, func() { s.abort(j) })
	}
	s.m.queueDepth.Set(float64(len(s.queue)))
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// mirror writes local job lj's progress and final state to Redis.
func (w *worker) mirror(lj *localJob) {
	defer w.mirrors.Done()
	defer func() {
		w.mu.Lock()
		if w.inflight[lj.j.id] == lj {
			delete(w.inflight, lj.j.id)
		}
		w.mu.Unlock()
	}()
	j, sched := lj.j, w.s.sched
	last := 0
	for {
		sched.mu.Lock()
		step, final, ch := j.step, j.state.final(), j.changed
		sched.mu.Unlock()
		if final {
			break
		}
		if step != last && j.ctx.Err() == nil {
			last = step
			ctx, cancel := context.WithTimeout(w.finishCtx, 5*time.Second)
			ok, err := w.st.progress(ctx, j.id, w.id, lj.attempts, step, lj.total)
			cancel()
			switch {
			case err != nil:
				w.cl.m.redisErrors.WithLabelValues("progress").Inc()
			case !ok:
				j.cancel(errNotOwner)
			}
		}
		<-ch
	}
	cause := context.Cause(j.ctx)
	switch {
	case errors.Is(cause, errHandBack):
		w.retry("hand_back", func(ctx context.Context) error {
			ok, err := w.st.handBack(ctx, j.id, w.id, lj.attempts)
			if err == nil && ok {
				w.cl.m.handedBack.Inc()
				w.s.log.Info("handed a job back to the queue", "job", j.id)
			}
			return err
		})
		return
	case errors.Is(cause, errNotOwner):
		return // cancelled in Redis, or another worker's now
	}
	sched.mu.Lock()
	state, apiErr, pngs := j.state, j.err, j.pngs
	sched.mu.Unlock()
	if state != StateSucceeded {
		pngs = nil
	}
	w.retry("finish", func(ctx context.Context) error {
		_, err := w.st.finish(ctx, j.id, w.id, lj.attempts, state, apiErr, pngs)
		return err
	})
}

// retry runs a Redis write until it succeeds or the worker closes; if it
// never does, the entry stays pending and another worker reruns the job.
func (w *worker) retry(op string, f func(ctx context.Context) error) {
	backoff := 50 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(w.finishCtx, 5*time.Second)
		err := f(ctx)
		cancel()
		if err == nil {
			return
		}
		w.cl.redisError(op, err)
		select {
		case <-w.finishCtx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// cancelled is the hub's callback for a job cancelled in the cluster.
func (w *worker) cancelled(id string) {
	w.mu.Lock()
	lj := w.inflight[id]
	w.mu.Unlock()
	if lj != nil {
		lj.j.cancel(errNotOwner)
	}
}

// handBackAll ends every local job that is not final with errHandBack:
// their mirrors return them to the queue.
func (w *worker) handBackAll() {
	w.mu.Lock()
	ljs := make([]*localJob, 0, len(w.inflight))
	for _, lj := range w.inflight {
		ljs = append(ljs, lj)
	}
	w.mu.Unlock()
	for _, lj := range ljs {
		lj.j.cancel(errHandBack)
	}
	for _, lj := range ljs {
		<-lj.j.done
	}
}

// wait waits for the mirrors to write what they hold, at most 10 s, then
// gives up on Redis (the entries stay pending and are claimed later).
func (w *worker) wait() {
	done := make(chan struct{})
	go func() { w.mirrors.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		w.s.log.Warn("redis unreachable at shutdown; unfinished jobs stay pending and another worker will take them")
	}
	w.stopFinish()
	<-done
}

// heartbeatLoop renews this worker's liveness key and its entries' claims.
func (w *worker) heartbeatLoop() {
	defer w.cl.bg.Done()
	hb := w.cl.opts.Heartbeat
	t := time.NewTicker(hb)
	defer t.Stop()
	info, _ := json.Marshal(map[string]any{"id": w.id, "role": w.cl.role, "model": w.s.info.Name, "device": w.s.info.Device,
		"max_batch": w.s.opts.MaxBatch, "started": w.s.start.UTC().Format(time.RFC3339)})
	failing := false
	for beats := 0; ; beats++ {
		ctx, cancel := context.WithTimeout(w.cl.ctx, hb)
		err := w.beat(ctx, info)
		if err == nil && beats%30 == 0 {
			err = w.pruneConsumers(ctx)
		}
		cancel()
		switch {
		case err != nil && w.cl.ctx.Err() == nil:
			if !failing {
				w.cl.redisError("heartbeat", err)
			} else {
				w.cl.m.redisErrors.WithLabelValues("heartbeat").Inc()
			}
			failing = true
		case err == nil:
			failing = false
		}
		select {
		case <-w.cl.ctx.Done():
			w.goodbye()
			return
		case <-t.C:
		}
	}
}

func (w *worker) beat(ctx context.Context, info []byte) error {
	w.mu.Lock()
	entries := make([]string, 0, len(w.inflight))
	for _, lj := range w.inflight {
		entries = append(entries, lj.entry)
	}
	w.mu.Unlock()
	now := time.Now()
	hb := w.cl.opts.Heartbeat
	pipe := w.st.rdb.Pipeline()
	pipe.Set(ctx, w.st.workerKey(w.id), info, 3*hb)
	pipe.ZAdd(ctx, w.st.workersKey(), redis.Z{Score: float64(now.UnixMilli()), Member: w.id})
	pipe.ZRemRangeByScore(ctx, w.st.workersKey(), "-inf", fmt.Sprint(now.Add(-time.Hour).UnixMilli()))
	if len(entries) > 0 {
		// Renew: an entry's idle time restarts, so no one claims it.
		pipe.XClaimJustID(ctx, &redis.XClaimArgs{Stream: w.st.queueKey(), Group: clusterGroup, Consumer: w.id, Messages: entries})
	}
	_, err := pipe.Exec(ctx)
	if err != nil {
		return fmt.Errorf("redis: heartbeat: %w", err)
	}
	return nil
}

// pruneConsumers deletes the consumers of the group that hold no entry and
// have not read for a long while: those of workers gone for good (a live
// worker that loses its consumer gets it back at its next read).
func (w *worker) pruneConsumers(ctx context.Context) error {
	cs, err := w.st.rdb.XInfoConsumers(ctx, w.st.queueKey(), clusterGroup).Result()
	if err != nil {
		if isNoGroup(err) {
			return nil
		}
		return fmt.Errorf("redis: list consumers: %w", err)
	}
	old := max(10*w.cl.opts.ClaimIdle, 5*time.Minute)
	for _, c := range cs {
		if c.Pending == 0 && c.Idle > old && c.Name != w.id {
			if err := w.st.rdb.XGroupDelConsumer(ctx, w.st.queueKey(), clusterGroup, c.Name).Err(); err != nil {
				return fmt.Errorf("redis: delete consumer %s: %w", c.Name, err)
			}
		}
	}
	return nil
}

// goodbye removes this worker's liveness records when it stops.
func (w *worker) goodbye() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	pipe := w.st.rdb.Pipeline()
	pipe.Del(ctx, w.st.workerKey(w.id))
	pipe.ZRem(ctx, w.st.workersKey(), w.id)
	_, _ = pipe.Exec(ctx)
}
