package dist

import (
	"errors"
	"fmt"
)

// Sentinel errors; test with errors.Is. The wrapping errors name the
// library paths tried, the launcher seen in the environment, or the
// operation that failed.
var (
	// ErrNoMPI: the process was launched by an MPI launcher (mpirun set
	// OMPI_COMM_WORLD_SIZE > 1 or PMIX_RANK) but no libmpi could be opened.
	// It is never replaced by a silent single-process run.
	ErrNoMPI = errors.New("dist: no MPI library")
	// ErrNotOpenMPI: the MPI library or launcher is not Open MPI (for
	// example MPICH, whose handles are integers, not addresses of globals).
	ErrNotOpenMPI = errors.New("dist: not Open MPI")
	// ErrClosed: a collective was called after Close.
	ErrClosed = errors.New("dist: communicator closed")
	// ErrNoNCCL: no libnccl.so.2 could be opened, or it lacks a symbol.
	ErrNoNCCL = errors.New("dist: no NCCL library")
	// ErrMismatch: CheckSame found ranks whose data differ from rank 0's.
	ErrMismatch = errors.New("dist: ranks disagree")
)

// MPIError is a non-zero MPI return code with the library's description
// (MPI_Error_string).
type MPIError struct {
	Op   string // the MPI function, e.g. "MPI_Allreduce"
	Code int    // the MPI error code (MPI_SUCCESS is 0)
	Text string // MPI_Error_string's text, "" if unavailable
}

// Error names the function, the code and the library's text.
func (e *MPIError) Error() string {
	if e.Text != "" {
		return fmt.Sprintf("dist: %s: MPI error %d: %s", e.Op, e.Code, e.Text)
	}
	return fmt.Sprintf("dist: %s: MPI error %d", e.Op, e.Code)
}

// NCCLError is a non-zero ncclResult_t with ncclGetErrorString's text.
type NCCLError struct {
	Op   string // the NCCL function, e.g. "ncclAllReduce"
	Code int    // the ncclResult_t (ncclSuccess is 0)
	Text string // ncclGetErrorString's text, "" if unavailable
}

// ncclResultNames follows nccl.h's ncclResult_t.
var ncclResultNames = map[int]string{
	1: "ncclUnhandledCudaError",
	2: "ncclSystemError",
	3: "ncclInternalError",
	4: "ncclInvalidArgument",
	5: "ncclInvalidUsage",
	6: "ncclRemoteError",
	7: "ncclInProgress",
}

// Error names the function, the result code and NCCL's text.
func (e *NCCLError) Error() string {
	name := ncclResultNames[e.Code]
	if name == "" {
		name = fmt.Sprintf("ncclResult %d", e.Code)
	} else {
		name = fmt.Sprintf("%s (%d)", name, e.Code)
	}
	if e.Text != "" {
		return fmt.Sprintf("dist: %s: %s: %s", e.Op, name, e.Text)
	}
	return fmt.Sprintf("dist: %s: %s", e.Op, name)
}
