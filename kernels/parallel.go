package kernels

import "sync"

// parallel runs fn over [0, n) split into contiguous chunks, one per
// worker (worker ids 0..workers-1), on up to c.threads goroutines: the
// caller's runs the last chunk, the team's spinning helpers the others
// (team.go). grain is the least number of items worth giving a goroutine
// of its own.
func (c *CPU) parallel(n, grain int, fn func(worker, lo, hi int)) {
	if n <= 0 {
		return
	}
	w := c.threads
	if grain > 0 {
		w = min(w, (n+grain-1)/grain)
	}
	w = max(min(w, n), 1)
	if w == 1 {
		fn(0, 0, n)
		return
	}
	fns := make([]func(), w)
	for i := range fns {
		lo, hi := i*n/w, (i+1)*n/w
		fns[i] = func() { fn(i, lo, hi) }
	}
	c.team.run(fns)
}

// parallelErr is parallel with fn returning an error: every worker runs
// its chunk, and the error of the lowest worker that had one comes back.
func (c *CPU) parallelErr(n, grain int, fn func(worker, lo, hi int) error) error {
	errs := make([]error, max(c.threads, 1))
	c.parallel(n, grain, func(worker, lo, hi int) { errs[worker] = fn(worker, lo, hi) })
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// wsPool keeps scratch buffers for reuse; get and put are safe for
// concurrent use. Buffers come back with stale contents.
type wsPool struct {
	mu   sync.Mutex
	free [][]float32
}

// get returns a buffer of exactly n values (contents undefined), reusing
// the smallest free buffer with enough capacity.
func (p *wsPool) get(n int) []float32 {
	p.mu.Lock()
	best := -1
	for i, b := range p.free {
		if cap(b) >= n && (best < 0 || cap(b) < cap(p.free[best])) {
			best = i
		}
	}
	if best >= 0 {
		b := p.free[best]
		last := len(p.free) - 1
		p.free[best] = p.free[last]
		p.free[last] = nil
		p.free = p.free[:last]
		p.mu.Unlock()
		return b[:n]
	}
	p.mu.Unlock()
	return make([]float32, n)
}

// put returns b to the pool.
func (p *wsPool) put(b []float32) {
	if cap(b) == 0 {
		return
	}
	p.mu.Lock()
	p.free = append(p.free, b[:0])
	p.mu.Unlock()
}
