package cuda

import (
	"fmt"
	"math/bits"
	"runtime"
	"unsafe"
)

// allocator is a caching device allocator with size-class free lists:
// requests are rounded up to a class (powers of two up to 1 MiB, then
// multiples of 2 MiB), freed blocks go to their class's list and are
// reused by the next request of that class, so a training or sampling loop
// allocates from the driver only in its first step. cuMemAlloc and
// cuMemFree synchronise the device; avoiding them keeps the stream busy.
// It is used with the Device mutex held.
type allocator struct {
	live   map[Ptr]int64   // block start -> class size, blocks handed out
	req    map[Ptr]int64   // block start -> bytes asked for (<= class size)
	free   map[int64][]Ptr // class size -> cached blocks
	cached int64           // bytes in free
	inUse  int64           // bytes in live
	limit  int64           // max cached bytes (0 = no limit)
	peak   int64
	// sync waits for the stream: a cached block may still be read or
	// written by queued kernels, so it is called before any cuMemFree of
	// one (nil in tests).
	sync func()
}

// sizeClass rounds a byte count up to its class.
func sizeClass(bytes int64) int64 {
	const small = 1 << 20
	const big = 2 << 20
	if bytes <= 256 {
		return 256
	}
	if bytes <= small {
		return 1 << (64 - bits.LeadingZeros64(uint64(bytes-1)))
	}
	return (bytes + big - 1) / big * big
}

// raw allocates from the driver, releasing the cache once on failure.
func (a *allocator) raw(drv *driver, bytes int64) (Ptr, error) {
	var pn runtime.Pinner
	defer pn.Unpin()
	p := hp[Ptr](&pn)
	r := drv.call(drv.cuMemAlloc, uintptr(unsafe.Pointer(p)), uintptr(bytes))
	if r != 0 && a.cached > 0 {
		// Out of memory: free the cache (after the queued work that may
		// still use those blocks) and try once more.
		if err := a.releaseCached(drv); err != nil {
			return 0, err
		}
		r = drv.call(drv.cuMemAlloc, uintptr(unsafe.Pointer(p)), uintptr(bytes))
	}
	if r != 0 {
		return 0, fmt.Errorf("cuMemAlloc(%d bytes, %d in use, %d cached): %w", bytes, a.inUse, a.cached, r)
	}
	return *p, nil
}

// get returns a block of at least bytes (contents undefined).
func (a *allocator) get(drv *driver, bytes int64) (Ptr, error) {
	if a.live == nil {
		a.live, a.req, a.free = map[Ptr]int64{}, map[Ptr]int64{}, map[int64][]Ptr{}
	}
	c := sizeClass(bytes)
	if l := a.free[c]; len(l) > 0 {
		p := l[len(l)-1]
		a.free[c] = l[:len(l)-1]
		a.cached -= c
		a.live[p], a.req[p] = c, bytes
		a.inUse += c
		return p, nil
	}
	p, err := a.raw(drv, c)
	if err != nil {
		return 0, err
	}
	a.live[p], a.req[p] = c, bytes
	a.inUse += c
	a.peak = max(a.peak, a.inUse)
	return p, nil
}

// put returns a block from get to its free list.
func (a *allocator) put(drv *driver, p Ptr) error {
	c, ok := a.live[p]
	if !ok {
		return fmt.Errorf("cuda: Free(%#x): not a live buffer from Alloc (a Slice, or freed twice?)", uint64(p))
	}
	delete(a.live, p)
	delete(a.req, p)
	a.inUse -= c
	if a.limit > 0 && a.cached+c > a.limit {
		a.waitStream()
		return check("cuMemFree", drv.call(drv.cuMemFree, uintptr(p)))
	}
	a.free[c] = append(a.free[c], p)
	a.cached += c
	return nil
}

// size returns the bytes asked for of a live block (0 if p is not a
// block start): the logical size, not the rounded class.
func (a *allocator) size(p Ptr) int64 { return a.req[p] }

// extent returns the logical bytes from p to the end of the live block
// holding it (p may be a Slice inside it), or 0 when no block holds p.
func (a *allocator) extent(p Ptr) int64 {
	if n, ok := a.req[p]; ok {
		return n
	}
	for start, n := range a.req {
		if p > start && p < start+Ptr(n) {
			return int64(start + Ptr(n) - p)
		}
	}
	return 0
}

func (a *allocator) waitStream() {
	if a.sync != nil {
		a.sync()
	}
}

// releaseCached frees every cached block (waiting for the stream first);
// it returns the first cuMemFree failure.
func (a *allocator) releaseCached(drv *driver) error {
	if a.cached > 0 {
		a.waitStream()
	}
	var err error
	for c, l := range a.free {
		for _, p := range l {
			if e := check("cuMemFree", drv.call(drv.cuMemFree, uintptr(p))); e != nil && err == nil {
				err = e
			}
		}
		delete(a.free, c)
	}
	a.cached = 0
	return err
}

func (a *allocator) releaseAll(drv *driver) {
	a.releaseCached(drv)
	for p := range a.live {
		drv.call(drv.cuMemFree, uintptr(p))
	}
	a.live, a.req = nil, nil
	a.inUse = 0
}

// MemStats reports the caching allocator's bytes handed out, cached for
// reuse, and the peak handed out.
type MemStats struct{ InUse, Cached, Peak int64 }

// MemStats returns the allocator's counters.
func (d *Device) MemStats() MemStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return MemStats{InUse: d.alloc.inUse, Cached: d.alloc.cached, Peak: d.alloc.peak}
}
