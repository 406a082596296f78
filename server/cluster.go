package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Role is what one replica of a cluster does.
type Role string

// Roles of a replica.
const (
	// RoleAll runs the api and a worker in one process.
	RoleAll Role = "all"
	// RoleAPI validates and queues requests and answers every endpoint for
	// any job of the cluster; it runs no model.
	RoleAPI Role = "api"
	// RoleWorker takes batches from the queue and runs them; it answers
	// /healthz, /readyz, /metrics, /v1/models and job reads, not new work.
	RoleWorker Role = "worker"
)

// ParseRole parses "all", "api" or "worker".
func ParseRole(s string) (Role, error) {
	switch r := Role(strings.ToLower(strings.TrimSpace(s))); r {
	case RoleAll, RoleAPI, RoleWorker:
		return r, nil
	}
	return "", fmt.Errorf("role %q: allowed values are all, api and worker", s)
}

func (r Role) api() bool    { return r == RoleAll || r == RoleAPI }
func (r Role) worker() bool { return r == RoleAll || r == RoleWorker }

// ClusterOptions configure a Server that shares its queue and jobs with
// other replicas through Redis (NewCluster). The zero value of each field
// takes the default named in its comment.
type ClusterOptions struct {
	// RedisURL is redis://[[user]:password@]host:port/db, or rediss:// for
	// TLS (required).
	RedisURL string
	// Role is what this replica does (default RoleAll).
	Role Role
	// Prefix starts every Redis key and channel (default "ddpm:"), so that
	// several deployments can share one Redis.
	Prefix string
	// ResultTTL is how long a finished job and its images stay readable
	// (default 1h).
	ResultTTL time.Duration
	// ClaimIdle is how long a job whose worker stopped heartbeating waits
	// before another worker takes it over and runs it again (default 30s).
	ClaimIdle time.Duration
	// MaxAttempts is how many times a job may be started; a job whose
	// workers died that often fails (default 3).
	MaxAttempts int
	// Heartbeat is how often a worker refreshes its liveness and its jobs'
	// claims (default ClaimIdle/3, at most 10s).
	Heartbeat time.Duration
	// WorkerID names this replica in Redis (default host-pid-random).
	WorkerID string
	// Model describes the model to an api replica, which loads none (it is
	// used when NewCluster's Generator is nil).
	Model ModelInfo
}

func (c *ClusterOptions) setDefaults() error {
	if c.RedisURL == "" {
		return errors.New("server: cluster: RedisURL is empty")
	}
	if c.Role == "" {
		c.Role = RoleAll
	}
	if _, err := ParseRole(string(c.Role)); err != nil {
		return fmt.Errorf("server: cluster: %w", err)
	}
	if c.Prefix == "" {
		c.Prefix = "ddpm:"
	}
	if c.ResultTTL == 0 {
		c.ResultTTL = time.Hour
	}
	if c.ClaimIdle == 0 {
		c.ClaimIdle = 30 * time.Second
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 3
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = min(c.ClaimIdle/3, 10*time.Second)
	}
	switch {
	case c.ResultTTL < time.Second:
		return fmt.Errorf("server: cluster: ResultTTL %v must be >= 1s", c.ResultTTL)
	case c.ClaimIdle < 100*time.Millisecond:
		return fmt.Errorf("server: cluster: ClaimIdle %v must be >= 100ms", c.ClaimIdle)
	case c.MaxAttempts < 1:
		return fmt.Errorf("server: cluster: MaxAttempts %d must be >= 1", c.MaxAttempts)
	case c.Heartbeat <= 0 || c.Heartbeat >= c.ClaimIdle:
		return fmt.Errorf("server: cluster: Heartbeat %v must be > 0 and shorter than ClaimIdle %v", c.Heartbeat, c.ClaimIdle)
	}
	if c.WorkerID == "" {
		host, _ := os.Hostname()
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return fmt.Errorf("server: cluster: worker id: %w", err)
		}
		c.WorkerID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	}
	return nil
}

// redisOptions parses url and sets timeouts suited to a service that must
// answer 503 quickly while Redis is away (the URL's own query parameters,
// such as dial_timeout, win).
func redisOptions(url, name string) (*redis.Options, error) {
	o, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("server: cluster: Redis URL: %w", err)
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 2 * time.Second
	}
	if o.ReadTimeout == 0 {
		o.ReadTimeout = 3 * time.Second
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = 3 * time.Second
	}
	if o.MaxRetries == 0 {
		o.MaxRetries = 1
	}
	if o.DialerRetries == 0 {
		o.DialerRetries = 2 // go-redis's default 5 makes an answer wait about 1 s per refused dial
	}
	o.ContextTimeoutEnabled = true
	o.ClientName = name
	return o, nil
}

// NewCluster returns a Server whose queue and jobs live in Redis, shared by
// every replica with the same RedisURL and Prefix: an api replica (gen may
// be nil; c.Model describes the model) validates and queues requests and
// answers for any job; a worker replica (gen required) takes jobs from the
// queue, batches them dynamically as New's server does and stores their
// images; RoleAll does both. Call Close (or Serve) to stop it.
func NewCluster(gen Generator, opts Options, c ClusterOptions) (*Server, error) {
	if err := c.setDefaults(); err != nil {
		return nil, err
	}
	info := c.Model
	if gen != nil {
		info = gen.Info()
	} else if c.Role.worker() {
		return nil, fmt.Errorf("server: cluster: role %s needs a Generator", c.Role)
	}
	if info.Device == "" {
		info.Device = "cluster workers"
	}
	s, err := newServer(gen, info, opts)
	if err != nil {
		return nil, err
	}
	ro, err := redisOptions(c.RedisURL, "ddpm-"+string(c.Role)+"-"+c.WorkerID)
	if err != nil {
		return nil, err
	}
	rdb := redis.NewClient(ro)
	cl := &cluster{s: s, role: c.Role, opts: c, id: c.WorkerID,
		st: &store{rdb: rdb, prefix: c.Prefix, resultTTL: c.ResultTTL}}
	cl.m = newClusterMetrics(s.m.reg, c.Role)
	cl.ctx, cl.stop = context.WithCancel(context.Background())
	cl.syncCtx, cl.syncStop = context.WithCancelCause(context.Background())
	s.cl = cl
	var onCancel func(string)
	if c.Role.worker() {
		cl.w = newWorker(cl)
		onCancel = cl.w.cancelled
	}
	cl.hub = startHub(cl.ctx, cl.st, onCancel, s.log)
	if err := cl.st.ensureGroup(cl.ctx); err != nil {
		// Not fatal: Redis may come up later; the queue is created on use.
		cl.redisError("ensure_group", err)
	}
	cl.bg.Add(1)
	go cl.monitor()
	if c.Role.worker() {
		s.worker.Add(1)
		go func() {
			defer s.worker.Done()
			s.sched.run(s.jobsCtx)
		}()
		cl.w.start()
	}
	s.log.Info("cluster replica started", "role", c.Role, "id", c.WorkerID, "redis", ro.Addr, "prefix", c.Prefix)
	return s, nil
}

// cluster is the Redis side of a Server made by NewCluster.
type cluster struct {
	s    *Server
	st   *store
	role Role
	opts ClusterOptions
	id   string
	m    *clusterMetrics
	hub  *hub
	w    *worker // nil on an api replica

	ctx  context.Context // background goroutines; ends in close
	stop context.CancelFunc
	bg   sync.WaitGroup

	// Synchronous requests (OpenAI and PNG endpoints) waiting on jobs:
	// syncStop cancels their jobs at the drain deadline, and ends long
	// polls and event streams when the drain is over.
	syncWG   sync.WaitGroup
	syncCtx  context.Context
	syncStop context.CancelCauseFunc
}

// errStoreDown is the answer while Redis cannot be reached.
func errStoreDown() *APIError {
	return &APIError{Status: http.StatusServiceUnavailable, Type: TypeUnavailable, RetryAfter: 5, Code: "store_unavailable",
		Message: "the job store (Redis) is unreachable; retry in a few seconds"}
}

// redisError counts and logs a failed Redis operation (op from a closed
// set: the metric's label).
func (cl *cluster) redisError(op string, err error) {
	cl.m.redisErrors.WithLabelValues(op).Inc()
	cl.s.log.Warn("redis", "op", op, "err", err)
}

// ping checks Redis within a second.
func (cl *cluster) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := cl.st.rdb.Ping(ctx).Err(); err != nil {
		cl.m.redisUp.Set(0)
		return fmt.Errorf("redis: ping: %w", err)
	}
	cl.m.redisUp.Set(1)
	return nil
}

// monitor refreshes the cluster gauges (Redis up, queue length, live
// workers) every second.
func (cl *cluster) monitor() {
	defer cl.bg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	failing := false
	for {
		ctx, cancel := context.WithTimeout(cl.ctx, 2*time.Second)
		err := cl.ping(ctx)
		if err == nil {
			var n int
			if n, err = cl.st.queueLen(ctx); err == nil {
				cl.m.queueLen.Set(float64(n))
				var live int64
				live, err = cl.st.rdb.ZCount(ctx, cl.st.workersKey(),
					fmt.Sprint(time.Now().Add(-3*cl.opts.Heartbeat).UnixMilli()), "+inf").Result()
				if err == nil {
					cl.m.workers.Set(float64(live))
				}
			}
		}
		cancel()
		switch {
		case err != nil && cl.ctx.Err() == nil:
			if !failing {
				cl.redisError("monitor", err)
			} else {
				cl.m.redisErrors.WithLabelValues("monitor").Inc()
			}
			failing = true
		case err == nil && failing:
			cl.s.log.Info("redis reachable again")
			failing = false
		}
		select {
		case <-cl.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// shutdown drains this replica: a worker stops taking jobs and lets its
// local ones finish until ctx ends, then hands the rest back to the queue;
// an api replica lets waiting synchronous requests finish until ctx ends,
// then cancels their jobs. It returns ctx.Err() when it had to cut short.
func (cl *cluster) shutdown(ctx context.Context) error {
	var err error
	if cl.w != nil {
		cl.w.stopPulling()
		if e := cl.s.sched.waitIdle(ctx); e != nil {
			cl.s.log.Warn("drain deadline reached; handing the remaining jobs back to the queue")
			cl.w.handBackAll()
			err = e
		}
	}
	if cl.role.api() {
		done := make(chan struct{})
		go func() { cl.syncWG.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			cl.s.log.Warn("drain deadline reached; cancelling the jobs of waiting requests")
			cl.syncStop(errShutdown)
			<-done
			err = ctx.Err()
		}
	}
	// Long polls answer and event streams end now (their clients go to
	// another replica); the jobs go on in the cluster.
	cl.syncStop(errShutdown)
	return err
}

// closeWorker hands a worker's unfinished jobs back and waits for its
// goroutines that write to Redis.
func (cl *cluster) closeWorker() {
	cl.syncStop(errShutdown)
	if cl.w != nil {
		cl.w.stopPulling()
		cl.w.handBackAll()
		cl.w.wait()
	}
}

// closeRedis stops the background goroutines and closes the client.
func (cl *cluster) closeRedis() {
	cl.stop()
	cl.hub.close()
	cl.bg.Wait()
	if err := cl.st.rdb.Close(); err != nil {
		cl.s.log.Warn("redis close", "err", err)
	}
}

// clusterMetrics are the series a cluster replica adds to ddpm_*.
type clusterMetrics struct {
	role        *prometheus.GaugeVec   // ddpm_role_info{role}
	queueLen    prometheus.Gauge       // ddpm_cluster_queue_length
	workers     prometheus.Gauge       // ddpm_cluster_workers
	claimed     prometheus.Counter     // ddpm_cluster_jobs_claimed_total
	retried     prometheus.Counter     // ddpm_cluster_jobs_retried_total
	exhausted   prometheus.Counter     // ddpm_cluster_jobs_exhausted_total
	handedBack  prometheus.Counter     // ddpm_cluster_jobs_handed_back_total
	redisErrors *prometheus.CounterVec // ddpm_redis_errors_total{op}
	redisUp     prometheus.Gauge       // ddpm_redis_up
}

func newClusterMetrics(reg *prometheus.Registry, role Role) *clusterMetrics {
	m := &clusterMetrics{}
	m.role = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ddpm_role_info", Help: "Always 1; the label is this replica's role (all, api, worker).",
	}, []string{"role"})
	m.queueLen = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ddpm_cluster_queue_length", Help: "Jobs waiting in the cluster's Redis queue, not yet taken by a worker (refreshed every second).",
	})
	m.workers = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ddpm_cluster_workers", Help: "Workers whose heartbeat is recent (refreshed every second).",
	})
	m.claimed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ddpm_cluster_jobs_claimed_total", Help: "Queue entries this worker took over from a worker that stopped heartbeating (XAUTOCLAIM).",
	})
	m.retried = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ddpm_cluster_jobs_retried_total", Help: "Jobs this worker ran again from the start after an earlier attempt was lost.",
	})
	m.exhausted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ddpm_cluster_jobs_exhausted_total", Help: "Jobs this worker failed because their workers died --max-attempts times.",
	})
	m.handedBack = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ddpm_cluster_jobs_handed_back_total", Help: "Jobs this worker returned to the queue unfinished when it stopped.",
	})
	m.redisErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ddpm_redis_errors_total", Help: "Failed Redis operations by kind (enqueue, read, cancel, pull, claim, start, progress, finish, hand_back, heartbeat, monitor, ensure_group).",
	}, []string{"op"})
	m.redisUp = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ddpm_redis_up", Help: "1 when the last PING of Redis succeeded.",
	})
	reg.MustRegister(m.role, m.queueLen, m.workers, m.claimed, m.retried, m.exhausted, m.handedBack, m.redisErrors, m.redisUp)
	m.role.WithLabelValues(string(role)).Set(1)
	return m
}
