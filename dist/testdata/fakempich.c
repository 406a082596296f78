/*
 * A stand-in for an MPICH libmpi: it exports MPI_Init_thread and
 * MPI_Get_library_version the way MPICH does, but none of Open MPI's
 * handle globals (ompi_mpi_comm_world, ...), so package dist must refuse
 * it with ErrNotOpenMPI. Written for dist's tests; built with clang-16 or cc.
 */
#include <string.h>

int MPI_Get_library_version(char *version, int *resultlen) {
	const char *v = "MPICH Version:\t4.0.2\nMPICH Release date:\tThu Apr  7 12:34:45 CDT 2022\n";
	strcpy(version, v);
	*resultlen = (int)strlen(v);
	return 0;
}

int MPI_Init_thread(int *argc, char ***argv, int required, int *provided) {
	(void)argc; (void)argv;
	*provided = required;
	return 0;
}
