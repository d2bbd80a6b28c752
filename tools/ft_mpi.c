/* ft-mpi - the command line over MPI: data-parallel training on several processes and hosts.

      make mpi                                   # build/ft-mpi, with mpicc (Debian: openmpi-bin libopenmpi-dev)
      mpirun -np 2 build/ft-mpi train -m MODEL --data train.jsonl --out runs/x [--zero1] ...

   Every rank runs `ft train` with the same options on the same model and data; the library's
   training loop (ft_train_opts.comm) does the rest: one global data order, micro-batch k of a step
   on rank k % N, gradients summed with MPI_Allreduce (ZeRO-1: MPI_Reduce_scatter, then the
   parameters with MPI_Allgatherv), rank 0 writing the run directory. The global batch is
   --batch x --grad-accum x N. This file is tools/ft.c (the whole command line, its main renamed)
   plus the four collectives over MPI_COMM_WORLD and a main that starts MPI.

   A rank per GPU: build/ft-mpi-cuda (make mpi-cuda) with --device cuda; each rank takes a GPU of
   its host in turn (its rank among the host's ranks, from MPI_Comm_split_type, modulo the GPUs),
   and its gradients are summed through its host block.

   Failure: a rank whose command fails calls MPI_Abort, which ends every rank (no rank waits forever
   in a collective for one that has gone); mpirun ends the job when a rank dies. The run resumes
   from its last checkpoint with --resume, on the same or another number of ranks. */
#define _POSIX_C_SOURCE 200809L          /* as tools/ft.c: getline, fork, waitpid, readlink */
#include <mpi.h>
#define FT_CLI_MAIN ft_cli_main
#include "ft.c"

/* an MPI error as a finetune.h result */
static ft_result ftm_check(int rc, const char *what) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (rc == MPI_SUCCESS) return FT_OK;
    MPI_Error_string(rc, msg, &len);
    return ft_set_error(FT_ERR_IO, "MPI %s: %.*s", what, len, msg);
}

/* big buffers go in pieces of 16M values: MPI counts are ints, and an in-place reduction makes
   a temporary copy of what it is given (a whole gradient block would cost its size again) */
#ifndef FTM_CHUNK
#define FTM_CHUNK (1 << 24)
#endif

static ft_result ftm_all_reduce(void *user, void *x, int64_t n, ft_type type) {
    MPI_Datatype dt = type == FT_TYPE_F64 ? MPI_DOUBLE : MPI_FLOAT;
    size_t es = type == FT_TYPE_F64 ? sizeof(double) : sizeof(float);
    int64_t off;
    (void)user;
    for (off = 0; off < n; off += FTM_CHUNK) {
        int cnt = (int)(n - off < FTM_CHUNK ? n - off : FTM_CHUNK);
        int rc = MPI_Allreduce(MPI_IN_PLACE, (char *)x + (size_t)off * es, cnt, dt, MPI_SUM, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return ftm_check(rc, "all-reduce");
    }
    return FT_OK;
}

/* the piece [c0, c1) of n floats as MPI's counts and displacements (from c0): each rank's part of
   its shard that falls in the piece; returns this rank's rank */
static int ftm_piece(int64_t n, int64_t c0, int64_t c1, int *counts, int *displs) {
    int size, rank, r;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    for (r = 0; r < size; r++) {
        int64_t lo, hi;
        ft_shard_range(n, r, size, &lo, &hi);
        lo = lo > c0 ? lo : c0;
        hi = hi < c1 ? hi : c1;
        counts[r] = hi > lo ? (int)(hi - lo) : 0;
        displs[r] = hi > lo ? (int)(lo - c0) : 0;
    }
    return rank;
}

/* over ft_shard_range's shards of x[0..n), piece by piece: the sum of every rank's x, this rank's
   shard of it in place (reduce-scatter), or every rank's shard to every rank (all-gather) */
static ft_result ftm_shards(float *x, int64_t n, int gather) {
    int size, rc = MPI_SUCCESS, *counts, *displs, me;
    int64_t c0;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (!(counts = (int *)malloc((size_t)size * 2 * sizeof(int)))) return ft_set_error(FT_ERR_NOMEM, "MPI: out of memory");
    displs = counts + size;
    for (c0 = 0; c0 < n && rc == MPI_SUCCESS; c0 += FTM_CHUNK) {
        int64_t c1 = n - c0 < FTM_CHUNK ? n : c0 + FTM_CHUNK;
        me = ftm_piece(n, c0, c1, counts, displs);
        if (gather) {
            rc = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, x + c0, counts, displs, MPI_FLOAT, MPI_COMM_WORLD);
            continue;
        }
        rc = MPI_Reduce_scatter(MPI_IN_PLACE, x + c0, counts, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        if (rc == MPI_SUCCESS && counts[me]) memmove(x + c0 + displs[me], x + c0, (size_t)counts[me] * sizeof(float));   /* in place: at the start */
    }
    free(counts);
    return ftm_check(rc, gather ? "all-gather" : "reduce-scatter");
}
static ft_result ftm_reduce_scatter(void *user, float *x, int64_t n) { (void)user; return ftm_shards(x, n, 0); }
static ft_result ftm_all_gather(void *user, float *x, int64_t n) { (void)user; return ftm_shards(x, n, 1); }

static ft_result ftm_broadcast(void *user, void *x, int64_t bytes, int root) {
    int64_t off;
    (void)user;
    for (off = 0; off < bytes; off += 4 * (int64_t)FTM_CHUNK) {
        int cnt = (int)(bytes - off < 4 * (int64_t)FTM_CHUNK ? bytes - off : 4 * (int64_t)FTM_CHUNK);
        int rc = MPI_Bcast((char *)x + off, cnt, MPI_BYTE, root, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return ftm_check(rc, "broadcast");
    }
    return FT_OK;
}

int main(int argc, char **argv) {
    ft_collective cc;
    int rc;
    memset(&cc, 0, sizeof cc);
    MPI_Init(&argc, &argv);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &cc.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &cc.size);
    cc.all_reduce = ftm_all_reduce;
    cc.reduce_scatter = ftm_reduce_scatter;
    cc.all_gather = ftm_all_gather;
    cc.broadcast = ftm_broadcast;
    if (cc.size > 1 && (argc < 2 || strcmp(argv[1], "train") != 0)) {
        if (cc.rank == 0) fprintf(stderr, "ft-mpi: only `train` runs on several ranks (this is %d); run the others with build/ft\n", cc.size);
        MPI_Finalize();
        return 2;
    }
    ft_comm = cc.size > 1 ? &cc : NULL;
    {                                       /* this rank's place among those on its host: its GPU */
        MPI_Comm host;
        if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, cc.rank, MPI_INFO_NULL, &host) == MPI_SUCCESS) {
            MPI_Comm_rank(host, &ft_local_rank);
            MPI_Comm_free(&host);
        }
    }
    rc = ft_cli_main(argc, argv);
    if (rc != 0 && cc.size > 1) {
        fprintf(stderr, "ft-mpi: rank %d of %d stopped (exit status %d): ending every rank\n", cc.rank, cc.size, rc);
        MPI_Abort(MPI_COMM_WORLD, rc);
    }
    MPI_Finalize();
    return rc;
}
