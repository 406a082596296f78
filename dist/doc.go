// Package dist is the collective communication of data-parallel training:
// every rank runs the same program on its share of each batch, and the
// ranks sum their gradients with AllReduceSum before the optimiser step.
// The collectives come from real engines, loaded at run time with
// github.com/ebitengine/purego (no cgo, no headers at build time): Open
// MPI's libmpi.so.40 between processes, and NCCL's libnccl.so.2 between
// GPUs.
//
// # Launch
//
// FromEnv reads the environment that the launcher sets:
//
//   - a plain process, or `mpirun -np 1`: Single{}, a world of one whose
//     collectives are the identity, so training is exactly what it is
//     without this package (MPI is not loaded);
//   - `mpirun -np N` (Open MPI sets OMPI_COMM_WORLD_SIZE and _RANK, and
//     PMIX_RANK): an *MPI over MPI_COMM_WORLD. If libmpi cannot be opened
//     the error wraps ErrNoMPI: a launched job never silently trains N
//     independent models;
//   - MPICH's mpiexec (PMI_RANK, PMI_SIZE): ErrNotOpenMPI.
//
// Launch.LocalRank is the rank's index on its node, for choosing a GPU.
//
// # Open MPI's ABI only
//
// The binding targets Open MPI (3.x to 5.x, libmpi.so.40): its handles
// MPI_COMM_WORLD, MPI_FLOAT, MPI_BYTE, MPI_SUM and MPI_ERRORS_RETURN are
// addresses of the exported globals ompi_mpi_comm_world, ompi_mpi_float,
// ompi_mpi_byte, ompi_mpi_op_sum and ompi_mpi_errors_return, resolved with
// dlsym, and MPI_IN_PLACE is (void *)1. MPICH and its derivatives (Intel
// MPI, MVAPICH, Cray MPICH) use integer handles instead; a library without
// Open MPI's globals, or whose MPI_Get_library_version is not "Open MPI",
// is refused with ErrNotOpenMPI rather than called with the wrong ABI.
// libmpi is searched as $DDPM_LIBMPI (alone, when set), libmpi.so.40
// through dlopen's own search, $OPAL_PREFIX/lib, $MPI_HOME/lib and the
// distributions' directories.
//
// MPI is initialised with MPI_THREAD_MULTIPLE (Debian's Open MPI provides
// it; MPI_THREAD_SERIALIZED is the least accepted), because goroutines
// move between OS threads and Abort and the watchdog call MPI_Abort while
// a collective may block another goroutine. Collectives are serialised by
// a mutex. MPI_ERRORS_RETURN is set on MPI_COMM_WORLD, so MPI failures come
// back as *MPIError (with MPI_Error_string's text) wrapped with the rank
// and the operation. Open MPI leaves Go's signal handlers alone (a nil
// dereference still panics and recovers after MPI_Init; the tests check).
//
// AllReduceSum works in place on the caller's slice (no copy), so the
// trainer can sum gradient buckets as sub-slices of one buffer; it passes
// at most Options.Chunk values (default 1Mi) to each MPI_Allreduce, which
// took 52-72 ms for 35.7M values on 2 ranks here against 4.8 s in one
// call (see Options.Chunk).
//
// # Failures
//
// Measured with Open MPI 4.1.4 (Debian 12), 2 and 3 ranks on one node:
//
//   - a rank killed with SIGKILL while the others are inside
//     MPI_Allreduce: mpirun kills the other ranks (SIGTERM, then SIGKILL),
//     prints "mpirun noticed that process rank 1 with PID ... exited on
//     signal 9 (Killed)" and exits with 137, about 1 s after the kill
//     (TestMPIKilledRankEndsTheJob bounds it at 20 s);
//   - a rank that exits with a non-zero status: the same, status 1;
//   - a rank that exits with status 0 without Close (MPI_Finalize):
//     mpirun reports that it exited "improperly", kills the others and
//     exits with 1;
//   - mpirun itself killed with SIGKILL: the ranks lose their daemon and
//     exit within seconds;
//   - a rank that stays alive but never joins a collective (a deadlock, a
//     hung device, collectives called in a different order): the others
//     wait forever, busy-polling. Options.Timeout is the watchdog for this
//     case: a collective still blocked after Timeout prints
//     "dist: rank R of N: MPI_Allreduce of K values did not complete
//     within T ..." and calls MPI_Abort, which ends every rank; mpirun
//     exits with ExitTimeout (124) (TestMPIWatchdogAbortsAHungJob).
//
// CheckSame makes every rank fail, naming what differs, when the ranks
// were started with different flags, instead of letting them train
// different models or hang in mismatched collectives.
//
// # NCCL
//
// OpenNCCL opens libnccl.so.2 ($DDPM_LIBNCCL alone when set; else the
// soname, $NCCL_HOME, $CUDA_HOME, the CUDA toolkit, the distributions'
// directories and the nvidia-nccl pip wheels of a PyTorch install);
// without it the error wraps ErrNoNCCL and names every path tried.
// NCCL.NewComm exchanges rank 0's ncclGetUniqueId over a Comm (MPI) with
// ExchangeID and calls ncclCommInitRank on every rank; NCCLComm.AllReduceSum
// queues an in-place float32 sum of a device buffer on a CUDA stream (both
// passed as uintptr: a CUdeviceptr and a CUstream from package cuda). NCCL
// uses the CUDA device current on the calling OS thread. No test makes a
// GPU call: testdata/fakenccl.c stands in for libnccl and checks that each
// argument reaches C where nccl.h puts it (the 128-byte ncclUniqueId by
// value, the stream on the stack).
//
// # Tests and benchmark
//
// The MPI tests run the test binary itself under a real
// `mpirun --allow-run-as-root --oversubscribe -np N` (each rank runs
// TestMPIWorker with DDPM_DIST_WORKER naming its body), bounded in time,
// and skip, saying why, where mpirun is not installed (Debian:
// openmpi-bin) or with -short. The fake libraries need a C compiler
// (clang-16 or cc); without one those tests skip. The all-reduce
// benchmark needs mpirun and a fixed iteration count:
//
//	go test -c -o /tmp/dist.test ./dist
//	mpirun --allow-run-as-root -np 2 /tmp/dist.test -test.run '^$' \
//	    -test.bench MPIAllReduceSum -test.benchtime 10x
package dist
