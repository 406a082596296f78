package kernels

import "sync"

// constCache maps constant weight buffers (CPUOptions.ConstWeights) to a
// form derived from them once: oneDNN's reordered copy (dnnl.go), a bf16
// copy or transform (bf16.go). The key is the buffer's address and
// length; it keeps the Go buffer alive, so the address cannot be reused.
// The zero value is ready to use.
type constCache[V any] struct {
	mu sync.Mutex
	m  map[weightKey]constEntry[V]
}

type constEntry[V any] struct {
	v  V
	fp [8]float32 // fingerprint of the source buffer
}

type weightKey struct {
	ptr *float32
	n   int
}

// get returns w's derived form, made by mk on first use, or again when w
// changed in place after all (its fingerprint); mk gets the previous
// form then (had true) so it can reuse its memory. The mutex is held
// while mk runs, so a second worker waits for the form instead of making
// its own (oneDNN's Winograd weight transform is reference code, 70 ms
// per DDPM CIFAR-10 conv).
func (c *constCache[V]) get(w []float32, mk func(prev V, had bool) (V, error)) (V, error) {
	k := weightKey{&w[0], len(w)}
	fp := fingerprint(w)
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if ok && e.fp == fp {
		return e.v, nil
	}
	v, err := mk(e.v, ok)
	if err != nil {
		return v, err
	}
	if c.m == nil {
		c.m = map[weightKey]constEntry[V]{}
	}
	c.m[k] = constEntry[V]{v: v, fp: fp}
	return v, nil
}

// fingerprint samples 8 values spread over w: a safety net that notices
// a cached weight buffer changed in place (any optimiser step changes
// them all), although the contract is that it does not change.
func fingerprint(w []float32) [8]float32 {
	var f [8]float32
	for i := range f {
		f[i] = w[i*(len(w)-1)/7]
	}
	return f
}
