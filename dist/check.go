package dist

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strings"
)

// maxShown is how many bytes of rank 0's data CheckSame sends for its
// message when ranks disagree.
const maxShown = 4096

// CheckSame verifies that every rank passes the same data (for example its
// parsed flags or config, serialised the same way on every rank). It is a
// collective: every rank calls it with the same what.
//
// Rank 0's length and SHA-256 are broadcast; each rank compares its own,
// and an all-reduce tells every rank which ranks differ, so that all of
// them return an error wrapping ErrMismatch (none goes on to wait in a
// collective that the others never reach). The message names what and the
// ranks; a rank that differs also shows its bytes and rank 0's around the
// first difference. Communication failures are returned as such.
func CheckSame(c Comm, what string, data []byte) error {
	size, rank := c.Size(), c.Rank()
	if size == 1 {
		return nil
	}
	var hdr [8 + sha256.Size]byte
	mine := digest(data)
	if rank == 0 {
		hdr = mine
	}
	if err := c.Broadcast(hdr[:], 0); err != nil {
		return fmt.Errorf("dist: check %s: %w", what, err)
	}
	differs := hdr != mine
	flags := make([]float32, size) // (size): 1 where a rank differs
	if differs {
		flags[rank] = 1
	}
	if err := c.AllReduceSum(flags); err != nil {
		return fmt.Errorf("dist: check %s: %w", what, err)
	}
	var bad []int
	for r, f := range flags {
		if f != 0 {
			bad = append(bad, r)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	// Rank 0's bytes (a prefix) for the messages.
	n0 := binary.LittleEndian.Uint64(hdr[:8])
	ref := make([]byte, min(n0, maxShown))
	if rank == 0 {
		copy(ref, data)
	}
	if err := c.Broadcast(ref, 0); err != nil {
		return fmt.Errorf("dist: check %s: ranks %v differ from rank 0, and sending rank 0's for the message failed: %w", what, bad, err)
	}
	if !differs {
		return fmt.Errorf("%w on %s: rank(s) %v of %d differ from rank 0, which has %s",
			ErrMismatch, what, bad, size, excerpt(ref, 0, n0))
	}
	at := firstDiff(data, ref)
	return fmt.Errorf("%w on %s: rank %d has %s, rank 0 has %s (rank(s) %v of %d differ from rank 0)",
		ErrMismatch, what, rank, excerpt(data, at, uint64(len(data))), excerpt(ref, at, n0), bad, size)
}

// digest is the little-endian length of data followed by its SHA-256.
func digest(data []byte) (d [8 + sha256.Size]byte) {
	binary.LittleEndian.PutUint64(d[:8], uint64(len(data)))
	h := sha256.Sum256(data)
	copy(d[8:], h[:])
	return d
}

// firstDiff is the index of the first byte where a and b differ (the
// shorter length when one is a prefix of the other).
func firstDiff(a, b []byte) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// excerpt quotes up to 120 bytes of b around offset at; total is the full
// length of the data b is (a prefix of), for the "..." markers.
func excerpt(b []byte, at int, total uint64) string {
	const before, width = 40, 120
	lo := max(0, min(at-before, len(b)-width))
	hi := min(len(b), lo+width)
	var s strings.Builder
	if lo > 0 {
		s.WriteString("...")
	}
	fmt.Fprintf(&s, "%q", b[lo:hi])
	if uint64(hi) < total {
		s.WriteString("...")
	}
	fmt.Fprintf(&s, " (%d bytes)", total)
	return s.String()
}
