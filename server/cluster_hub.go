package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// hub is a replica's one Redis pub/sub connection: it hears every job's
// events channel (a pattern subscription) and, on a worker, the cancel
// channel, and wakes the local goroutines watching a job (long polls,
// event streams, synchronous requests). go-redis resubscribes after a
// lost connection; watchers also poll, so a message lost meanwhile costs
// latency, not correctness.
type hub struct {
	st  *store
	ps  *redis.PubSub
	log *slog.Logger

	mu       sync.Mutex
	watchers map[string]map[chan struct{}]struct{}
	done     chan struct{}
}

// startHub subscribes and starts delivering. onCancel, when not nil,
// receives the id of every job cancelled anywhere in the cluster.
func startHub(ctx context.Context, st *store, onCancel func(id string), log *slog.Logger) *hub {
	h := &hub{st: st, log: log, watchers: map[string]map[chan struct{}]struct{}{}, done: make(chan struct{})}
	// PSubscribe does not fail when Redis is away: the PubSub connects and
	// subscribes when it can.
	h.ps = st.rdb.PSubscribe(ctx, st.eventsPattern())
	cancelChan := st.cancelChan()
	if onCancel != nil {
		_ = h.ps.Subscribe(ctx, cancelChan)
	}
	ch := h.ps.Channel(redis.WithChannelSize(1024), redis.WithChannelHealthCheckInterval(5*time.Second),
		redis.WithChannelSendTimeout(time.Second))
	go func() {
		defer close(h.done)
		for msg := range ch {
			if msg.Channel == cancelChan {
				if onCancel != nil {
					onCancel(msg.Payload)
				}
				continue
			}
			h.notify(st.idFromChannel(msg.Channel))
		}
	}()
	return h
}

// watch returns a channel that receives (without blocking the hub) after
// every event of job id, and the function that stops watching.
func (h *hub) watch(id string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	w := h.watchers[id]
	if w == nil {
		w = map[chan struct{}]struct{}{}
		h.watchers[id] = w
	}
	w[ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(w, ch)
		if len(w) == 0 {
			delete(h.watchers, id)
		}
	}
}

func (h *hub) notify(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.watchers[id] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// close unsubscribes and waits for the delivering goroutine.
func (h *hub) close() {
	if err := h.ps.Close(); err != nil {
		h.log.Debug("redis pubsub close", "err", err)
	}
	<-h.done
}
