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
	free   map[int64][]Ptr // class size -> cached blocks
	cached int64           // bytes in free
	inUse  int64           // bytes in live
	limit  int64           // max cached bytes (0 = no limit)
	peak   int64
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
		a.releaseCached(drv)
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
		a.live, a.free = map[Ptr]int64{}, map[int64][]Ptr{}
	}
	c := sizeClass(bytes)
	if l := a.free[c]; len(l) > 0 {
		p := l[len(l)-1]
		a.free[c] = l[:len(l)-1]
		a.cached -= c
		a.live[p] = c
		a.inUse += c
		return p, nil
	}
	p, err := a.raw(drv, c)
	if err != nil {
		return 0, err
	}
	a.live[p] = c
	a.inUse += c
	a.peak = max(a.peak, a.inUse)
	return p, nil
}

// put returns a block from get to its free list.
func (a *allocator) put(drv *driver, p Ptr) error {
	c, ok := a.live[p]
	if !ok {
		return fmt.Errorf("Free(%#x): not a live buffer from Alloc (a Slice, or freed twice?)", uint64(p))
	}
	delete(a.live, p)
	a.inUse -= c
	if a.limit > 0 && a.cached+c > a.limit {
		drv.call(drv.cuMemFree, uintptr(p))
		return nil
	}
	a.free[c] = append(a.free[c], p)
	a.cached += c
	return nil
}

// size returns the class size of a live block (0 if p is not a block start).
func (a *allocator) size(p Ptr) int64 { return a.live[p] }

func (a *allocator) releaseCached(drv *driver) {
	for c, l := range a.free {
		for _, p := range l {
			drv.call(drv.cuMemFree, uintptr(p))
		}
		delete(a.free, c)
	}
	a.cached = 0
}

func (a *allocator) releaseAll(drv *driver) {
	a.releaseCached(drv)
	for p := range a.live {
		drv.call(drv.cuMemFree, uintptr(p))
	}
	a.live = nil
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
