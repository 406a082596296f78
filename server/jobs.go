package server

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
)

func (s *Server) createJob(c echo.Context) (any, error) {
	if s.cl != nil {
		return s.cl.createJob(c)
	}
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
	if s.cl != nil {
		return s.cl.getJob(c)
	}
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
	if s.cl != nil {
		return s.cl.deleteJob(c)
	}
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
// is sent every 15 s to keep proxies from closing an idle stream. HEAD
// answers the headers only.
func (s *Server) events(c echo.Context) error {
	if s.cl != nil {
		return s.cl.events(c)
	}
	j, err := s.lookup(c)
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
		select {
		case <-ch:
		case <-tick.C:
			extendWrite(c, s.opts.WriteTimeout)
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
