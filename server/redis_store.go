package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/redis/go-redis/v9"
)

// The Redis layout of a cluster, every key under Prefix (default "ddpm:"):
//
//	{p}queue           stream, consumer group "workers": one entry {job: ID} per queued job
//	{p}job:ID          hash: state step total n owner attempts entry created started
//	                   ended deadline model request error cancel (times in unix ms)
//	{p}result:ID       list: the PNG of each image, in order (written with the final state)
//	{p}events:ID       pub/sub channel: a message on every change of the job
//	{p}cancel          pub/sub channel: the ID of a running job that was cancelled
//	{p}worker:WORKER   string (JSON of the worker), expires 3 heartbeats after the last
//	{p}workers         sorted set: worker id by the unix ms of its last heartbeat
//
// Every change of a job's state is one Lua script, so that two replicas
// never both move a job to a final state: a worker's writes are fenced by
// (owner, attempts), which a worker taking the job over changes.

// clusterGroup is the stream's consumer group of the workers.
const clusterGroup = "workers"

// store is a cluster's view of Redis: key names and the scripts.
type store struct {
	rdb       *redis.Client
	prefix    string
	resultTTL time.Duration
}

func (st *store) queueKey() string           { return st.prefix + "queue" }
func (st *store) jobKey(id string) string    { return st.prefix + "job:" + id }
func (st *store) resultKey(id string) string { return st.prefix + "result:" + id }
func (st *store) eventsChan(id string) string {
	return st.prefix + "events:" + id
}
func (st *store) cancelChan() string             { return st.prefix + "cancel" }
func (st *store) workerKey(id string) string     { return st.prefix + "worker:" + id }
func (st *store) workersKey() string             { return st.prefix + "workers" }
func (st *store) eventsPattern() string          { return st.prefix + "events:*" }
func (st *store) idFromChannel(ch string) string { return ch[len(st.prefix+"events:"):] }

// wireRequest is a validated request as stored in a job's "request" field.
type wireRequest struct {
	Steps       int     `json:"steps"`
	Sampler     string  `json:"sampler"`
	Eta         float64 `json:"eta"`
	Guidance    float64 `json:"guidance"`
	Classifier  float64 `json:"classifier_scale,omitempty"`
	Seeds       []int64 `json:"seeds"`
	Classes     []int   `json:"classes"`
	ClassSource string  `json:"class_source,omitempty"`
	Prompt      string  `json:"prompt,omitempty"` // a text model's prompt, for every image
	// An inpainting request's known image, as validated: InitImage is
	// the init image fitted to the model's size, (Channels, Size, Size)
	// bytes, and Mask (Size, Size) bytes, 1 = keep, 0 = generate
	// (base64 in the JSON). Absent without one.
	Channels  int    `json:"channels,omitempty"`
	Size      int    `json:"size,omitempty"`
	InitImage []byte `json:"init_image,omitempty"`
	Mask      []byte `json:"mask,omitempty"`
}

func toWire(g genRequest) wireRequest {
	w := wireRequest{Steps: g.settings.Steps, Sampler: g.settings.Sampler.String(), Eta: g.settings.Eta,
		Guidance: g.settings.Guidance, Classifier: g.settings.ClassifierScale, Seeds: g.seeds, Classes: g.classes, ClassSource: g.classSource, Prompt: g.prompt}
	if k := g.known; k != nil {
		w.Channels, w.Size = k.Image.C, k.Image.H
		w.InitImage, w.Mask = k.bytes()
	}
	return w
}

func (w wireRequest) gen() (genRequest, error) {
	sm, err := diffusion.ParseSampler(w.Sampler)
	if err != nil {
		return genRequest{}, fmt.Errorf("stored request: sampler %q: %w", w.Sampler, err)
	}
	if len(w.Seeds) == 0 || len(w.Seeds) != len(w.Classes) {
		return genRequest{}, fmt.Errorf("stored request: %d seeds and %d classes", len(w.Seeds), len(w.Classes))
	}
	g := genRequest{settings: Settings{Steps: w.Steps, Sampler: sm, Eta: w.Eta, Guidance: w.Guidance, ClassifierScale: w.Classifier},
		seeds: w.Seeds, classes: w.Classes, classSource: w.ClassSource, prompt: w.Prompt}
	if w.InitImage != nil || w.Mask != nil {
		k, err := newKnown(w.Channels, w.Size, w.InitImage, w.Mask)
		if err != nil {
			return genRequest{}, fmt.Errorf("stored request: %w", err)
		}
		g.known, g.settings.Inpaint = k, k.Key
	}
	return g, nil
}

// wireError is an APIError as stored in a job's "error" field.
type wireError struct {
	Status  int    `json:"status"`
	Type    string `json:"type"`
	Message string `json:"message"`
	Param   string `json:"param,omitempty"`
	Code    string `json:"code,omitempty"`
}

func encodeError(e *APIError) string {
	if e == nil {
		return ""
	}
	b, _ := json.Marshal(wireError{Status: e.Status, Type: e.Type, Message: e.Message, Param: e.Param, Code: e.Code})
	return string(b)
}

func decodeError(s string) *APIError {
	if s == "" {
		return nil
	}
	var w wireError
	if err := json.Unmarshal([]byte(s), &w); err != nil {
		return &APIError{Status: 500, Type: TypeServer, Message: "the job failed (its stored error does not parse)"}
	}
	return &APIError{Status: w.Status, Type: w.Type, Message: w.Message, Param: w.Param, Code: w.Code}
}

// jobRecord is a job's hash, decoded.
type jobRecord struct {
	ID       string
	State    JobState
	Step     int
	Total    int
	Owner    string
	Attempts int
	Entry    string
	Created  time.Time
	Ended    time.Time
	Deadline time.Time // zero: none
	Model    string
	Request  wireRequest
	Err      *APIError
}

func msTime(s string) time.Time {
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

func unixMs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// errJobNotFound is get's error for a job that Redis does not hold.
var errJobNotFound = errors.New("no such job")

// get reads job id.
func (st *store) get(ctx context.Context, id string) (*jobRecord, error) {
	h, err := st.rdb.HGetAll(ctx, st.jobKey(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: read job %s: %w", id, err)
	}
	if len(h) == 0 || h["state"] == "" {
		return nil, errJobNotFound
	}
	r := &jobRecord{ID: id, State: JobState(h["state"]), Owner: h["owner"], Entry: h["entry"], Model: h["model"],
		Created: msTime(h["created"]), Ended: msTime(h["ended"]), Deadline: msTime(h["deadline"]), Err: decodeError(h["error"])}
	r.Step, _ = strconv.Atoi(h["step"])
	r.Total, _ = strconv.Atoi(h["total"])
	r.Attempts, _ = strconv.Atoi(h["attempts"])
	if err := json.Unmarshal([]byte(h["request"]), &r.Request); err != nil {
		return nil, fmt.Errorf("redis: job %s: request field: %w", id, err)
	}
	return r, nil
}

// results reads the PNGs of a succeeded job.
func (st *store) results(ctx context.Context, id string) ([][]byte, error) {
	vals, err := st.rdb.LRange(ctx, st.resultKey(id), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: read results of %s: %w", id, err)
	}
	out := make([][]byte, len(vals))
	for i, v := range vals {
		out[i] = []byte(v)
	}
	return out, nil
}

// enqueueScript adds a job when fewer than ARGV[2] jobs wait undelivered.
// The queue length is XLEN less the entries delivered and not acknowledged
// (finished entries are deleted). The group is created on the fly, so a
// Redis that restarted empty works again at once.
//
// KEYS: queue, job. ARGV: group, cap, id, total, created, deadline,
// request, model, ttl ms, events channel, images. Returns {1, queued} or
// {0, queued}.
var enqueueScript = redis.NewScript(`
redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
local queued = redis.call('XLEN', KEYS[1]) - redis.call('XPENDING', KEYS[1], ARGV[1])[1]
if queued >= tonumber(ARGV[2]) then return {0, queued} end
local entry = redis.call('XADD', KEYS[1], '*', 'job', ARGV[3])
redis.call('HSET', KEYS[2], 'state', 'queued', 'step', 0, 'total', ARGV[4], 'attempts', 0, 'entry', entry,
  'created', ARGV[5], 'deadline', ARGV[6], 'request', ARGV[7], 'model', ARGV[8], 'n', ARGV[11])
redis.call('PEXPIRE', KEYS[2], ARGV[9])
redis.call('PUBLISH', ARGV[10], 'queued')
return {1, queued + 1}
`)

// enqueue stores a new job and queues it. ok is false when the cluster's
// queue already holds cap jobs; queued is the queue length.
func (st *store) enqueue(ctx context.Context, id string, g genRequest, total int, created, deadline time.Time, model string, cap int, ttl time.Duration) (ok bool, queued int, err error) {
	req, err := json.Marshal(toWire(g))
	if err != nil {
		return false, 0, fmt.Errorf("encode request: %w", err)
	}
	res, err := enqueueScript.Run(ctx, st.rdb, []string{st.queueKey(), st.jobKey(id)}, clusterGroup, cap, id, total,
		unixMs(created), unixMs(deadline), req, model, ttl.Milliseconds(), st.eventsChan(id), len(g.seeds)).Int64Slice()
	if err != nil {
		return false, 0, fmt.Errorf("redis: enqueue %s: %w", id, err)
	}
	return res[0] == 1, int(res[1]), nil
}

// queueLen is the number of jobs waiting undelivered in the cluster.
var queueLenScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local ok, p = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1])
if not ok then return redis.call('XLEN', KEYS[1]) end
return redis.call('XLEN', KEYS[1]) - p[1]
`)

func (st *store) queueLen(ctx context.Context) (int, error) {
	n, err := queueLenScript.Run(ctx, st.rdb, []string{st.queueKey()}, clusterGroup).Int()
	if err != nil {
		return 0, fmt.Errorf("redis: queue length: %w", err)
	}
	return n, nil
}

// positionScript counts the undelivered entries ahead of entry ARGV[2].
var positionScript = redis.NewScript(`
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if not ok then return 0 end
local last = '0-0'
for _, g in ipairs(groups) do
  local name, ld
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i+1] elseif g[i] == 'last-delivered-id' then ld = g[i+1] end
  end
  if name == ARGV[1] then last = ld end
end
local r = redis.call('XRANGE', KEYS[1], '(' .. last, ARGV[2])
if #r == 0 then return 0 end
return #r - 1
`)

func (st *store) position(ctx context.Context, entry string) (int, error) {
	n, err := positionScript.Run(ctx, st.rdb, []string{st.queueKey()}, clusterGroup, entry).Int()
	if err != nil {
		return 0, fmt.Errorf("redis: queue position: %w", err)
	}
	return n, nil
}

// startLua defines start(jk, entry, queue, group, worker, now, maxAttempts,
// resultTTL, events, exhausted, timeout): it gives a delivered (or
// claimed) entry's job to a worker. It returns {"run", request, attempts,
// deadline, created, model, n}, or {"gone"|"final"|"stale"|"expired"|
// "exhausted"} after acknowledging the entry (expired and exhausted jobs
// fail with the error given).
const startLua = `
local function start(jk, entry, queue, group, worker, now, maxAttempts, resultTTL, events, exhausted, timeout)
  local function drop()
    redis.call('XACK', queue, group, entry)
    redis.call('XDEL', queue, entry)
  end
  local h = redis.call('HMGET', jk, 'state', 'entry', 'deadline', 'attempts', 'request', 'created', 'model', 'n')
  if not h[1] then drop() return {'gone'} end
  if h[1] ~= 'queued' and h[1] ~= 'running' then drop() return {'final'} end
  if h[2] ~= entry then drop() return {'stale'} end
  local function fail(err)
    redis.call('HSET', jk, 'state', 'failed', 'error', err, 'ended', now)
    redis.call('PEXPIRE', jk, resultTTL)
    redis.call('PUBLISH', events, 'failed')
    drop()
  end
  local deadline = tonumber(h[3])
  if deadline > 0 and now >= deadline then fail(timeout) return {'expired'} end
  local a = tonumber(h[4]) + 1
  if a > maxAttempts then fail(exhausted) return {'exhausted'} end
  redis.call('HSET', jk, 'state', 'running', 'owner', worker, 'attempts', a, 'started', now, 'step', 0)
  redis.call('PUBLISH', events, 'running')
  return {'run', h[5], a, h[3], h[6], h[7], tonumber(h[8] or '1') or 1}
end
`

// startScript runs start for one entry (a claimed one).
//
// KEYS: job, queue. ARGV: group, entry, worker, now ms, max attempts,
// result ttl ms, events channel, exhausted error, timeout error.
var startScript = redis.NewScript(startLua + `
return start(KEYS[1], ARGV[2], KEYS[2], ARGV[1], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7], ARGV[8], ARGV[9])
`)

// takeScript reads new entries one by one (XREADGROUP, not blocking) and
// starts their jobs until their images reach a budget or the queue is
// empty: a worker's batch in one round trip. Jobs are read from
// {prefix}job:ID, so the script needs a standalone Redis (not Redis
// Cluster).
//
// KEYS: queue. ARGV: group, worker, now ms, max attempts, budget (images),
// result ttl ms, exhausted error, timeout error, job key prefix, events
// channel prefix. Returns a list of {entry, id, start's answer...}.
var takeScript = redis.NewScript(startLua + `
local out = {}
local images = 0
local budget = tonumber(ARGV[5])
while images < budget do
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', KEYS[1], '>')
  if not r then break end
  local e = r[1][2][1]
  local id = ''
  for i = 1, #e[2], 2 do
    if e[2][i] == 'job' then id = e[2][i+1] end
  end
  local res
  if id == '' then
    redis.call('XACK', KEYS[1], ARGV[1], e[1])
    redis.call('XDEL', KEYS[1], e[1])
    res = {'gone'}
  else
    res = start(ARGV[9] .. id, e[1], KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[6], ARGV[10] .. id, ARGV[7], ARGV[8])
  end
  if res[1] == 'run' then images = images + res[7] end
  local row = {e[1], id}
  for _, v in ipairs(res) do row[#row + 1] = v end
  out[#out + 1] = row
end
return out
`)

// startResult is what startScript answered.
type startResult struct {
	verdict  string // run, gone, final, stale, expired, exhausted
	request  wireRequest
	attempts int
	deadline time.Time
	created  time.Time
	model    string
}

func (st *store) start(ctx context.Context, id, entry, worker string, maxAttempts int, exhausted, timeout *APIError) (startResult, error) {
	res, err := startScript.Run(ctx, st.rdb, []string{st.jobKey(id), st.queueKey()}, clusterGroup, entry, worker,
		time.Now().UnixMilli(), maxAttempts, st.resultTTL.Milliseconds(), st.eventsChan(id),
		encodeError(exhausted), encodeError(timeout)).Slice()
	if err != nil {
		return startResult{}, fmt.Errorf("redis: start %s: %w", id, err)
	}
	return parseStart(id, res)
}

// parseStart decodes start's answer.
func parseStart(id string, res []any) (startResult, error) {
	if len(res) == 0 {
		return startResult{}, fmt.Errorf("redis: start %s: empty answer", id)
	}
	r := startResult{verdict: fmt.Sprint(res[0])}
	if r.verdict != "run" || len(res) < 6 {
		return r, nil
	}
	if err := json.Unmarshal([]byte(fmt.Sprint(res[1])), &r.request); err != nil {
		return r, fmt.Errorf("job %s: stored request: %w", id, err)
	}
	r.attempts, _ = strconv.Atoi(fmt.Sprint(res[2]))
	r.deadline = msTime(fmt.Sprint(res[3]))
	r.created = msTime(fmt.Sprint(res[4]))
	r.model = fmt.Sprint(res[5])
	return r, nil
}

// taken is one entry takeScript read.
type taken struct {
	entry, id string
	res       startResult
	err       error // the stored request does not decode
}

// take reads and starts new entries until their jobs hold budget images
// or the queue is empty (takeScript).
func (st *store) take(ctx context.Context, worker string, maxAttempts, budget int, exhausted, timeout *APIError) ([]taken, error) {
	rows, err := takeScript.Run(ctx, st.rdb, []string{st.queueKey()}, clusterGroup, worker, time.Now().UnixMilli(),
		maxAttempts, budget, st.resultTTL.Milliseconds(), encodeError(exhausted), encodeError(timeout),
		st.prefix+"job:", st.prefix+"events:").Slice()
	if err != nil {
		return nil, fmt.Errorf("redis: take: %w", err)
	}
	out := make([]taken, 0, len(rows))
	for _, row := range rows {
		r, ok := row.([]any)
		if !ok || len(r) < 3 {
			return out, fmt.Errorf("redis: take: unexpected answer %v", row)
		}
		t := taken{entry: fmt.Sprint(r[0]), id: fmt.Sprint(r[1])}
		t.res, t.err = parseStart(t.id, r[2:])
		out = append(out, t)
	}
	return out, nil
}

// activeTTL bounds how long a job hash lives while not final (a safety net:
// final jobs get resultTTL).
func (st *store) activeTTL() time.Duration { return 7 * 24 * time.Hour }

// progressScript records a worker's step if the job is still its own.
//
// KEYS: job. ARGV: worker, attempts, step, events channel, total steps
// (this worker's count: images in chunks of its MaxBatch). Returns 1, or 0
// when the job is no longer this worker's (cancelled, or taken over).
var progressScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'state', 'owner', 'attempts')
if h[1] ~= 'running' or h[2] ~= ARGV[1] or h[3] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'step', ARGV[3], 'total', ARGV[5])
redis.call('PUBLISH', ARGV[4], 'progress')
return 1
`)

func (st *store) progress(ctx context.Context, id, worker string, attempts, step, total int) (bool, error) {
	n, err := progressScript.Run(ctx, st.rdb, []string{st.jobKey(id)}, worker, attempts, step, st.eventsChan(id), total).Int()
	if err != nil {
		return false, fmt.Errorf("redis: progress of %s: %w", id, err)
	}
	return n == 1, nil
}

// finishScript moves a worker's job to its final state, with its images.
// A job that is already final is left as it is (its entry acknowledged);
// one another worker took over is left to that worker.
//
// KEYS: job, result, queue. ARGV: group, worker, attempts, state, error,
// now ms, ttl ms, events channel, then the PNGs. Returns "ok", "final",
// "gone" or "lost".
var finishScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'state', 'owner', 'attempts', 'entry', 'total')
if not h[1] then return 'gone' end
local function drop()
  if h[4] then
    redis.call('XACK', KEYS[3], ARGV[1], h[4])
    redis.call('XDEL', KEYS[3], h[4])
  end
end
if h[1] ~= 'queued' and h[1] ~= 'running' then drop() return 'final' end
if h[1] ~= 'running' or h[2] ~= ARGV[2] or h[3] ~= ARGV[3] then return 'lost' end
if ARGV[4] == 'succeeded' then
  redis.call('DEL', KEYS[2])
  if #ARGV > 8 then redis.call('RPUSH', KEYS[2], unpack(ARGV, 9)) end
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
  redis.call('HSET', KEYS[1], 'step', h[5])
end
redis.call('HSET', KEYS[1], 'state', ARGV[4], 'error', ARGV[5], 'ended', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
drop()
redis.call('PUBLISH', ARGV[8], ARGV[4])
return 'ok'
`)

func (st *store) finish(ctx context.Context, id, worker string, attempts int, state JobState, e *APIError, pngs [][]byte) (string, error) {
	args := []any{clusterGroup, worker, attempts, string(state), encodeError(e), time.Now().UnixMilli(),
		st.resultTTL.Milliseconds(), st.eventsChan(id)}
	for _, p := range pngs {
		args = append(args, p)
	}
	v, err := finishScript.Run(ctx, st.rdb, []string{st.jobKey(id), st.resultKey(id), st.queueKey()}, args...).Text()
	if err != nil {
		return "", fmt.Errorf("redis: finish %s: %w", id, err)
	}
	return v, nil
}

// endScript ends a job that is not final yet, from an api replica: a
// client's cancel (state cancelled) or a deadline passed (state failed).
// The entry is acknowledged and deleted; a running job's worker hears of
// it on the cancel channel (and at its next step from progressScript).
//
// KEYS: job, queue. ARGV: group, state, error, now ms, ttl ms, events
// channel, cancel channel, id, only-if-past-deadline (1 or 0). Returns the
// job's state afterwards, or "gone".
var endScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'state', 'entry', 'deadline')
if not h[1] then return 'gone' end
if h[1] ~= 'queued' and h[1] ~= 'running' then return h[1] end
if ARGV[9] == '1' then
  local d = tonumber(h[3])
  if d == 0 or tonumber(ARGV[4]) < d then return h[1] end
end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'error', ARGV[3], 'ended', ARGV[4], 'cancel', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
if h[2] then
  redis.call('XACK', KEYS[2], ARGV[1], h[2])
  redis.call('XDEL', KEYS[2], h[2])
end
redis.call('PUBLISH', ARGV[6], ARGV[2])
if h[1] == 'running' then redis.call('PUBLISH', ARGV[7], ARGV[8]) end
return ARGV[2]
`)

func (st *store) end(ctx context.Context, id string, state JobState, e *APIError, onlyPastDeadline bool) (JobState, error) {
	flag := 0
	if onlyPastDeadline {
		flag = 1
	}
	v, err := endScript.Run(ctx, st.rdb, []string{st.jobKey(id), st.queueKey()}, clusterGroup, string(state), encodeError(e),
		time.Now().UnixMilli(), st.resultTTL.Milliseconds(), st.eventsChan(id), st.cancelChan(), id, flag).Text()
	if err != nil {
		return "", fmt.Errorf("redis: end %s: %w", id, err)
	}
	if v == "gone" {
		return "", errJobNotFound
	}
	return JobState(v), nil
}

// handBackScript returns a worker's running job to the queue (at its
// tail, as a new entry) when the worker stops before finishing it. The
// attempt is not counted against --max-attempts.
//
// KEYS: job, queue. ARGV: group, worker, attempts, events channel, id.
// Returns 1, or 0 when the job was no longer this worker's.
var handBackScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'state', 'owner', 'attempts', 'entry')
if h[1] ~= 'running' or h[2] ~= ARGV[2] or h[3] ~= ARGV[3] then return 0 end
redis.call('XACK', KEYS[2], ARGV[1], h[4])
redis.call('XDEL', KEYS[2], h[4])
local e = redis.call('XADD', KEYS[2], '*', 'job', ARGV[5])
redis.call('HSET', KEYS[1], 'state', 'queued', 'entry', e, 'owner', '', 'step', 0, 'attempts', tonumber(ARGV[3]) - 1)
redis.call('PUBLISH', ARGV[4], 'queued')
return 1
`)

func (st *store) handBack(ctx context.Context, id, worker string, attempts int) (bool, error) {
	n, err := handBackScript.Run(ctx, st.rdb, []string{st.jobKey(id), st.queueKey()}, clusterGroup, worker, attempts,
		st.eventsChan(id), id).Int()
	if err != nil {
		return false, fmt.Errorf("redis: hand back %s: %w", id, err)
	}
	return n == 1, nil
}

// ensureGroup creates the queue stream and its consumer group if missing.
func (st *store) ensureGroup(ctx context.Context) error {
	err := st.rdb.XGroupCreateMkStream(ctx, st.queueKey(), clusterGroup, "0").Err()
	if err != nil && !isBusyGroup(err) {
		return fmt.Errorf("redis: create consumer group: %w", err)
	}
	return nil
}

func isBusyGroup(err error) bool {
	return err != nil && len(err.Error()) >= 9 && err.Error()[:9] == "BUSYGROUP"
}

func isNoGroup(err error) bool {
	return err != nil && len(err.Error()) >= 7 && err.Error()[:7] == "NOGROUP"
}
