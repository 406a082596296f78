package kernels

import (
	"runtime"
	"sync/atomic"
	"time"
)

// A team runs the chunks of c.parallel that the caller does not run
// itself on helper goroutines that, after a chunk, spin for a while
// waiting for the next one instead of parking, and the caller spins the
// same way for their ends. Waking a parked goroutine, or the caller
// parked in a WaitGroup, took 30-110 us on this host's VMs
// (BenchmarkParallel: a fork and join with 200 us of work per side took
// 315 us with a goroutine per chunk), and a UNet forward makes hundreds
// of them. A helper that spins past teamSpin without work ends; the
// next chunk for its slot starts a new one.
type team struct {
	slots []teamSlot
}

// teamSpin is how long a helper, or a caller waiting for its helpers,
// spins before giving up: longer than the gaps between the ops of a
// forward pass, short enough that an idle process stops spinning at once.
const teamSpin = 200 * time.Microsecond

// Slot states: no helper; a helper spinning; a chunk being handed to the
// helper (fn not yet written); a chunk handed over; a chunk running.
const (
	slotGone int32 = iota
	slotIdle
	slotClaimed
	slotReady
	slotBusy
)

type teamSlot struct {
	state atomic.Int32
	fn    func()
	_     [48]byte // a cache line per slot
}

func newTeam(helpers int) *team { return &team{slots: make([]teamSlot, max(helpers, 0))} }

// run runs fns[i] on helper i for i < len(fns)-1 and the last on the
// caller's goroutine, and returns when all have. A helper slot in use
// (a nested or concurrent call) gets a goroutine of its own instead.
func (t *team) run(fns []func()) {
	var j joiner
	j.pending.Store(int32(len(fns) - 1))
	for i, fn := range fns[:len(fns)-1] {
		task := func() {
			fn()
			j.done()
		}
		if i >= len(t.slots) || !t.slots[i].give(task) {
			go task()
		}
	}
	fns[len(fns)-1]()
	j.wait()
}

// give hands task to the slot's helper, starting one if there is none;
// false if the slot is busy.
func (s *teamSlot) give(task func()) bool {
	if s.state.CompareAndSwap(slotIdle, slotClaimed) {
		s.fn = task
		s.state.Store(slotReady)
		return true
	}
	if s.state.CompareAndSwap(slotGone, slotBusy) {
		s.fn = task
		go s.helper()
		return true
	}
	return false
}

// helper runs the slot's chunks until none comes for teamSpin.
func (s *teamSlot) helper() {
	for {
		fn := s.fn
		s.fn = nil
		fn()
		s.state.Store(slotIdle)
		if !s.await() {
			return
		}
	}
}

// await spins until a chunk is handed over (true, the slot busy again) or
// teamSpin passes with none (false, the slot gone).
func (s *teamSlot) await() bool {
	start := time.Now()
	for i := 1; ; i++ {
		switch s.state.Load() {
		case slotReady:
			s.state.Store(slotBusy)
			return true
		case slotIdle:
			if i%64 == 0 {
				if time.Since(start) > teamSpin && s.state.CompareAndSwap(slotIdle, slotGone) {
					return false
				}
				runtime.Gosched()
			}
		}
	}
}

// joiner is the caller's wait for its helpers' chunks: it spins for
// teamSpin, then sleeps until the last one wakes it.
type joiner struct {
	pending  atomic.Int32
	sleeping atomic.Bool
	wake     chan struct{}
}

func (j *joiner) done() {
	if j.pending.Add(-1) == 0 && j.sleeping.Load() {
		j.wake <- struct{}{}
	}
}

func (j *joiner) wait() {
	start := time.Now()
	for i := 1; j.pending.Load() > 0; i++ {
		if i%64 != 0 {
			continue
		}
		if time.Since(start) > teamSpin {
			j.wake = make(chan struct{}, 1)
			j.sleeping.Store(true)
			if j.pending.Load() > 0 {
				<-j.wake
			}
			return
		}
		runtime.Gosched()
	}
}
