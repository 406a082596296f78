package kernels

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestTeam: c.parallel covers every item exactly once through the team's
// helpers on each of their paths: a helper still spinning, a helper gone
// after teamSpin, a caller waiting past teamSpin (it sleeps), calls
// nested in a chunk, and callers on several goroutines sharing one CPU
// (busy slots get goroutines of their own).
func TestTeam(t *testing.T) {
	c := &CPU{threads: 3, team: newTeam(2)}
	check := func(t *testing.T, n int, work func(i int)) {
		t.Helper()
		hits := make([]atomic.Int32, n)
		c.parallel(n, 1, func(_, lo, hi int) {
			for i := lo; i < hi; i++ {
				hits[i].Add(1)
				if work != nil {
					work(i)
				}
			}
		})
		for i := range hits {
			if h := hits[i].Load(); h != 1 {
				t.Fatalf("n %d: item %d ran %d times", n, i, h)
			}
		}
	}
	t.Run("back to back", func(t *testing.T) {
		for n := 1; n < 200; n++ {
			check(t, n, nil)
		}
	})
	t.Run("helpers gone between calls", func(t *testing.T) {
		for range 5 {
			check(t, 7, nil)
			time.Sleep(2 * teamSpin)
		}
	})
	t.Run("caller sleeps", func(t *testing.T) {
		check(t, 3, func(i int) {
			if i < 2 { // the helpers' items
				time.Sleep(4 * teamSpin)
			}
		})
	})
	t.Run("nested", func(t *testing.T) {
		check(t, 6, func(int) { check(t, 5, nil) })
	})
	t.Run("concurrent callers", func(t *testing.T) {
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := 1; n < 100; n++ {
					check(t, n, nil)
				}
			}()
		}
		wg.Wait()
	})
}

// BenchmarkParallel times one fork and join of c.parallel over two
// chunks with the given work per chunk: the wake-up cost the team's
// spinning helpers save (with a goroutine per chunk and a WaitGroup this
// host measured 48 us for 20 us of work and 315 us for 200 us).
func BenchmarkParallel(b *testing.B) {
	c := &CPU{threads: 2, team: newTeam(1)}
	spin := func(d time.Duration) {
		for t := time.Now(); time.Since(t) < d; {
		}
	}
	for _, work := range []time.Duration{0, 20 * time.Microsecond, 200 * time.Microsecond} {
		b.Run(work.String(), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				c.parallel(2, 1, func(_, lo, hi int) { spin(work) })
			}
		})
	}
}
