/*
 * A stand-in for libnccl.so.2 with NCCL's C signatures (nccl.h), for
 * package dist's tests on machines without a GPU: it checks that the
 * purego bindings pass every argument where C expects it (the 128-byte
 * ncclUniqueId by value, the seventh argument of ncclAllReduce on the
 * stack) and records what it received for fake_last_* to report.
 * "Device" pointers are host memory here; ncclAllReduce multiplies the
 * buffer by nranks, the sum over nranks ranks holding the same values.
 * Written for these tests; built by dist's tests with clang-16 or cc.
 */
#include <stddef.h>
#include <string.h>

typedef struct { char internal[128]; } ncclUniqueId;
struct fakeComm { int nranks, rank, destroyed; ncclUniqueId id; };
typedef struct fakeComm *ncclComm_t;

static struct fakeComm comms[16];
static int ncomms;
static ncclUniqueId last_id;
static int last_nranks = -1, last_rank = -1;
static size_t last_count;
static int last_type = -1, last_op = -1;
static const void *last_send;
static void *last_recv, *last_stream;
static ncclComm_t last_comm;

int ncclGetVersion(int *version) { *version = 22703; return 0; }

int ncclGetUniqueId(ncclUniqueId *id) {
	for (int i = 0; i < 128; i++) id->internal[i] = (char)(i * 7 + 3);
	return 0;
}

int ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
	last_id = id;
	last_nranks = nranks;
	last_rank = rank;
	if (nranks < 1 || rank < 0 || rank >= nranks || ncomms == 16) return 4; /* ncclInvalidArgument */
	struct fakeComm *c = &comms[ncomms++];
	c->nranks = nranks;
	c->rank = rank;
	c->id = id;
	*comm = c;
	return 0;
}

int ncclAllReduce(const void *send, void *recv, size_t count, int datatype, int op, ncclComm_t comm, void *stream) {
	last_send = send;
	last_recv = recv;
	last_count = count;
	last_type = datatype;
	last_op = op;
	last_comm = comm;
	last_stream = stream;
	if (comm == NULL || comm->destroyed) return 5; /* ncclInvalidUsage */
	if (datatype != 7 || op != 0) return 4;
	const float *s = send;
	float *r = recv;
	for (size_t i = 0; i < count; i++) r[i] = s[i] * (float)comm->nranks;
	return 0;
}

int ncclCommDestroy(ncclComm_t comm) {
	if (comm == NULL || comm->destroyed) return 5;
	comm->destroyed = 1;
	return 0;
}

int ncclCommAbort(ncclComm_t comm) { return ncclCommDestroy(comm); }

const char *ncclGetErrorString(int result) {
	switch (result) {
	case 0: return "no error";
	case 4: return "invalid argument (fake)";
	case 5: return "invalid usage (fake)";
	default: return "unknown result (fake)";
	}
}

const char *ncclGetLastError(ncclComm_t comm) { (void)comm; return "fake detail"; }

/* Probes for the tests. */
void fake_last_init(ncclUniqueId *id, int *nranks, int *rank) {
	*id = last_id;
	*nranks = last_nranks;
	*rank = last_rank;
}

void fake_last_allreduce(const void **send, void **recv, size_t *count, int *type, int *op, void **stream) {
	*send = last_send;
	*recv = last_recv;
	*count = last_count;
	*type = last_type;
	*op = last_op;
	*stream = last_stream;
}
