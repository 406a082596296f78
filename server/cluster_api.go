package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
)

// pollEvery is how often a watcher re-reads a job besides its events: the
// bound on the delay a lost pub/sub message (Redis reconnecting) adds.
const pollEvery = 500 * time.Millisecond

// deadlineGrace lets a worker report a timeout itself before an api
// replica fails a job whose deadline passed.
const deadlineGrace = 2 * time.Second

// notAPI is the answer of a worker replica to requests for new work.
func (cl *cluster) notAPI() *APIError {
	return &APIError{Status: http.StatusNotFound, Type: TypeInvalidRequest, Code: "not_an_api_replica",
		Message: "this replica runs with --role worker: it answers /healthz, /readyz, /metrics, /v1/models and job reads; " +
			"send generation requests and cancels to an api replica"}
}

// enqueue stores g as a new queued job of the cluster.
func (cl *cluster) enqueue(ctx context.Context, id string, g genRequest) (created time.Time, queued int, err error) {
	s := cl.s
	created = time.Now()
	var deadline time.Time
	if s.opts.Timeout > 0 {
		deadline = created.Add(s.opts.Timeout)
	}
	chunks := (len(g.seeds) + s.opts.MaxBatch - 1) / s.opts.MaxBatch
	ok, queued, err := cl.st.enqueue(ctx, id, g, chunks*s.info.batchSteps(g.settings), created, deadline, s.info.Name,
		s.opts.QueueSize, cl.st.activeTTL())
	if err != nil {
		cl.redisError("enqueue", err)
		return created, 0, errStoreDown()
	}
	if !ok {
		s.m.rejected.WithLabelValues("queue_full").Inc()
		return created, queued, &APIError{Status: http.StatusTooManyRequests, Type: TypeRateLimit, RetryAfter: 5,
			Message: fmt.Sprintf("the cluster's queue is full (%d requests); retry in a few seconds", s.opts.QueueSize)}
	}
	return created, queued, nil
}

func (cl *cluster) createJob(c echo.Context) (any, error) {
	if !cl.role.api() {
		return nil, cl.notAPI()
	}
	s := cl.s
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
	created, queued, err := cl.enqueue(c.Request().Context(), id, g)
	if err != nil {
		return nil, err
	}
	pos := max(queued-1, 0)
	chunks := (len(g.seeds) + s.opts.MaxBatch - 1) / s.opts.MaxBatch
	st := JobStatus{ID: id, Object: "job", Created: created.Unix(), State: StateQueued,
		TotalSteps: chunks * s.info.batchSteps(g.settings), QueuePosition: &pos}
	return result{status: http.StatusAccepted, body: st, headers: map[string]string{"Location": "/v1/jobs/" + id}}, nil
}

// load reads job id, failing it first when its deadline passed long ago
// (no worker is running it, or its worker died): errors are APIErrors.
func (cl *cluster) load(ctx context.Context, id string) (*jobRecord, error) {
	rec, err := cl.st.get(ctx, id)
	if err == nil && !rec.State.final() && !rec.Deadline.IsZero() && time.Now().After(rec.Deadline.Add(deadlineGrace)) {
		_, err = cl.st.end(ctx, id, StateFailed, &APIError{Status: http.StatusGatewayTimeout, Type: TypeTimeout,
			Message: "the request timed out before its images were ready"}, true)
		if err == nil {
			rec, err = cl.st.get(ctx, id)
		}
	}
	switch {
	case errors.Is(err, errJobNotFound):
		return nil, &APIError{Status: http.StatusNotFound, Type: TypeInvalidRequest, Param: "id", Code: "job_not_found",
			Message: fmt.Sprintf("no job %q (finished jobs are kept for %s)", truncate(id), cl.opts.ResultTTL)}
	case err != nil:
		if ctx.Err() == nil {
			cl.redisError("read", err)
		}
		return nil, errStoreDown()
	}
	return rec, nil
}

// status is rec as GET /v1/jobs/{id} answers it; with images when full.
func (cl *cluster) status(ctx context.Context, rec *jobRecord, full bool) (JobStatus, error) {
	st := JobStatus{ID: rec.ID, Object: "job", Created: rec.Created.Unix(), State: rec.State, Step: rec.Step, TotalSteps: rec.Total}
	if rec.State == StateQueued && rec.Entry != "" {
		if pos, err := cl.st.position(ctx, rec.Entry); err == nil {
			st.QueuePosition = &pos
		}
	}
	if rec.Err != nil {
		d := rec.Err.body().Error
		st.Error = &d
	}
	if full && rec.State == StateSucceeded {
		pngs, err := cl.images(ctx, rec)
		if err != nil {
			return st, err
		}
		g, _ := rec.Request.gen() // checked by images
		st.Result = imageResponse(g, pngs, rec.Ended)
	}
	return st, nil
}

// images reads the PNGs of a succeeded job.
func (cl *cluster) images(ctx context.Context, rec *jobRecord) ([][]byte, error) {
	g, err := rec.Request.gen()
	if err != nil {
		cl.s.log.Error("stored job does not decode", "job", rec.ID, "err", err)
		return nil, err
	}
	pngs, err := cl.st.results(ctx, rec.ID)
	if err != nil {
		cl.redisError("read", err)
		return nil, errStoreDown()
	}
	if len(pngs) != len(g.seeds) {
		return nil, &APIError{Status: http.StatusServiceUnavailable, Type: TypeUnavailable, Code: "result_lost",
			Message: fmt.Sprintf("the job's images are gone from the job store (%d of %d); retry the request", len(pngs), len(g.seeds))}
	}
	return pngs, nil
}

func (cl *cluster) getJob(c echo.Context) (any, error) {
	ctx := c.Request().Context()
	id := c.Param("id")
	rec, err := cl.load(ctx, id)
	if err != nil {
		return nil, err
	}
	if w := c.QueryParam("wait"); w != "" {
		sec, err := strconv.ParseFloat(w, 64)
		if err != nil || !(sec >= 0 && sec <= maxWait) {
			return nil, badRequest("wait", "wait=%q: want seconds from 0 to %d", truncate(w), maxWait)
		}
		wctx, cancel := context.WithTimeout(ctx, time.Duration(sec*float64(time.Second)))
		defer cancel()
		rec, err = cl.waitFinal(wctx, id, rec)
		if err != nil {
			return nil, err
		}
	}
	return cl.status(ctx, rec, true)
}

// waitFinal waits until job id is final or ctx ends (the long poll's
// timer, the client, or this replica closing) and returns its last record.
// Redis errors while waiting are retried; they end the wait only when
// ctx ends with Redis still away.
func (cl *cluster) waitFinal(ctx context.Context, id string, rec *jobRecord) (*jobRecord, error) {
	events, unwatch := cl.hub.watch(id)
	defer unwatch()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	var lastErr error
	first := true // read once now: the job may have changed before the watch began
	for {
		if rec != nil && rec.State.final() {
			return rec, nil
		}
		if first {
			first = false
		} else {
			select {
			case <-ctx.Done():
				if rec == nil {
					return nil, lastErr
				}
				return rec, nil
			case <-cl.syncCtx.Done(): // draining: answer now
				if rec == nil {
					return nil, lastErr
				}
				return rec, nil
			case <-events:
			case <-tick.C:
			}
		}
		r, err := cl.load(context.WithoutCancel(ctx), id)
		var ae *APIError
		switch {
		case err == nil:
			rec, lastErr = r, nil
		case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
			return nil, &APIError{Status: http.StatusServiceUnavailable, Type: TypeUnavailable, Code: "job_lost",
				Message: "the job is gone from the job store (Redis restarted without its data?); retry the request"}
		default:
			rec, lastErr = nil, err
		}
	}
}

func (cl *cluster) deleteJob(c echo.Context) (any, error) {
	if !cl.role.api() {
		return nil, cl.notAPI()
	}
	ctx := c.Request().Context()
	id := c.Param("id")
	_, err := cl.st.end(ctx, id, StateCancelled, &APIError{Status: 499, Type: TypeCancelled, Message: errCancelledByClient.Error()}, false)
	if err != nil && !errors.Is(err, errJobNotFound) {
		cl.redisError("cancel", err)
		return nil, errStoreDown()
	}
	rec, err := cl.load(ctx, id)
	if err != nil {
		return nil, err
	}
	return cl.status(ctx, rec, true)
}

// events streams a job's progress as the in-memory server does, for any
// job of the cluster: "progress" on every change, "done" at the end. While
// Redis is away the stream stays open with keep-alives; if the job is gone
// when Redis is back, an "error" event ends it.
func (cl *cluster) events(c echo.Context) error {
	s := cl.s
	ctx := c.Request().Context()
	id := c.Param("id")
	events, unwatch := cl.hub.watch(id) // before the first read: no change is missed
	defer unwatch()
	rec, err := cl.load(ctx, id)
	if err != nil {
		return s.writeError(c, err)
	}
	w := c.Response()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	extendWrite(c, s.opts.WriteTimeout)
	w.WriteHeader(http.StatusOK)
	if c.Request().Method == http.MethodHead {
		return nil
	}
	poll := time.NewTicker(pollEvery)
	defer poll.Stop()
	keep := time.NewTicker(15 * time.Second)
	defer keep.Stop()
	last := -1
	var lastState JobState
	for {
		if rec != nil {
			st, err := cl.status(ctx, rec, false)
			if err == nil {
				if st.State.final() {
					extendWrite(c, s.opts.WriteTimeout)
					return writeEvent(w, "done", st)
				}
				if st.Step != last || st.State != lastState {
					extendWrite(c, s.opts.WriteTimeout)
					if err := writeEvent(w, "progress", st); err != nil {
						return nil // the client went away
					}
					last, lastState = st.Step, st.State
				}
			}
		}
		select {
		case <-events:
		case <-poll.C:
		case <-keep.C:
			extendWrite(c, s.opts.WriteTimeout)
			if _, err := w.Write([]byte(": keep-alive\n\n")); err != nil {
				return nil
			}
			_ = http.NewResponseController(w).Flush()
		case <-ctx.Done():
			return nil
		case <-cl.syncCtx.Done():
			return nil // this replica drains; the client reconnects to another
		}
		r, err := cl.load(ctx, id)
		var ae *APIError
		switch {
		case err == nil:
			rec = r
		case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
			extendWrite(c, s.opts.WriteTimeout)
			return writeEvent(w, "error", ae.body())
		default:
			rec = nil // Redis away: keep the stream open
		}
	}
}

// runSync queues g as a cluster job and waits for its images: the
// synchronous endpoints of an api replica. A client that goes away cancels
// the job; so does the drain deadline.
func (cl *cluster) runSync(c echo.Context, g genRequest) ([][]byte, error) {
	if !cl.role.api() {
		return nil, cl.notAPI()
	}
	s := cl.s
	if err := s.refuseIfDraining(); err != nil {
		return nil, err
	}
	cl.syncWG.Add(1)
	defer cl.syncWG.Done()
	id, err := newJobID()
	if err != nil {
		return nil, err
	}
	ctx := c.Request().Context()
	if _, _, err := cl.enqueue(ctx, id, g); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(cl.syncCtx, func() { cancel(context.Cause(cl.syncCtx)) })
	defer stop()
	if s.opts.Timeout > 0 {
		var c2 context.CancelFunc
		wctx, c2 = context.WithTimeoutCause(wctx, s.opts.Timeout+deadlineGrace, errTimeout)
		defer c2()
	}
	rec, err := cl.waitFinal(wctx, id, nil)
	if err != nil && rec == nil && wctx.Err() == nil {
		return nil, err
	}
	if rec == nil || !rec.State.final() {
		// The wait ended first: end the job for everyone.
		cause := context.Cause(wctx)
		var st JobState
		var ae *APIError
		switch {
		case errors.Is(cause, errTimeout):
			st, ae = StateFailed, &APIError{Status: http.StatusGatewayTimeout, Type: TypeTimeout,
				Message: "the request timed out before its images were ready"}
		case errors.Is(cause, errShutdown):
			st, ae = StateCancelled, &APIError{Status: http.StatusServiceUnavailable, Type: TypeCancelled, Message: errShutdown.Error()}
		default:
			st, ae = StateCancelled, &APIError{Status: 499, Type: TypeCancelled, Message: errClientGone.Error()}
		}
		bg, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := cl.st.end(bg, id, st, ae, false); err != nil && !errors.Is(err, errJobNotFound) {
			cl.redisError("cancel", err)
			return nil, errStoreDown()
		}
		if rec, err = cl.load(bg, id); err != nil {
			return nil, err
		}
	}
	if rec.State != StateSucceeded {
		if rec.Err != nil {
			return nil, rec.Err
		}
		return nil, &APIError{Status: http.StatusInternalServerError, Type: TypeServer, Message: "the job ended as " + string(rec.State)}
	}
	return cl.images(ctx, rec)
}
