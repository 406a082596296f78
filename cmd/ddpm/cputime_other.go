//go:build !unix

package main

import "time"

// processCPUTime reports no CPU time on platforms without getrusage.
func processCPUTime() (time.Duration, bool) { return 0, false }
