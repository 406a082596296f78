package dist_test

import (
	"fmt"
	"log"
	"time"

	"github.com/ddpm-go/ddpm/dist"
)

// A data-parallel training step: the same flags on every rank, gradients
// summed over the ranks and divided by their number. Run as a plain
// process it is a world of one; under `mpirun -np N` every rank runs it.
func ExampleFromEnv() {
	comm, launch, err := dist.FromEnv(dist.Options{Timeout: 10 * time.Minute})
	if err != nil {
		log.Fatal(err) // e.g. launched by mpirun but no libmpi: never a silent single process
	}
	defer comm.Close()
	if err := dist.CheckSame(comm, "flags", []byte("--lr=2e-4 --batch=128")); err != nil {
		log.Fatal(err)
	}
	grads := []float32{0.5, -1, 2} // this rank's gradients
	if err := comm.AllReduceSum(grads); err != nil {
		log.Print(err)
		comm.Abort(1)
	}
	for i := range grads {
		grads[i] /= float32(comm.Size())
	}
	fmt.Println(launch, grads)
	// Output: single process (no MPI launcher) [0.5 -1 2]
}
